"""report_figures: the segmentation overlay and the volume-time curve a cardiologist expects."""

from __future__ import annotations

import base64
import io

import numpy as np
from pydantic import BaseModel, Field

from .._registry import ToolContext, tool
from ..contract import ToolOutput
from ..imaging._labels import LV, MYO, RV
from ..imaging._load import load_stack
from ._model import Figure

_COLOURS = {RV: "#1f77b4", MYO: "#2ca02c", LV: "#d62728"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


class ReportFiguresInput(BaseModel):
    study_id: str = Field(pattern=r"^study-[0-9a-f]{16,64}$")
    segmentation_id: str = Field(pattern=r"^seg-[0-9a-f]{16,64}$")


class ReportFigures(ToolOutput):
    figures: list[Figure]


def _overlay(images: np.ndarray, labels: np.ndarray, ed: int, es: int, plt) -> object:
    s_mid = images.shape[1] // 2
    slices = sorted({max(0, s_mid - images.shape[1] // 3), s_mid, min(images.shape[1] - 1, s_mid + images.shape[1] // 3)})
    fig, axes = plt.subplots(2, len(slices), figsize=(3 * len(slices), 6))
    axes = np.atleast_2d(axes)
    for row, (frame, name) in enumerate(((ed, "ED"), (es, "ES"))):
        for col, s in enumerate(slices):
            ax = axes[row, col]
            img = images[frame, s]
            lo, hi = np.percentile(img, (1, 99.5))
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            for value, colour in _COLOURS.items():
                mask = labels[frame, s] == value
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=colour, linewidths=1.0)
            ax.set_title(f"{name} (frame {frame}), slice {s}", fontsize=9)
            ax.axis("off")
    fig.suptitle("Segmentation: RV blue, myocardium green, LV red", fontsize=10)
    return fig


def _curve(lv: np.ndarray, rv: np.ndarray, ed: int, es: int, plt) -> object:
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    frames = np.arange(lv.size)
    ax.plot(frames, lv, "-o", ms=3, color=_COLOURS[LV], label="LV cavity")
    ax.plot(frames, rv, "-o", ms=3, color=_COLOURS[RV], label="RV cavity")
    ax.axvline(ed, ls="--", color="grey")
    ax.axvline(es, ls=":", color="grey")
    ax.text(ed, ax.get_ylim()[1], " ED", va="top", fontsize=8)
    ax.text(es, ax.get_ylim()[1], " ES", va="top", fontsize=8)
    ax.set_xlabel("frame")
    ax.set_ylabel("volume (ml)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("Volume-time curve", fontsize=10)
    return fig


def _example(ctx: ToolContext) -> dict:
    from .. import call_tool
    from ..imaging._segment import _example as seg_example

    args = seg_example(ctx)
    seg = call_tool("segment", args, ctx)
    return {"study_id": args["study_id"], "segmentation_id": seg.segmentation_id}


@tool(role="explanation", example=_example)
def report_figures(inp: ReportFiguresInput, ctx: ToolContext) -> ReportFigures:
    """Figures for the report: segmentation overlay at ED and ES (basal, mid, apical) and the LV/RV volume-time curve.

    Use after `segment`, with the same study. Returns PNG images (base64) with ids.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stack = load_stack(ctx.store, inp.study_id)
    seg_meta = ctx.store.meta(inp.segmentation_id)
    if seg_meta["study_id"] != inp.study_id:
        from cardiomics.errors import InputError

        raise InputError("mismatched-ids", f"segmentation {inp.segmentation_id} belongs to {seg_meta['study_id']}, not {inp.study_id}",
                         hint="pass the study the segmentation was made from")
    labels = ctx.store.arrays(inp.segmentation_id)["labels"]
    ctx.used_input("study", ctx.store.digest(inp.study_id))
    ctx.used_input("segmentation", ctx.store.digest(inp.segmentation_id))
    voxel_ml = float(np.prod(seg_meta["spacing_mm"])) / 1000.0
    lv = (labels == LV).sum(axis=(1, 2, 3)) * voxel_ml
    rv = (labels == RV).sum(axis=(1, 2, 3)) * voxel_ml
    ed, es = int(np.argmax(lv)), int(np.argmin(lv))
    figures = []
    for fid, title, fig in (("overlay", "Segmentation overlay", _overlay(stack.images, labels, ed, es, plt)),
                            ("volume-curve", "Volume-time curve", _curve(lv, rv, ed, es, plt))):
        data = _png(fig)
        plt.close(fig)
        figures.append(Figure(id=fid, title=title, png_base64=data, result_id=inp.segmentation_id))
    return ReportFigures(figures=figures)
