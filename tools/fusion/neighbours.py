"""``cohort_neighbours``: the reference patients nearest to a projected patient in the latent space."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .._registry import ToolContext, tool
from ..contract import ResultId, ToolOutput
from ._patient import example_projection, load_projection, model_ref, reference


class CohortNeighboursInput(BaseModel):
    projection_id: ResultId = Field(description="Id returned by `fusion_project`.")
    k: int = Field(5, ge=1, le=50, description="Number of neighbours.")


class CohortNeighbour(BaseModel):
    rank: int
    patient_id: str = Field(description="Synthetic reference-cohort id (no real patient).")
    distance: float = Field(description="Euclidean distance in the latent space.")
    distance_in_posterior_sd: float = Field(description="Distance divided by the query's mean posterior SD.")
    site: int
    modalities: list[str]
    phenotypes: dict[str, float] = Field(description="Measured CMR phenotypes of the neighbour, natural units.")
    programme_scores_measured: dict[str, float] = Field(description="MEASURED programme scores (reference SD units) where the neighbour has omics.")


class CohortNeighbours(ToolOutput):
    projection_id: str
    cohort: str = Field(description="Which reference cohort was searched.")
    neighbours: list[CohortNeighbour]
    median_neighbour_phenotypes: dict[str, float]
    note: str


def _example(ctx: ToolContext) -> dict:
    return {"projection_id": example_projection(ctx), "k": 5}


@tool(role="analysis", example=_example)
def cohort_neighbours(inp: CohortNeighboursInput, ctx: ToolContext) -> CohortNeighbours:
    """The k reference-cohort patients nearest to a projected patient, with distances and their phenotypes.

    Use after fusion_project. Searches the shipped synthetic reference cohort (embedded with all
    its available modalities, indexed on disk and built on first use). Neighbours' programme
    scores are measured values of those reference patients, not predictions for this patient.
    """
    import numpy as np

    from cardiomics.models.fusion import cohort_index

    ref = reference()
    ctx.used_model(model_ref(ref))
    arrays, _ = load_projection(ctx, inp.projection_id)
    hits = cohort_index(ref).query(arrays["mean"], inp.k)
    msd = float(np.mean(arrays["sd"]))
    rows = [CohortNeighbour(rank=i + 1, patient_id=h.patient_id, distance=round(h.distance, 4),
                            distance_in_posterior_sd=round(h.distance / msd, 3), site=h.site, modalities=h.modalities,
                            phenotypes={k: round(v, 2) for k, v in h.phenotypes.items()},
                            programme_scores_measured={k: round(v, 3) for k, v in h.programme_scores.items()})
            for i, h in enumerate(hits)]
    keys = sorted({k for r in rows for k in r.phenotypes})
    med = {k: round(float(np.median([r.phenotypes[k] for r in rows if k in r.phenotypes])), 2) for k in keys}
    spec = ref.cohort.spec
    return CohortNeighbours(projection_id=inp.projection_id,
                            cohort=f"synthetic reference cohort (seed {spec.seed}, {spec.n_patients} patients)",
                            neighbours=rows, median_neighbour_phenotypes=med,
                            note="neighbours are synthetic reference patients; research use only")
