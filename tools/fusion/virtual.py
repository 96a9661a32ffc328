"""``virtual_transcriptomics`` and ``prediction_drivers``: programme scores PREDICTED from imaging."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from cardiomics.errors import InputError

from .._registry import ToolContext, tool
from ..contract import Estimate, Interval, ResultId, ToolOutput
from ._patient import example_projection, load_projection, model_ref, reference

UNIT = "SD (reference cohort)"


def _imaging_data(ref, arrays: dict, meta: dict):
    from cardiomics.models.fusion import FusionData

    img = arrays["imaging"].astype(np.float32)
    if np.isnan(img).all():
        raise InputError("no-imaging", "this projection has no imaging phenotypes; virtual transcriptomics needs imaging",
                         hint="project the patient with cardiac_function output or imaging values")
    om = np.full((1, len(ref.pre.omics_features)), np.nan, np.float32)
    return FusionData(["patient"], img[None], om, np.array([int(meta["site"])]))


class VirtualTranscriptomicsInput(BaseModel):
    projection_id: ResultId = Field(description="Id returned by `fusion_project` (only its imaging part is used).")


class PredictedProgramme(BaseModel):
    programme: str
    status: Literal["PREDICTED"] = "PREDICTED"
    score: Estimate = Field(description="Predicted programme score with a split-conformal 90 % interval.")
    measured_score: float | None = Field(None, description="The patient's MEASURED score when omics entered the projection (for comparison).")


class VirtualTranscriptomics(ToolOutput):
    projection_id: str
    label: Literal["PREDICTED from imaging, not measured"] = "PREDICTED from imaging, not measured"
    programmes: list[PredictedProgramme]
    imaging_features_used: list[str]
    calibration: str
    note: str


def _example(ctx: ToolContext) -> dict:
    return {"projection_id": example_projection(ctx)}


@tool(role="analysis", example=_example)
def virtual_transcriptomics(inp: VirtualTranscriptomicsInput, ctx: ToolContext) -> VirtualTranscriptomics:
    """Predict transcriptomic programme scores from imaging alone, each with a calibrated 90 % interval.

    Use after fusion_project when no omics was measured (or to compare with it). Scores are in SD
    units of the reference cohort's measured scores; intervals are split-conformal on a held-out
    calibration set re-encoded with the same imaging features this patient has. Every value is
    PREDICTED, not measured. Synthetic-trained research model: not for clinical use.
    """
    from cardiomics.models.fusion.features import IMAGING_FEATURES

    ref = reference()
    ctx.used_model(model_ref(ref))
    arrays, meta = load_projection(ctx, inp.projection_id)
    data = _imaging_data(ref, arrays, meta)
    pred, lo, hi = ref.conformal.predict(data)
    P = len(ref.pre.programmes)
    measured = arrays["omics"][:P]
    n_cal = len(ref.conformal.cal)
    progs = []
    for j, p in enumerate(ref.pre.programmes):
        iv = Interval(lower=round(float(lo[0, j]), 3), upper=round(float(hi[0, j]), 3), level=0.90,
                      method=f"split-conformal, absolute residuals of {n_cal} calibration patients with the same imaging features")
        progs.append(PredictedProgramme(programme=p, score=Estimate.of(pred[0, j], UNIT, interval=iv, ndigits=3),
                                        measured_score=None if np.isnan(measured[j]) else round(float(measured[j]), 3)))
    used = [f for f, v in zip(IMAGING_FEATURES, arrays["imaging"]) if not np.isnan(v)]
    return VirtualTranscriptomics(projection_id=inp.projection_id, programmes=progs, imaging_features_used=used,
                                  calibration=f"90 % split-conformal on {n_cal} held-out synthetic patients",
                                  note="PREDICTED from imaging by a model trained on synthetic data; not a measurement; not for clinical use")


class PredictionDriversInput(BaseModel):
    projection_id: ResultId = Field(description="Id returned by `fusion_project`.")
    programme: str = Field(description="Programme whose prediction to explain, e.g. 'fibrosis_ecm'.")
    top_k: int = Field(5, ge=1, le=15)


class Driver(BaseModel):
    feature: str
    value: float = Field(description="The patient's value, natural units.")
    reference_mean: float = Field(description="Reference-cohort mean of the feature (the attribution baseline).")
    attribution: float = Field(description="Contribution to the predicted score, SD units (integrated gradients).")
    direction: Literal["raises", "lowers"]


class PredictionDrivers(ToolOutput):
    projection_id: str
    programme: str
    predicted_score: float
    baseline_score: float = Field(description="Prediction for the reference-mean patient with the same features.")
    drivers: list[Driver]
    completeness_gap: float = Field(description="predicted - baseline - sum(all attributions); near 0 when the attribution is complete.")
    method: str


def _drivers_example(ctx: ToolContext) -> dict:
    return {"projection_id": example_projection(ctx), "programme": "fibrosis_ecm", "top_k": 4}


@tool(role="analysis", example=_drivers_example)
def prediction_drivers(inp: PredictionDriversInput, ctx: ToolContext) -> PredictionDrivers:
    """Which imaging features drive a predicted programme score (integrated gradients vs the reference mean).

    Use after virtual_transcriptomics to explain one programme. Attributions are in SD units of the
    score and, with the baseline prediction, add up to the predicted score. Explains the model, not
    the biology; synthetic-trained research model.
    """
    from cardiomics.models.fusion.features import IMAGING_FEATURES

    ref = reference()
    ctx.used_model(model_ref(ref))
    if inp.programme not in ref.pre.programmes:
        raise InputError("unknown-programme", f"unknown programme {inp.programme[:80]!r}",
                         hint=f"choose one of: {', '.join(ref.pre.programmes)}")
    j = ref.pre.programmes.index(inp.programme)
    arrays, meta = load_projection(ctx, inp.projection_id)
    data = _imaging_data(ref, arrays, meta)
    attr = ref.model.attribution(data, j, steps=64)[0]
    pred = float(ref.model.predict_programmes(data)[0, j])
    base = data.imaging.copy()
    base[~np.isnan(base)] = 0.0
    from cardiomics.models.fusion import FusionData

    base_pred = float(ref.model.predict_programmes(FusionData(["b"], base, data.omics, data.site))[0, j])
    raw = ref.pre.imaging_raw(np.nan_to_num(data.imaging[0]))
    mean_raw = ref.pre.imaging_raw(np.zeros(len(IMAGING_FEATURES)))
    order = [i for i in np.argsort(-np.abs(attr)) if not np.isnan(data.imaging[0, i])][: inp.top_k]
    drivers = [Driver(feature=IMAGING_FEATURES[i], value=round(float(raw[i]), 3), reference_mean=round(float(mean_raw[i]), 3),
                      attribution=round(float(attr[i]), 4), direction="raises" if attr[i] >= 0 else "lowers") for i in order]
    return PredictionDrivers(projection_id=inp.projection_id, programme=inp.programme, predicted_score=round(pred, 4),
                             baseline_score=round(base_pred, 4), drivers=drivers,
                             completeness_gap=round(pred - base_pred - float(attr.sum()), 4),
                             method="integrated gradients (64 steps) of the imaging-only prediction; baseline: reference-cohort mean of each observed feature")
