"""``latent_figure``: the patient on the reference cohort's 2D latent map, with its nearest neighbours."""

from __future__ import annotations

import base64
import io

import numpy as np
from pydantic import BaseModel, Field

from .._registry import ToolContext, tool
from ..contract import ResultId, ToolOutput
from ._patient import example_projection, load_projection, model_ref, reference


class LatentFigureInput(BaseModel):
    projection_id: ResultId = Field(description="Id returned by `fusion_project`.")
    k: int = Field(5, ge=1, le=20, description="Neighbours to highlight.")
    colour_by: str = Field("lge_burden_pct", description="Reference phenotype colouring the cohort (e.g. lv_ef_pct, lge_burden_pct).")


class LatentFigureData(BaseModel):
    id: str
    title: str
    png_base64: str = Field(repr=False)
    result_id: str


class LatentFigure(ToolOutput):
    figure: LatentFigureData = Field(description="Figure-like dict {id, title, png_base64, result_id} for the report.")
    axes: str = Field(description="How the 2D map was made.")
    neighbour_ids: list[str]


def _example(ctx: ToolContext) -> dict:
    return {"projection_id": example_projection(ctx), "k": 5}


@tool(role="analysis", example=_example)
def latent_figure(inp: LatentFigureInput, ctx: ToolContext) -> LatentFigure:
    """A PNG of the reference cohort's latent space (first two principal axes) with the patient and its neighbours.

    Use after fusion_project, for the report. The cohort is coloured by a phenotype; the patient is a
    star, its k nearest neighbours (in the full latent space) are ringed. Returns a Figure-like dict.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cardiomics.models.fusion import cohort_index
    from cardiomics.models.fusion.features import IMAGING_FEATURES

    ref = reference()
    ctx.used_model(model_ref(ref))
    arrays, _ = load_projection(ctx, inp.projection_id)
    hits = cohort_index(ref).query(arrays["mean"], inp.k)
    emb = ref.embedding
    centre = emb.mean(0)
    _, _, vt = np.linalg.svd(emb - centre, full_matrices=False)
    axes = vt[:2].T
    xy = (emb - centre) @ axes
    pt = (arrays["mean"] - centre) @ axes
    pos = {pid: i for i, pid in enumerate(ref.data.ids)}
    nb = np.array([xy[pos[h.patient_id]] for h in hits])
    colour = inp.colour_by if inp.colour_by in IMAGING_FEATURES else "lge_burden_pct"
    values = ref.cohort.imaging[colour].to_numpy()
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=100)
    ok = ~np.isnan(values)
    sc = ax.scatter(xy[ok, 0], xy[ok, 1], c=values[ok], s=6, cmap="viridis", alpha=0.6, linewidths=0)
    ax.scatter(xy[~ok, 0], xy[~ok, 1], c="lightgrey", s=6, alpha=0.5, linewidths=0, label="omics only")
    ax.scatter(nb[:, 0], nb[:, 1], s=60, facecolors="none", edgecolors="red", linewidths=1.2, label=f"{len(hits)} nearest")
    ax.scatter([pt[0]], [pt[1]], marker="*", s=220, c="red", edgecolors="black", linewidths=0.8, label="this patient")
    fig.colorbar(sc, ax=ax, label=colour)
    ax.set_xlabel("latent axis 1")
    ax.set_ylabel("latent axis 2")
    ax.legend(loc="best", fontsize=7)
    ax.set_title("Patient in the synthetic reference cohort (research use)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode("ascii")
    return LatentFigure(
        figure=LatentFigureData(id="fusion-latent-map", title="Latent map: patient and nearest reference patients",
                                png_base64=png, result_id=inp.projection_id),
        axes="first two principal axes of the reference cohort's posterior means (full latent used for neighbours)",
        neighbour_ids=[h.patient_id for h in hits])
