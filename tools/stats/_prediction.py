"""Discrimination, calibration and clinical-usefulness metrics of a risk score.

- AUROC with DeLong's variance (DeLong et al. 1988, Biometrics 44:837) by the midrank algorithm
  of Sun & Xu (2014, IEEE Signal Process Lett 21:1389), or a seeded percentile bootstrap.
- Calibration (Van Calster et al. 2019, BMC Med 17:230): slope = coefficient of logit(p) in a
  logistic recalibration ``y ~ logit(p)``; intercept = calibration-in-the-large, the intercept of
  ``y ~ 1`` with logit(p) as offset. Ideal: slope 1, intercept 0. statsmodels fits both.
- Decision curve (Vickers & Elkin 2006, Med Decis Making 26:565): net benefit at threshold pt =
  TP/n - FP/n * pt / (1 - pt), beside treat-all and treat-none (0).
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-8


def midrank(x: np.ndarray) -> np.ndarray:
    from scipy import stats  # lazy: keeps the registry import light
    return stats.rankdata(x, method="average")


def delong(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(AUROC, its DeLong variance)."""
    pos, neg = s[y == 1], s[y == 0]
    m, n = pos.size, neg.size
    tz = midrank(np.concatenate([pos, neg]))
    tx, ty = midrank(pos), midrank(neg)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    auc = float(v10.mean())
    var = float(v10.var(ddof=1) / m + v01.var(ddof=1) / n) if m > 1 and n > 1 else float("nan")
    return auc, var


def auc_fast(y: np.ndarray, s: np.ndarray) -> float:
    m = int(y.sum())
    n = y.size - m
    r = midrank(s)
    return float((r[y == 1].sum() - m * (m + 1) / 2) / (m * n))


def bootstrap_auc_ci(y, s, n_boot: int, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float]:
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, y.size, y.size)
        yb = y[idx]
        if 0 < yb.sum() < yb.size:
            vals.append(auc_fast(yb, s[idx]))
    a = (1 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def calibration(y: np.ndarray, p: np.ndarray) -> dict:
    """Slope and calibration-in-the-large with 95 % Wald CIs (statsmodels)."""
    import statsmodels.api as sm  # lazy: statsmodels adds ~1.3 s to every process that imports the registry

    lp = logit(p)
    slope_fit = sm.Logit(y, sm.add_constant(lp)).fit(disp=0)
    citl = sm.GLM(y, np.ones_like(lp), family=sm.families.Binomial(), offset=lp).fit()
    s_lo, s_hi = slope_fit.conf_int()[1]
    i_lo, i_hi = citl.conf_int()[0]
    return {"slope": float(slope_fit.params[1]), "slope_ci": (float(s_lo), float(s_hi)),
            "intercept": float(citl.params[0]), "intercept_ci": (float(i_lo), float(i_hi))}


def net_benefit(y: np.ndarray, p: np.ndarray, pt: float) -> tuple[float, float]:
    """(model net benefit, treat-all net benefit) at threshold probability pt."""
    n = y.size
    treat = p >= pt
    tp = float(np.sum(treat & (y == 1)))
    fp = float(np.sum(treat & (y == 0)))
    w = pt / (1 - pt)
    prev = float(y.mean())
    return tp / n - fp / n * w, prev - (1 - prev) * w
