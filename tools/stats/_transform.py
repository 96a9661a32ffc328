"""Rank-based inverse-normal transform, applied when a normality rule says so (and recorded).

Rule ('auto'): transform a variable when Shapiro-Wilk rejects normality (p < 0.05) AND its
sample skewness exceeds 1 in absolute value. Shapiro alone rejects trivial departures in large
cohorts; skewness alone ignores sample size; together they catch the heavy right tails of LGE
burden or biomarker-like scores without touching near-normal EF or mass.
"""

from __future__ import annotations

import numpy as np

SHAPIRO_P = 0.05
SKEW_LIMIT = 1.0
_MAX_SHAPIRO_N = 5000


def rank_inverse_normal(values: np.ndarray, c: float = 3.0 / 8.0) -> np.ndarray:
    """Blom rank-INT of the finite entries (average ranks for ties); NaN stays NaN."""
    from scipy import stats  # lazy: keeps the registry import light
    out = np.full(values.shape, np.nan)
    ok = np.isfinite(values)
    ranks = stats.rankdata(values[ok])
    out[ok] = stats.norm.ppf((ranks - c) / (ok.sum() - 2 * c + 1))
    return out


def normality_rule(values: np.ndarray) -> tuple[float, float, bool]:
    """(Shapiro-Wilk p, skewness, whether the rule asks for a transform) on the finite entries."""
    from scipy import stats  # lazy: keeps the registry import light
    v = values[np.isfinite(values)]
    if v.size < 8 or np.ptp(v) == 0:
        return float("nan"), 0.0, False
    sample = v if v.size <= _MAX_SHAPIRO_N else np.random.default_rng(0).choice(v, _MAX_SHAPIRO_N, replace=False)
    p = float(stats.shapiro(sample).pvalue)
    skew = float(stats.skew(v))
    return p, skew, bool(p < SHAPIRO_P and abs(skew) > SKEW_LIMIT)
