"""Tool ``prediction_metrics``: how good is a risk / classification output?"""

from __future__ import annotations

import warnings as _warnings
from typing import Literal

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cardiomics.errors import InputError

from .._registry import ToolContext, tool
from ..contract import Estimate, Interval, ToolOutput
from ._prediction import bootstrap_auc_ci, calibration, delong, net_benefit
from ._text import quote_name

log = structlog.get_logger(__name__)


class PredictionMetricsInput(BaseModel):
    y_true: list[int] = Field(min_length=10, description="Observed outcome per subject, 0 or 1.")
    y_prob: list[float] = Field(min_length=10, description="Predicted probability of outcome 1 per subject, in [0, 1] (same order).")
    thresholds: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3],
                                    description="Threshold probabilities for decision-curve net benefit, each in (0, 1).")
    groups: dict[str, list[str]] = Field(default_factory=dict, description="Subgroup labels per subject, e.g. {'sex': ['F','M',...], 'site': [...]}: "
                                                                           "metrics are repeated per level.")
    ci_method: Literal["delong", "bootstrap"] = Field("delong", description="AUROC confidence interval: DeLong variance or seeded percentile bootstrap.")
    n_bootstrap: int = Field(2000, ge=200, le=20000, description="Bootstrap resamples (ci_method='bootstrap').")
    min_events: int = Field(10, ge=2, description="A subgroup needs this many events and non-events for AUROC and calibration.")

    @model_validator(mode="after")
    def _check(self) -> PredictionMetricsInput:
        n = len(self.y_true)
        if len(self.y_prob) != n:
            raise ValueError(f"y_prob has {len(self.y_prob)} values, y_true {n}")
        if set(self.y_true) - {0, 1}:
            raise ValueError("y_true must hold only 0 and 1")
        if not all(0.0 <= p <= 1.0 for p in self.y_prob):
            raise ValueError("y_prob must lie in [0, 1] (pass probabilities, not logits)")
        if not all(0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError("thresholds must lie strictly between 0 and 1")
        for name, labels in self.groups.items():
            if len(labels) != n:
                raise ValueError(f"groups[{name!r}] has {len(labels)} labels, expected {n}")
        return self


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetBenefit(_Part):
    threshold: float
    model: float
    treat_all: float
    treat_none: float = 0.0


class Performance(_Part):
    n: int
    n_events: int
    auroc: Estimate | None
    brier: float
    calibration_slope: Estimate | None
    calibration_intercept: Estimate | None = Field(description="Calibration-in-the-large (logit scale); 0 is ideal.")
    note: str = ""


class Subgroup(_Part):
    variable: str
    level: str
    performance: Performance


class PredictionMetrics(ToolOutput):
    overall: Performance
    net_benefit: list[NetBenefit]
    subgroups: list[Subgroup]
    ci_method: str


def _performance(y, p, ci_method, n_boot, rng, min_events) -> Performance:
    from scipy import stats  # lazy: keeps the registry import light
    n, events = int(y.size), int(y.sum())
    brier = float(np.mean((p - y) ** 2))
    if min(events, n - events) < min_events:
        return Performance(n=n, n_events=events, auroc=None, brier=brier, calibration_slope=None,
                           calibration_intercept=None, note=f"fewer than {min_events} events or non-events: AUROC and calibration not assessed")
    auc, var = delong(y, p)
    if ci_method == "delong":
        half = stats.norm.ppf(0.975) * np.sqrt(var)
        lo, hi, how = max(0.0, auc - half), min(1.0, auc + half), "DeLong"
    else:
        (lo, hi), how = bootstrap_auc_ci(y, p, n_boot, rng), f"percentile bootstrap ({n_boot}, seeded)"
    note = ""
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            cal = calibration(y, p)
        slope = Estimate(value=cal["slope"], unit="1",
                         interval=Interval(lower=cal["slope_ci"][0], upper=cal["slope_ci"][1], method="logistic recalibration, Wald"))
        icpt = Estimate(value=cal["intercept"], unit="logit",
                        interval=Interval(lower=cal["intercept_ci"][0], upper=cal["intercept_ci"][1], method="offset logistic model, Wald"))
    except (np.linalg.LinAlgError, ValueError) as exc:  # perfect separation and the like
        slope = icpt = None
        note = f"calibration not estimable: {type(exc).__name__}"
    return Performance(n=n, n_events=events, auroc=Estimate(value=auc, unit="1", interval=Interval(lower=lo, upper=hi, method=how)),
                       brier=brier, calibration_slope=slope, calibration_intercept=icpt, note=note)


def _example(ctx: ToolContext) -> dict:
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    p = 1 / (1 + np.exp(-(x - 1)))
    y = (rng.random(200) < p).astype(int)
    return {"y_true": y.tolist(), "y_prob": p.round(6).tolist(), "groups": {"sex": ["F", "M"] * 100}}


@tool(role="analysis", version="1.0.0", example=_example)
def prediction_metrics(inp: PredictionMetricsInput, ctx: ToolContext) -> PredictionMetrics:
    """Discrimination, calibration and net benefit of a binary risk prediction.

    Give observed outcomes (0/1) and predicted probabilities for the same subjects, e.g. the output
    of a risk model or a virtual-transcriptomics classifier on a held-out cohort. Returns AUROC
    with a 95 % CI (DeLong, or seeded bootstrap), Brier score, calibration slope and
    calibration-in-the-large from logistic recalibration (statsmodels), decision-curve net benefit
    at the given threshold probabilities beside treat-all / treat-none, and the same metrics per
    subgroup (pass labels such as sex and site in ``groups``) to expose performance gaps. Needs
    probabilities, not uncalibrated scores or logits.
    """
    y = np.asarray(inp.y_true, dtype=float)
    p = np.asarray(inp.y_prob, dtype=float)
    if y.sum() in (0, y.size):
        raise InputError("one-class", "y_true holds a single class", hint="AUROC and calibration need both events and non-events")
    rng = np.random.default_rng(ctx.seed)
    overall = _performance(y, p, inp.ci_method, inp.n_bootstrap, rng, min(inp.min_events, 2))
    nb = []
    for pt in inp.thresholds:
        model, all_ = net_benefit(y, p, pt)
        nb.append(NetBenefit(threshold=pt, model=model, treat_all=all_))
    subgroups = []
    for name, labels in sorted(inp.groups.items()):
        lab = np.array(labels, dtype=str)
        for level in sorted(set(lab)):
            sel = lab == level
            subgroups.append(Subgroup(variable=quote_name(name), level=quote_name(level),
                                      performance=_performance(y[sel], p[sel], inp.ci_method, inp.n_bootstrap, rng, inp.min_events)))
    log.info("prediction_metrics", n=int(y.size), auroc=overall.auroc.value if overall.auroc else None)
    return PredictionMetrics(overall=overall, net_benefit=nb, subgroups=subgroups, ci_method=inp.ci_method)
