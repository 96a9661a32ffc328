"""A patient's inputs to the fusion model: imaging phenotypes (explicit or from tool outputs), omics.

Why one place: every fusion tool starts from the same stored projection (``fus-…``), so the
conversion from tool outputs (cardiac_function, regional_function, lge_burden) and omics inputs to
the model's standardised vectors happens once, in ``fusion_project``.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cardiomics.errors import InputError, ModelError

from ..contract import ModelRef


class ImagingPhenotypes(BaseModel):
    """CMR phenotypes in natural units; leave out what was not measured."""

    model_config = ConfigDict(extra="forbid")

    lv_edv_ml: float | None = Field(None, gt=10, lt=800)
    lv_esv_ml: float | None = Field(None, gt=1, lt=800)
    lv_ef_pct: float | None = Field(None, ge=1, le=95)
    lv_mass_g: float | None = Field(None, gt=10, lt=800)
    rv_edv_ml: float | None = Field(None, gt=10, lt=800)
    rv_esv_ml: float | None = Field(None, gt=1, lt=800)
    rv_ef_pct: float | None = Field(None, ge=1, le=95)
    wall_mean_mm: float | None = Field(None, gt=1, lt=40, description="Mean end-diastolic wall thickness over the AHA segments.")
    wall_max_mm: float | None = Field(None, gt=1, lt=50, description="Maximal segmental end-diastolic wall thickness.")
    lge_burden_pct: float | None = Field(None, ge=0, le=100, description="LGE scar as % of LV myocardium.")
    native_t1_ms: float | None = Field(None, gt=500, lt=2500)
    t2_ms: float | None = Field(None, gt=20, lt=150)
    ecv_pct: float | None = Field(None, gt=5, lt=80)
    age_years: float | None = Field(None, ge=0, le=120)
    sex_male: int | None = Field(None, ge=0, le=1, description="1 male, 0 female.")


_FROM_FUNCTION = ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct")


def _value(entry) -> float | None:
    if isinstance(entry, dict):
        entry = entry.get("value")
    return float(entry) if isinstance(entry, (int, float)) and np.isfinite(entry) else None


def collect_imaging(explicit: ImagingPhenotypes | None, function: dict | None, regional: dict | None,
                    lge: dict | None) -> tuple[dict[str, float], dict[str, str]]:
    """Merge tool outputs and explicit values (explicit wins) -> (values, source of each value)."""
    values: dict[str, float] = {}
    source: dict[str, str] = {}
    if function:
        for k in _FROM_FUNCTION:
            v = _value(function.get(k))
            if v is not None:
                values[k], source[k] = v, "cardiac_function"
    if regional:
        th = [_value(s.get("ed_wall_thickness_mm")) for s in regional.get("segments", []) if isinstance(s, dict)]
        th = [t for t in th if t is not None]
        if th:
            values["wall_mean_mm"], values["wall_max_mm"] = float(np.mean(th)), float(np.max(th))
            source["wall_mean_mm"] = source["wall_max_mm"] = "regional_function"
    if lge:
        v = _value(lge.get("scar_burden_pct")) if "scar_burden_pct" in lge else _value(lge.get("burden_pct"))
        if v is not None:
            values["lge_burden_pct"], source["lge_burden_pct"] = v, "lge_burden"
    if explicit:
        for k, v in explicit.model_dump(exclude_none=True).items():
            values[k], source[k] = float(v), "given"
    return values, source


def reference():
    """The shipped reference (weights verified against the card), with errors typed for the caller."""
    from cardiomics.models.fusion import load_reference

    try:
        return load_reference()
    except ModelError:
        raise
    except Exception as exc:  # a broken install: say what to do
        raise ModelError("fusion-unavailable", f"the fusion reference model could not be loaded: {type(exc).__name__}: {str(exc)[:200]}",
                         hint="reinstall the package or retrain: python -m cardiomics.models.fusion.train") from exc


def model_ref(ref) -> ModelRef:
    return ModelRef(**ref.card.ref)


def imaging_row(ref, values: dict[str, float]) -> np.ndarray:
    import pandas as pd  # lazy: pandas costs ~0.5 s of import for every registry user

    df = pd.DataFrame([values]) if values else pd.DataFrame([{}])
    return ref.pre.imaging_matrix(df)[0]


def load_projection(ctx, projection_id: str) -> tuple[dict, dict]:
    if not ctx.store.exists(projection_id):
        raise InputError("unknown-projection", f"no stored projection {projection_id!r}",
                         hint="call fusion_project first and pass its projection_id")
    ctx.used_input("projection", ctx.store.digest(projection_id))
    return ctx.store.arrays(projection_id), ctx.store.meta(projection_id)


def example_projection(ctx) -> str:
    """A projection of a mildly dilated, scarred heart (imaging only) for tool examples."""
    from .. import call_tool

    out = call_tool("fusion_project", example_project_args(), ctx)
    return out.projection_id


def example_project_args() -> dict:
    return {"imaging": {"lv_edv_ml": 210.0, "lv_esv_ml": 120.0, "lv_ef_pct": 42.9, "lv_mass_g": 160.0, "rv_edv_ml": 220.0,
                        "rv_esv_ml": 110.0, "rv_ef_pct": 50.0, "wall_mean_mm": 9.0, "wall_max_mm": 10.5,
                        "lge_burden_pct": 9.0, "age_years": 61, "sex_male": 1}}
