"""NIfTI cine stacks in the ACDC layout, and label maps written back on the input grid.

Axis convention (one, used both ways): a NIfTI array is indexed (i, j, k[, t]) = (x, y, z[, t]),
i fastest in the file. As in DICOM-to-NIfTI conversion, i runs along an image row (it is the
column index) and j runs down the image (the row index), k is the slice. So

    images[t, s, r, c] = data[c, r, s, t]      (read: data.transpose(3, 2, 1, 0))
    data[c, r, s]      = labels[s, r, c]       (write: labels.transpose(2, 1, 0))

and ``CineStack.affine`` (voxel (column, row, slice) -> mm) is the file's own affine, kept
unchanged so labels written back overlay the input exactly (its space is NIfTI RAS, marked
``meta['affine_space'] = 'RAS'``); ``orientation`` and ``origin_mm`` are converted to DICOM's LPS like
a DICOM-read stack's. Spacing comes from ``header.get_zooms()``, never from the affine:
ACDC headers keep the spacing in pixdim while the affine has unit scale (see the data README's
"Trap"); ``meta['affine_scale_mismatch']`` records when the two disagree.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import structlog
from nibabel.openers import ImageOpener

from cardiomics.atomicfile import replacing
from cardiomics.errors import InputError, StudyError
from cardiomics.hashing import sha256_file, sha256_text

from ._deid import quote_text, study_key
from ._stack import CineStack

log = structlog.get_logger(__name__)

_FRAME = re.compile(r"^(?P<stem>.+)_frame(?P<nn>\d+)\.nii(\.gz)?$")
_FOUR_D = re.compile(r"^(?P<stem>.+)_4d\.nii(\.gz)?$")
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _label_file(path: Path) -> bool:
    return bool(re.search(r"_gt\.nii(\.gz)?$", path.name))


def _raw_zooms(path: Path, img: nib.Nifti1Image) -> list[float]:
    """pixdim[1:4] as stored: nibabel's loader silently turns zero or negative voxel sizes into valid ones."""
    try:
        with ImageOpener(str(path)) as fh:
            raw = type(img.header).from_fileobj(fh, check=False)
        return [float(z) for z in raw["pixdim"][1:4]]
    except Exception:  # noqa: BLE001 - fall back to the checked header
        return [float(z) for z in img.header.get_zooms()[:3]]


def _load(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Header-checked image and its float32 data in (x, y, z, t) order."""
    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure means the file cannot be trusted
        raise StudyError("unreadable-file", f"cannot read {quote_text(path.name, 120)}: {quote_text(f'{type(exc).__name__}: {exc}', 200)}",
                         hint="the file may be truncated or not NIfTI; copy it again", files=[path.name]) from None
    shape = img.shape
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] < 1) or min(shape[:3]) < 1:
        raise StudyError("bad-header", f"{path.name} holds {len(shape)}-D data of shape {shape}; expected a 3D frame (x, y, z) or a 4D cine (x, y, z, t)",
                         hint="pass a cine short-axis NIfTI in the ACDC layout", files=[path.name])
    zooms = _raw_zooms(path, img)
    if not all(math.isfinite(z) and z > 0 for z in zooms):
        raise StudyError("bad-header", f"{path.name} has invalid voxel sizes (pixdim) {zooms}: they must be finite and positive",
                         hint="fix the header's pixdim or re-export the file", files=[path.name])
    if not np.all(np.isfinite(img.affine)):
        raise StudyError("bad-header", f"{path.name} has a non-finite affine", files=[path.name])
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"))
    except Exception as exc:  # noqa: BLE001
        raise StudyError("unreadable-file", f"cannot read the voxel data of {quote_text(path.name, 120)}: {quote_text(f'{type(exc).__name__}: {exc}', 200)}",
                         hint="the file may be truncated; copy it again", files=[path.name]) from None
    if data.ndim == 3:
        data = data[..., None]
    return img, data


def _stack(img: nib.Nifti1Image, data: np.ndarray, key: str, meta: dict[str, Any], dt_ms: float | None) -> CineStack:
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    images = np.ascontiguousarray(data.transpose(3, 2, 1, 0), dtype=np.float32)  # (x, y, z, t) -> (t, z, y, x)
    affine = np.asarray(img.affine, dtype=np.float64)
    lps = _LPS @ affine
    axes = lps[:3, :3]
    norms = np.linalg.norm(axes, axis=0)
    norms[norms == 0] = 1.0
    row_dir, col_dir = axes[:, 0] / norms[0], axes[:, 1] / norms[1]
    mismatch = bool(np.any(np.abs(norms - np.asarray(zooms)) > 1e-3 * np.maximum(zooms, 1.0)))
    if mismatch:
        log.info("nifti affine scale differs from pixdim; using pixdim", zooms=zooms, affine_scale=[round(float(n), 5) for n in norms])
    sform, qform = int(img.header["sform_code"]), int(img.header["qform_code"])
    meta = dict(meta, affine_space="RAS", affine_scale_mismatch=mismatch, nifti_sform_code=sform, nifti_qform_code=qform,
                nifti_zooms=[round(z, 6) for z in zooms])
    T = images.shape[0]
    times = np.arange(T, dtype=np.float64) * dt_ms if dt_ms else np.full(T, np.nan)
    return CineStack(
        images=images,
        spacing_mm=(zooms[2], zooms[1], zooms[0]),
        slice_thickness_mm=zooms[2],
        orientation=tuple(float(v) for v in (*row_dir, *col_dir)),
        origin_mm=tuple(float(v) for v in lps[:3, 3]),
        affine=affine,
        trigger_times_ms=times,
        source="nifti",
        study_key=key,
        meta=meta,
    )


def _frame_ms(img: nib.Nifti1Image) -> float | None:
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not (math.isfinite(float(zooms[3])) and float(zooms[3]) > 0):
        return None
    unit = img.header.get_xyzt_units()[1]
    scale = {"sec": 1000.0, "msec": 1.0, "usec": 0.001}.get(unit)
    return float(zooms[3]) * scale if scale else None


def _acdc_info(folder: Path) -> dict[str, Any]:
    """ED/ES frame numbers, height and weight from an ACDC ``Info.cfg`` (for BSA indexing); nothing else."""
    path = folder / "Info.cfg"
    if not path.is_file():
        return {}
    out: dict[str, Any] = {}
    wanted = {"ED": "ed_frame_number", "ES": "es_frame_number", "Height": "height_cm", "Weight": "weight_kg"}
    for line in path.read_text(errors="replace").splitlines()[:50]:
        if ":" not in line:
            continue
        k, v = (x.strip() for x in line.split(":", 1))
        for stem, name in wanted.items():
            if k.endswith(stem) or k == stem:
                try:
                    out[name] = float(v) if "cm" in name or "kg" in name else int(float(v))
                except ValueError:
                    pass
    return out


def read_nifti(path: str | Path, salt: bytes) -> CineStack:
    """Read an ACDC-layout NIfTI study: a 3D frame (T=1), a 4D cine, or a folder of ``*_frameNN.nii.gz``."""
    path = Path(path)
    if not path.exists():
        raise StudyError("not-found", f"{path} does not exist", hint="check the path")
    if path.is_file():
        img, data = _load(path)
        key = study_key("sha256:" + sha256_file(path), salt)
        stack = _stack(img, data, key, {"n_files": 1, "format": "nifti"}, _frame_ms(img) if data.shape[3] > 1 else None)
        log.info("nifti read", study_key=key, shape=list(stack.images.shape), spacing_mm=list(stack.spacing_mm))
        return stack

    niftis = sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith(".") and not _label_file(p))
    four_d = [p for p in niftis if _FOUR_D.match(p.name)]
    frames = [(p, _FRAME.match(p.name)) for p in niftis]
    frames = [(p, m) for p, m in frames if m]
    stems = {(_FOUR_D.match(p.name) or _FRAME.match(p.name)).group("stem") for p in four_d + [p for p, _ in frames]}
    others = [p.name for p in niftis if p not in four_d and p not in [f for f, _ in frames]]
    if not niftis:
        raise StudyError("no-nifti", f"no NIfTI files (.nii, .nii.gz) in {path}", hint="pass a NIfTI file or a folder of *_frameNN.nii.gz")
    if len(stems) > 1 or others or (not four_d and not frames):
        listed = sorted(others + [p.name for p in four_d] + [p.name for p, _ in frames])
        raise StudyError("mixed-series", f"{path.name} does not hold one study's frames: {', '.join(listed[:10])}"
                         + (f" and {len(listed) - 10} more" if len(listed) > 10 else ""),
                         hint="pass one NIfTI file, or a folder holding only one study's *_frameNN.nii.gz (or *_4d.nii.gz)",
                         files=listed)
    info = _acdc_info(path)
    if four_d:  # the ACDC patient folder: the full cine is preferred over its ED/ES frame files
        if len(four_d) > 1:
            raise StudyError("mixed-series", f"{path.name} holds several 4D files: {', '.join(p.name for p in four_d)}")
        stack = read_nifti(four_d[0], salt)
        stack.meta.update({"acdc_info": info} if info else {})
        return stack
    frames.sort(key=lambda pm: int(pm[1].group("nn")))
    numbers = [int(m.group("nn")) for _, m in frames]
    if len(set(numbers)) != len(numbers):
        raise StudyError("incomplete-series", f"{path.name} has duplicated frame numbers: {numbers}")
    first_img, volumes = None, []
    for p, _ in frames:
        img, data = _load(p)
        if data.shape[3] != 1:
            raise StudyError("bad-header", f"{p.name} is 4D ({data.shape}); per-frame files must be 3D", files=[p.name])
        if first_img is None:
            first_img = img
        elif img.shape[:3] != first_img.shape[:3] or not np.allclose(img.header.get_zooms()[:3], first_img.header.get_zooms()[:3], rtol=1e-4) \
                or not np.allclose(img.affine, first_img.affine, atol=1e-3):
            raise StudyError("inconsistent-geometry", f"{p.name} does not share the grid of {frames[0][0].name} "
                             f"(shape {img.shape} vs {first_img.shape}, zooms {tuple(round(float(z), 4) for z in img.header.get_zooms()[:3])} "
                             f"vs {tuple(round(float(z), 4) for z in first_img.header.get_zooms()[:3])})",
                             hint="all frames of a study must share one grid", files=[p.name])
        volumes.append(data)
    key = study_key("sha256:" + sha256_text("\n".join(sha256_file(p) for p, _ in frames)), salt)
    meta: dict[str, Any] = {"n_files": len(frames), "format": "nifti", "frame_numbers": numbers}
    if info:
        meta["acdc_info"] = info
    stack = _stack(first_img, np.concatenate(volumes, axis=3), key, meta, None)
    log.info("nifti frames read", study_key=key, shape=list(stack.images.shape), frames=numbers)
    return stack


def write_labels_nifti(labels: np.ndarray, like: CineStack, out_path: str | Path) -> Path:
    """Write a (S, R, C) uint8 label map, or (T, S, R, C) frames of one, on ``like``'s grid: same
    affine, same zooms, inverse axis order (frames along the 4th axis).

    For a NIfTI-sourced stack the file's own affine and sform/qform codes are reused; for a
    DICOM-sourced stack the LPS affine is converted to NIfTI RAS. The file appears whole or not at
    all (an existing one is replaced only once the new one is complete).
    """
    lab = np.asarray(labels)
    grid = tuple(like.images.shape[1:])
    if lab.shape[-3:] != grid or lab.ndim not in (3, 4):
        raise InputError("shape-mismatch", f"labels of shape {lab.shape} do not match the stack grid {grid} (slices, rows, columns)")
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise InputError("bad-labels", "label values must lie in 0..255")
    affine = np.asarray(like.affine, dtype=np.float64)
    if like.meta.get("affine_space", "RAS" if like.source == "nifti" else "LPS") == "LPS":
        affine = _LPS @ affine
    data = np.ascontiguousarray(lab.astype(np.uint8).T)  # ([t,] s, r, c) -> (x=c, y=r, z=s[, t])
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    sform = int(like.meta.get("nifti_sform_code", 2))
    qform = int(like.meta.get("nifti_qform_code", 0 if like.source == "nifti" else 1))
    hdr.set_sform(affine, code=sform)
    hdr.set_qform(affine if qform > 0 else None, code=qform)
    s_mm, r_mm, c_mm = like.spacing_mm
    hdr.set_zooms((float(c_mm), float(r_mm), float(s_mm)) + ((1.0,) if lab.ndim == 4 else ()))
    hdr.set_data_dtype(np.uint8)
    hdr.set_xyzt_units("mm", "sec")
    out = Path(out_path)
    with replacing(out) as tmp:
        nib.save(img, str(tmp))
    return out
