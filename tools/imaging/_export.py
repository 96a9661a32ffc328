"""segment_file: a study file in, a label map on the input grid out (the `cardiomics segment` command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from cardiomics.errors import InputError
from cardiomics.hashing import sha256_file

from .._registry import ToolContext, tool
from ..contract import ModelRef, ToolOutput
from ._labels import LABELS


class SegmentFileInput(BaseModel):
    path: str = Field(description="NIfTI volume (ACDC layout: one frame, or 4D) or a DICOM series folder.")
    out_path: str = Field(description="Where to write the label map; must end in .nii or .nii.gz.")
    frame: int | None = Field(None, ge=0, description="Only this frame (default: every frame; a 4D file when there are several).")
    overwrite: bool = Field(False, description="Replace out_path if it exists.")


class SegmentFileResult(ToolOutput):
    out_sha256: str = Field(description="SHA-256 of the written label map.")
    shape: list[int] = Field(description="(x, y, z[, t]) shape of the written NIfTI, as the input grid.")
    zooms_mm: list[float]
    labels: dict[str, str]
    voxels_per_structure: dict[str, int]


def _example(ctx: ToolContext) -> dict:
    from ._sample import ensure_sample

    src = ensure_sample(ctx.store.root / "sample", n_frames=12, n_slices=8, size=128)
    return {"path": str(src), "out_path": str(ctx.store.root / "exports" / "labels.nii.gz"), "frame": 0, "overwrite": True}


@tool(role="processing", read_only=False, idempotent=True, example=_example, private=("path", "out_path"))
def segment_file(inp: SegmentFileInput, ctx: ToolContext) -> SegmentFileResult:
    """Segment a CMR file and write the label map (ACDC values: 1 RV, 2 myocardium, 3 LV) as NIfTI on the input grid.

    Use to export a segmentation for another program. The output has the input's affine and voxel
    sizes. Writes only `out_path`; never touches the input. Within an analysis, prefer
    `load_study` + `segment`, which keep results in the audited store.
    """
    import nibabel as nib

    from cardiomics.models.segmenter import load_segmenter

    from ._io import read_study
    from ._nifti import write_labels_nifti

    out = Path(inp.out_path)
    if not (out.name.endswith(".nii.gz") or out.name.endswith(".nii")):
        raise InputError("bad-output", f"{out} is not a .nii or .nii.gz path", hint="name the output LABELS.nii.gz")
    if out.exists() and not inp.overwrite:
        raise InputError("output-exists", f"{out} exists", hint="choose another path or pass overwrite")
    if out.resolve() == Path(inp.path).resolve():
        raise InputError("output-is-input", "the output path is the input file", hint="write the labels elsewhere")
    stack = read_study(inp.path, ctx.store.salt)
    t, s, r, c = stack.images.shape
    frames = list(range(t)) if inp.frame is None else [inp.frame]
    if frames[-1] >= t:
        raise InputError("bad-frame", f"frame {inp.frame} does not exist; the study has {t} frames", hint=f"use 0..{t - 1}")
    net = load_segmenter()
    ctx.used_model(ModelRef(**net.ref))
    images = stack.images[frames].reshape(len(frames) * s, r, c)
    labels, _ = net.predict(images, (stack.spacing_mm[1], stack.spacing_mm[2]), n_slices=s)
    labels = labels.reshape(len(frames), s, r, c).astype(np.uint8)
    write_labels_nifti(labels if len(frames) > 1 else labels[0], stack, out)
    written = nib.load(str(out))
    return SegmentFileResult(out_sha256=sha256_file(out), shape=list(written.shape),
                             zooms_mm=[round(float(z), 5) for z in written.header.get_zooms()[:3]],
                             labels={str(k): v for k, v in LABELS.items()},
                             voxels_per_structure={LABELS[v]: int((labels == v).sum()) for v in (1, 2, 3)})
