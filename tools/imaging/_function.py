"""cardiac_function: volumes, ejection fractions and mass from a cine segmentation."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import structlog
from pydantic import BaseModel, Field

from cardiomics.errors import NotFoundError

from .._registry import ToolContext, tool
from ..contract import Estimate, ModelRef, QcCheck, ToolOutput
from ._interval import tta_interval
from ._labels import LV, MYO, MYOCARDIAL_DENSITY_G_PER_ML, RV
from ._reference import Sex, reference_range

log = structlog.get_logger(__name__)


class CardiacFunctionInput(BaseModel):
    segmentation_id: str = Field(pattern=r"^seg-[0-9a-f]{16,64}$", description="Id returned by `segment`.")
    height_cm: float | None = Field(None, gt=50, lt=250, description="Body height for BSA indexing.")
    weight_kg: float | None = Field(None, gt=2, lt=400, description="Body weight for BSA indexing.")
    sex: Sex | None = Field(None, description="Selects sex-specific reference ranges; both ranges' union when absent.")



class CardiacFunction(ToolOutput):
    ed_frame: int = Field(description=(
        "LV end-diastolic frame: largest LV cavity volume over the cine (LV volumes and mass are taken here)."))
    es_frame: int = Field(description="LV end-systolic frame: smallest LV cavity volume over the cine.")
    rv_ed_frame: int = Field(description=(
        "RV end-diastolic frame: largest RV cavity volume over the cine (RV volumes and RVEF use the RV's own frames)."))
    rv_es_frame: int = Field(description=(
        "RV end-systolic frame: smallest RV cavity volume over the cine; may follow the LV's (e.g. right bundle branch "
        "block, RV pacing)."))
    lv_edv_ml: Estimate
    lv_esv_ml: Estimate
    lv_sv_ml: Estimate
    lv_ef_pct: Estimate
    lv_mass_g: Estimate
    rv_edv_ml: Estimate
    rv_esv_ml: Estimate
    rv_ef_pct: Estimate
    bsa_m2: float | None = Field(None, description="Body-surface area (Mosteller) when height and weight are known.")
    lv_edv_index_ml_m2: Estimate | None = None
    lv_esv_index_ml_m2: Estimate | None = None
    lv_mass_index_g_m2: Estimate | None = None
    rv_edv_index_ml_m2: Estimate | None = None
    lv_volume_curve_ml: list[float] = Field(description="LV cavity volume per frame.")
    rv_volume_curve_ml: list[float] = Field(description="RV cavity volume per frame.")
    qc: list[QcCheck]
    qc_verdict: Literal["pass", "warn", "fail"]


def _indices(labels: np.ndarray, voxel_ml: float, ed: int, es: int, rv_ed: int, rv_es: int) -> dict[str, float]:
    """Every index from one label map (T, S, R, C): LV at frames ``ed``/``es``, RV at ``rv_ed``/``rv_es``."""
    vol = lambda frame, v: float((labels[frame] == v).sum()) * voxel_ml  # noqa: E731
    lv_edv, lv_esv, rv_edv, rv_esv = vol(ed, LV), vol(es, LV), vol(rv_ed, RV), vol(rv_es, RV)
    return {
        "lv_edv_ml": lv_edv, "lv_esv_ml": lv_esv, "lv_sv_ml": lv_edv - lv_esv,
        "lv_ef_pct": 100.0 * (lv_edv - lv_esv) / lv_edv if lv_edv > 0 else 0.0,
        "lv_mass_g": vol(ed, MYO) * MYOCARDIAL_DENSITY_G_PER_ML,
        "rv_edv_ml": rv_edv, "rv_esv_ml": rv_esv,
        "rv_ef_pct": 100.0 * (rv_edv - rv_esv) / rv_edv if rv_edv > 0 else 0.0,
    }


def declared_frames(store, study_id: str | None, n_frames: int) -> tuple[int, int, str] | None:
    """The ED and ES frame indices the study itself declares (an ACDC ``Info.cfg``) and how it numbers
    them, or None.

    ``Info.cfg`` numbers frames from 1 in the full cine; a study read from per-frame files holds only
    those frames (``frame_numbers``), so a number maps to its position among them.
    """
    if not study_id:
        return None
    try:
        stack_meta = store.meta(study_id).get("meta") or {}
    except NotFoundError:  # a segmentation whose study is not in this store (written by another tool)
        return None
    info = stack_meta.get("acdc_info") or {}
    numbers = stack_meta.get("frame_numbers")

    def index(n: int | None) -> int | None:
        if n is None:
            return None
        if numbers:
            return numbers.index(n) if n in numbers else None
        return n - 1 if 1 <= n <= n_frames else None

    ed, es = index(info.get("ed_frame_number")), index(info.get("es_frame_number"))
    if ed is None or es is None:
        return None
    return ed, es, f"Info.cfg: ED {info['ed_frame_number']}, ES {info['es_frame_number']}, counted from 1"


def _frame_gap(a: int, b: int, n: int) -> int:
    """Frames between two phases of a cyclic cine."""
    d = abs(a - b) % n
    return min(d, n - d)


def mosteller_bsa(height_cm: float, weight_kg: float) -> float:
    return math.sqrt(height_cm * weight_kg / 3600.0)


_UNITS = {"ml": "ml", "pct": "%", "g": "g", "ml_m2": "ml/m²", "g_m2": "g/m²"}


def _unit(name: str) -> str:
    for suffix in ("ml_m2", "g_m2", "ml", "pct", "g"):
        if name.endswith("_" + suffix):
            return _UNITS[suffix]
    raise ValueError(name)


def _example(ctx: ToolContext) -> dict:
    from .. import call_tool
    from ._segment import _example as seg_example

    seg = call_tool("segment", seg_example(ctx), ctx)
    return {"segmentation_id": seg.segmentation_id, "height_cm": 170, "weight_kg": 70}


@tool(role="processing", example=_example)
def cardiac_function(inp: CardiacFunctionInput, ctx: ToolContext) -> CardiacFunction:
    """LV and RV volumes, stroke volume, ejection fractions and LV mass (1.05 g/ml) from a segmentation.

    Use after `segment`. End-diastole and end-systole are found for each ventricle separately (SCMR
    post-processing recommendations): the largest and smallest LV cavity volume over the cine for
    the LV indices and mass (`ed_frame`, `es_frame`), the largest and smallest RV cavity volume for
    the RV indices (`rv_ed_frame`, `rv_es_frame`; a QC note says when they differ from the LV's). Where
    the study declares its ED and ES frames (an ACDC `Info.cfg`), QC warns when the LV's are more than
    one frame away from them.
    Indexed values need height and weight (Mosteller BSA). Each value carries a 95 % interval from
    test-time augmentation (t quantile over the few members, clipped to the physical range) and a
    flag against published adult reference ranges.
    """
    meta = ctx.store.meta(inp.segmentation_id)
    arrays = ctx.store.arrays(inp.segmentation_id)
    ctx.used_input("segmentation", ctx.store.digest(inp.segmentation_id))
    ctx.used_model(ModelRef(**meta["model"]))
    labels = arrays["labels"]
    s, r, c = meta["spacing_mm"]
    voxel_ml = s * r * c / 1000.0
    lv_curve = (labels == LV).sum(axis=(1, 2, 3)) * voxel_ml
    rv_curve = (labels == RV).sum(axis=(1, 2, 3)) * voxel_ml
    ed, es = int(np.argmax(lv_curve)), int(np.argmin(lv_curve))
    # each ventricle at its own extremes: RV contraction can lag the LV's (conduction delay, pacing)
    rv_ed, rv_es = int(np.argmax(rv_curve)), int(np.argmin(rv_curve))
    frames = (ed, es, rv_ed, rv_es)
    point = _indices(labels, voxel_ml, *frames)
    members = [_indices(m, voxel_ml, *frames) for m in arrays.get("tta", [])]

    bsa = mosteller_bsa(inp.height_cm, inp.weight_kg) if inp.height_cm and inp.weight_kg else None
    if bsa:
        for src, dst in (("lv_edv_ml", "lv_edv_index_ml_m2"), ("lv_esv_ml", "lv_esv_index_ml_m2"),
                         ("lv_mass_g", "lv_mass_index_g_m2"), ("rv_edv_ml", "rv_edv_index_ml_m2")):
            point[dst] = point[src] / bsa
            for m in members:
                m[dst] = m[src] / bsa

    def estimate(name: str) -> Estimate:
        # ejection fractions lie in 0-100 %, volumes and masses are not negative
        upper = 100.0 if name.endswith("_pct") else None
        interval = tta_interval(point[name], [m[name] for m in members], lower_bound=0.0, upper_bound=upper)
        return Estimate.of(point[name], _unit(name), reference=reference_range(name, inp.sex), interval=interval)

    fields = {name: estimate(name) for name in point}
    qc = [
        QcCheck(check="ed-es-distinct", passed=ed != es, detail=f"ED frame {ed}, ES frame {es}"),
        QcCheck(check="lv-ef-plausible", passed=5 <= point["lv_ef_pct"] <= 90, detail=f"LVEF {point['lv_ef_pct']:.1f} % (5–90 % plausible)"),
        QcCheck(check="lv-edv-plausible", passed=20 <= point["lv_edv_ml"] <= 600, detail=f"LVEDV {point['lv_edv_ml']:.0f} ml (20–600 ml plausible)"),
        QcCheck(check="lv-mass-plausible", passed=20 <= point["lv_mass_g"] <= 500, detail=f"LV mass {point['lv_mass_g']:.0f} g (20–500 g plausible)"),
        QcCheck(check="rv-found", passed=point["rv_edv_ml"] > 5, detail=f"RVEDV {point['rv_edv_ml']:.0f} ml"),
    ]
    if (rv_ed, rv_es) != (ed, es):  # informational: a lagging RV is physiology or a segmentation fault, for the reviewer to judge
        qc.append(QcCheck(check="rv-frames", passed=True, detail=(
            f"RV end-diastole frame {rv_ed}, end-systole frame {rv_es} (LV: {ed}, {es}); RV volumes and RVEF are taken "
            "at the RV's own frames")))
        log.info("rv frames differ from lv", ed=ed, es=es, rv_ed=rv_ed, rv_es=rv_es)
    declared = declared_frames(ctx.store, meta.get("study_id"), labels.shape[0])
    if declared is not None:
        # a cross-check, not a substitute: ED/ES stay the volume extremes, as SCMR post-processing defines them
        gap = max(_frame_gap(ed, declared[0], labels.shape[0]), _frame_gap(es, declared[1], labels.shape[0]))
        qc.append(QcCheck(check="declared-frames", passed=gap <= 1, detail=(
            f"the study declares ED frame {declared[0]}, ES frame {declared[1]} ({declared[2]}); "
            f"the LV volume curve gives {ed}, {es}"
            + ("" if gap <= 1 else f": {gap} frames apart, check the segmentation at both frames"))))
    verdict = "pass" if all(q.passed for q in qc) else "warn"
    return CardiacFunction(
        ed_frame=ed, es_frame=es, rv_ed_frame=rv_ed, rv_es_frame=rv_es, bsa_m2=round(bsa, 3) if bsa else None,
        lv_volume_curve_ml=[round(float(v), 2) for v in lv_curve], rv_volume_curve_ml=[round(float(v), 2) for v in rv_curve],
        qc=qc, qc_verdict=verdict, **fields,
    )
