"""Negative controls run beside every association scan.

- Permuted labels: the programme rows are shuffled against phenotypes and covariates, the scan is
  rerun (asymptotic p-values, for speed) and the fraction of tests with p < alpha is compared with
  alpha. A clean control says the test itself is calibrated on this table's distributions.
- Shuffled locations (spatial tables): Moran's I of each test's residuals on the real spot graph,
  and again after shuffling spot locations. Residual autocorrelation at the real locations means
  rows are not independent and p-values are anti-conservative; at shuffled locations the fraction
  flagged should be about alpha (the Moran test is calibrated).
"""

from __future__ import annotations

import math

import numpy as np

from ._scan import scan
from ._spatial import knn_weights, moran_null, moran_p, morans_i


def _tolerance(alpha: float, n_draws: int, spread: float = 0.0) -> float:
    """Allowed excess over alpha: 3 binomial SEs (or 3 between-round SEs), at least 0.01."""
    return max(0.01, 3 * math.sqrt(alpha * (1 - alpha) / max(n_draws, 1)), 3 * spread)


def permuted_labels(Y, X, Z, *, rounds: int, alpha: float, q: float, rng: np.random.Generator) -> dict:
    from scipy import stats  # lazy, as statsmodels below: heavy imports paid only when controls run
    from statsmodels.stats.multitest import multipletests  # lazy: statsmodels costs ~1.3 s of import

    fractions, fdr_hits, n_tests = [], [], 0
    for _ in range(rounds):
        res = scan(Y, X[rng.permutation(X.shape[0])], Z)
        ok = np.isfinite(res.t)
        p = 2 * stats.t.sf(np.abs(res.t[ok]), res.df[ok])
        n_tests = max(n_tests, p.size)
        fractions.append(float((p < alpha).mean()) if p.size else float("nan"))
        fdr_hits.append(int(multipletests(p, alpha=q, method="fdr_bh")[0].sum()) if p.size else 0)
    frac = np.array(fractions)
    spread = float(frac.std(ddof=1) / math.sqrt(rounds)) if rounds > 1 else 0.0
    observed = float(frac.mean())
    tol = _tolerance(alpha, rounds * n_tests, spread)
    return {
        "rounds": rounds, "alpha": alpha, "expected_fraction": alpha, "observed_fraction": round(observed, 6),
        "tolerance": round(tol, 6), "mean_fdr_significant": round(float(np.mean(fdr_hits)), 4),
        "clean": bool(observed <= alpha + tol), "p_value": "asymptotic (t distribution)",
    }


def shuffled_locations(E: np.ndarray, coords: np.ndarray, *, alpha: float, rng: np.random.Generator,
                       k: int = 6, n_perm: int = 199, shuffles: int = 50) -> dict:
    """E: (n, T) full-model residuals of the tests on complete rows; coords: (n, 2).

    Moran's I of each residual vector at the real locations, tested against its permutation null;
    then the same for ``shuffles`` random reassignments of locations to rows, which should be
    flagged at rate about alpha.
    """
    W = knn_weights(coords, k)
    null = moran_null(E, W, n_perm, rng)
    i_real = morans_i(E, W)
    p_real = moran_p(i_real, null)
    i_shuf = np.stack([morans_i(E, knn_weights(coords[rng.permutation(coords.shape[0])], k)) for _ in range(shuffles)])
    p_shuf = moran_p(i_shuf, null)
    T = E.shape[1]
    frac_real, frac_shuf = float((p_real < alpha).mean()), float((p_shuf < alpha).mean())
    tol_real, tol_shuf = _tolerance(alpha, T), _tolerance(alpha, T * shuffles)
    return {
        "n_tests": T, "k_neighbours": k, "n_permutations": n_perm, "shuffles": shuffles, "alpha": alpha,
        "median_morans_i": round(float(np.median(i_real)), 6),
        "fraction_autocorrelated": round(frac_real, 6), "fraction_autocorrelated_shuffled": round(frac_shuf, 6),
        "tolerance": round(tol_real, 6),
        "clean": bool(frac_real <= alpha + tol_real and frac_shuf <= alpha + tol_shuf),
        "morans_i": i_real, "morans_p": p_real,
    }
