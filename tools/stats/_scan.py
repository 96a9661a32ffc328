"""Run every (phenotype, programme) test, grouping tests that share the same complete rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._linear import block_permutations, fwl_fit, orthonormal_basis, residuals


@dataclass
class ScanResult:
    beta: np.ndarray            # (J, K) standardised coefficients
    se: np.ndarray
    t: np.ndarray
    df: np.ndarray
    n: np.ndarray
    p_perm: np.ndarray          # NaN when no permutations were run
    rows: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # test -> boolean row mask
    full_residuals: dict[int, tuple[list[int], np.ndarray]] = field(default_factory=dict)


def scan(Y: np.ndarray, X: np.ndarray, Z: np.ndarray, *, n_perm: int = 0, rng: np.random.Generator | None = None,
         blocks: np.ndarray | None = None, min_df: int = 3, keep_residuals: bool = False) -> ScanResult:
    """Fit y_j ~ x_k + Z for all j, k; complete cases per test; the same permutations per row set."""
    n, J = Y.shape
    K = X.shape[1]
    shape = (J, K)
    out = ScanResult(*(np.full(shape, np.nan) for _ in range(6)))
    cov_ok = np.isfinite(Z).all(axis=1)
    x_ok = np.isfinite(X)
    perm_cache: dict[bytes, np.ndarray] = {}
    for j in range(J):
        base = cov_ok & np.isfinite(Y[:, j])
        groups: dict[bytes, list[int]] = {}
        for k in range(K):
            groups.setdefault(np.packbits(base & x_ok[:, k]).tobytes(), []).append(k)
        for key, ks in groups.items():
            rows = base & x_ok[:, ks[0]]
            m = int(rows.sum())
            if m < 4:
                continue
            q = orthonormal_basis(Z[rows])
            if m - q.shape[1] - 1 < min_df:
                continue
            perms = None
            if n_perm:
                if key not in perm_cache:
                    perm_cache[key] = block_permutations(m, n_perm, rng, None if blocks is None else blocks[rows])
                perms = perm_cache[key]
            fit = fwl_fit(Y[rows, j], X[np.ix_(rows, ks)], q, perms)
            out.beta[j, ks], out.se[j, ks], out.t[j, ks] = fit.beta, fit.se, fit.t
            out.df[j, ks], out.n[j, ks] = fit.df, fit.n
            if fit.p_perm is not None:
                out.p_perm[j, ks] = fit.p_perm
            for k in ks:
                out.rows[(j, k)] = rows
            if keep_residuals and m == n:
                out.full_residuals[j] = (ks, residuals(Y[rows, j], X[np.ix_(rows, ks)], q, fit.beta))
    return out
