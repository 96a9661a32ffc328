"""``fusion_project``: a patient's available modalities -> the shared imaging-omics latent space."""

from __future__ import annotations

from typing import Literal

import numpy as np
import structlog
from pydantic import BaseModel, Field, field_validator

from cardiomics.errors import InputError

from .._registry import ToolContext, tool
from ..contract import ToolOutput
from ._patient import ImagingPhenotypes, collect_imaging, example_project_args, imaging_row, model_ref, reference

log = structlog.get_logger(__name__)
MIN_IMAGING = 3


class FusionProjectInput(BaseModel):
    imaging: ImagingPhenotypes | None = Field(None, description="Phenotypes given explicitly (override values taken from tool outputs).")
    cardiac_function: dict | None = Field(None, description="Output of `cardiac_function` (volumes, EF, mass are read from it).")
    regional_function: dict | None = Field(None, description="Output of `regional_function` (mean and maximal ED wall thickness).")
    lge_burden: dict | None = Field(None, description="Output of `lge_burden` (scar burden %).")
    omics_programme_scores: dict[str, float] | None = Field(
        None, description="Measured programme scores in reference-cohort SD units (as returned by this model's neighbours).")
    omics_id: str | None = Field(None, description="A bulk dataset from `load_omics` with raw counts; its programme scores and panel PCs are computed here.")
    omics_sample: int = Field(0, ge=0, description="Row of the bulk dataset that belongs to this patient.")
    sex: Literal["male", "female"] | None = Field(None, description="Patient sex (as given to cardiac_function); imaging.sex_male wins if both are given.")
    site: int | None = Field(None, ge=0, le=5, description="Reference site code if the study comes from a reference site; omit when unknown.")

    @field_validator("omics_programme_scores")
    @classmethod
    def _finite(cls, v):
        if v is not None and any(not np.isfinite(x) or abs(x) > 50 for x in v.values()):
            raise ValueError("programme scores must be finite SD units (|score| <= 50)")
        return v


class FusionProjection(ToolOutput):
    projection_id: str = Field(description="Stored projection (latent mean/SD and the inputs), for the other fusion tools.")
    modalities: list[str] = Field(description="Modalities that entered the posterior.")
    latent_mean: list[float]
    latent_sd: list[float] = Field(description="Posterior SD per latent dimension (product of experts): the projection's uncertainty.")
    mean_posterior_sd: float = Field(description="Mean posterior SD; the prior's is 1.0, smaller means better determined.")
    imaging_features_used: dict[str, float] = Field(description="Imaging values that entered the model, natural units.")
    imaging_feature_sources: dict[str, str]
    imaging_features_missing: list[str]
    omics_features_used: int = Field(description="Number of omics features (programme scores, panel PCs) that entered.")
    site_note: str
    model_note: str


def _example(ctx: ToolContext) -> dict:
    return example_project_args()


def _omics_from_dataset(ctx: ToolContext, ref, omics_id: str, row: int) -> np.ndarray:
    import pandas as pd  # lazy: keeps the registry import light

    from ..omics import _handle

    ds = _handle.resolve(ctx.store, omics_id)
    _handle.used(ctx, ds)
    if ds.kind != "bulk":
        raise InputError("not-bulk", f"omics dataset {omics_id} is {ds.kind}; fusion needs a bulk sample",
                         hint="pass a bulk dataset, or give omics_programme_scores")
    genes = ds.genes()
    counts = None
    for start, block in ds.iter_counts():
        if start <= row < start + block.shape[0]:
            counts = np.asarray(block[row - start].todense()).ravel()
            break
    if counts is None:
        raise InputError("bad-omics-sample", f"omics_sample {row} is outside the dataset", hint="give a valid row index")
    df = pd.DataFrame([counts], columns=genes).T.groupby(level=0).sum().T
    out = ref.pre.omics_matrix(df)[0]
    found = len(set(genes) & set(ref.pre.genes)) / len(ref.pre.genes)
    if found < 0.8:  # panel PCs need the panel
        out[len(ref.pre.programmes):] = np.nan
    return out


@tool(role="analysis", example=_example)
def fusion_project(inp: FusionProjectInput, ctx: ToolContext) -> FusionProjection:
    """Project a patient into the shared imaging-omics latent space of the reference cohort, with uncertainty.

    Use after cardiac_function (and optionally regional_function, lge_burden) or with phenotypes given
    explicitly; add omics (a bulk dataset id or programme scores) when measured. Any subset of
    modalities and features works (product-of-experts posterior): missing ones widen the posterior SD.
    Returns a projection_id for cohort_neighbours, virtual_transcriptomics, prediction_drivers and
    latent_figure. Synthetic-trained research model: not for clinical use.
    """
    ref = reference()
    ctx.used_model(model_ref(ref))
    values, source = collect_imaging(inp.imaging, inp.cardiac_function, inp.regional_function, inp.lge_burden)
    if inp.sex is not None and "sex_male" not in values:
        values["sex_male"], source["sex_male"] = float(inp.sex == "male"), "given"
    img = imaging_row(ref, values)
    n_img = int((~np.isnan(img)).sum())
    if 0 < n_img < MIN_IMAGING:
        raise InputError("too-few-imaging-features", f"only {n_img} imaging feature(s) given; at least {MIN_IMAGING} are needed",
                         hint="pass the cardiac_function output or more phenotypes")
    om = np.full(len(ref.pre.omics_features), np.nan, np.float32)
    if inp.omics_id:
        om = _omics_from_dataset(ctx, ref, inp.omics_id, inp.omics_sample)
    elif inp.omics_programme_scores:
        unknown = sorted(set(inp.omics_programme_scores) - set(ref.pre.programmes))
        if unknown:
            raise InputError("unknown-programme", f"unknown programme(s) {unknown[:5]}",
                             hint=f"known: {', '.join(ref.pre.programmes)}")
        for j, p in enumerate(ref.pre.programmes):
            if p in inp.omics_programme_scores:
                om[j] = inp.omics_programme_scores[p]
    if n_img == 0 and np.isnan(om).all():
        raise InputError("no-modalities", "neither imaging phenotypes nor omics were given",
                         hint="pass cardiac_function output, imaging values, omics_id or omics_programme_scores")
    site = inp.site if inp.site is not None and inp.site < ref.pre.n_sites else -1
    if inp.site is not None and site < 0:
        raise InputError("unknown-site", f"site {inp.site} is not a reference site (0-{ref.pre.n_sites - 1})", hint="omit site when unknown")
    from cardiomics.models.fusion import FusionData

    data = FusionData(["patient"], img[None].astype(np.float32), om[None].astype(np.float32), np.array([site]))
    modalities = [m for m, ok in (("imaging", n_img > 0), ("omics", not np.isnan(om).all())) if ok]
    enc = ref.model.encode(data, tuple(modalities))
    mean, sd = enc.mean[0], enc.sd[0]
    pid = ctx.store.put("fus", {"imaging": img.astype(np.float64), "omics": om.astype(np.float64), "mean": mean, "sd": sd},
                        {"site": int(site), "modalities": modalities, "model": ref.card.ref})
    from cardiomics.models.fusion.features import IMAGING_FEATURES

    return FusionProjection(
        projection_id=pid, modalities=modalities,
        latent_mean=[round(float(v), 4) for v in mean], latent_sd=[round(float(v), 4) for v in sd],
        mean_posterior_sd=round(float(sd.mean()), 4),
        imaging_features_used={k: round(v, 3) for k, v in values.items()},
        imaging_feature_sources=source,
        imaging_features_missing=[f for f in IMAGING_FEATURES if f not in values],
        omics_features_used=int((~np.isnan(om)).sum()),
        site_note=(f"reference site {site}" if site >= 0 else "site unknown: encoded without a site code (trained with site dropout)"),
        model_note=f"{ref.card.id} {ref.card.version}, trained on a synthetic cohort; research use only, not for clinical use",
    )
