"""Covariate-adjusted linear association, vectorised over tests and permutations.

For a phenotype y, programme x and covariates Z (intercept, numeric covariates, dummies of
categorical ones) the model is ``y ~ x + Z``. By Frisch-Waugh-Lovell the coefficient of x equals
the slope of the residualised y on the residualised x, which makes one pass over many
programmes a matrix product.

Permutation p-values follow Freedman & Lane (1983), as recommended for the general linear model by
Winkler et al. (2014, NeuroImage 92:381): the residuals e of the reduced model ``y ~ Z`` are
permuted and added back to its fitted values. This keeps the covariate-phenotype relation intact
(permuting the raw phenotype would break it and inflate false positives when covariates are
correlated with the programme), and has the best size/power among the usual schemes. Because
``M (Ŷ + P e) = M P e`` and ``rx ⟂ col(Z)``, the permuted numerator is ``rx · P e`` and the
permuted residual sum of squares is ``‖e‖² − ‖Qᵀ P e‖²``: 1,000 permutations x K programmes cost
one (B x n) @ (n x K) product per phenotype. The same permutations serve every test, which keeps
their dependence; optional exchangeability blocks (e.g. site) permute within blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

_CHUNK = 250


@dataclass
class Covariates:
    """Design of the reduced model (intercept first) and its column names."""

    matrix: np.ndarray
    names: list[str]


def covariate_design(table: dict[str, np.ndarray], names: list[str], categorical: set[str]) -> Covariates:
    """Intercept + numeric columns + treatment-coded dummies (first sorted level is the reference)."""
    n = len(next(iter(table.values())))
    cols, labels = [np.ones(n)], ["intercept"]
    for name in names:
        col = table[name]
        if name in categorical or col.dtype.kind != "f":
            text = col.astype(str)
            missing = (text == "") | (text == "nan")
            levels = sorted(set(text[~missing]))
            for lev in levels[1:]:
                d = (text == lev).astype(float)
                d[missing] = np.nan
                cols.append(d)
                labels.append(f"{name}[{lev}]")
        else:
            cols.append(col.astype(float))
            labels.append(name)
    return Covariates(np.column_stack(cols), labels)


def orthonormal_basis(z: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis of col(Z), dropping aliased columns (e.g. a site absent in a subset)."""
    q, r, _ = linalg.qr(z, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int((diag > tol * max(diag[0], 1.0)).sum()) if diag.size else 0
    return q[:, :rank]


def zscore(a: np.ndarray) -> np.ndarray:
    sd = a.std(axis=0, ddof=1)
    return (a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def block_permutations(n: int, n_perm: int, rng: np.random.Generator, blocks: np.ndarray | None) -> np.ndarray:
    """(n_perm, n) row indices; within exchangeability blocks when given."""
    if blocks is None:
        return np.argsort(rng.random((n_perm, n)), axis=1)
    perms = np.tile(np.arange(n), (n_perm, 1))
    for b in np.unique(blocks):
        idx = np.flatnonzero(blocks == b)
        perms[:, idx] = idx[np.argsort(rng.random((n_perm, idx.size)), axis=1)]
    return perms


@dataclass
class GroupFit:
    """Statistics of one phenotype against several programmes on one set of complete rows."""

    beta: np.ndarray
    se: np.ndarray
    t: np.ndarray
    df: int
    n: int
    p_perm: np.ndarray | None


def fwl_fit(y: np.ndarray, x: np.ndarray, q: np.ndarray, perms: np.ndarray | None = None) -> GroupFit:
    """Standardised y (n,), programmes x (n, K), basis q of col(Z) (n, p); optional Freedman-Lane."""
    n = y.size
    ys, xs = zscore(y), zscore(x)
    e = ys - q @ (q.T @ ys)
    rx = xs - q @ (q.T @ xs)
    sxx = np.einsum("ij,ij->j", rx, rx)
    syy = float(e @ e)
    df = n - q.shape[1] - 1
    num = e @ rx
    beta = num / sxx
    rss = np.maximum(syy - num * beta, 1e-300)
    se = np.sqrt(rss / df / sxx)
    t = beta / se
    p_perm = None
    if perms is not None and perms.size:
        exceed = np.zeros(x.shape[1])
        thr = np.abs(t) * (1 - 1e-10)
        for start in range(0, perms.shape[0], _CHUNK):
            ep = e[perms[start:start + _CHUNK]]                     # (b, n) permuted residuals
            nump = ep @ rx                                         # (b, K)
            qe = ep @ q                                            # (b, p)
            syyp = syy - np.einsum("ij,ij->i", qe, qe)             # ‖M P e‖²
            rssp = np.maximum(syyp[:, None] - nump ** 2 / sxx, 1e-300)
            tp = (nump / sxx) / np.sqrt(rssp / df / sxx)
            exceed += (np.abs(tp) >= thr).sum(axis=0)
        p_perm = (1.0 + exceed) / (perms.shape[0] + 1.0)
    return GroupFit(beta=beta, se=se, t=t, df=df, n=n, p_perm=p_perm)


def residuals(y: np.ndarray, x: np.ndarray, q: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Full-model residuals (n, K) on the standardised scale, for spatial diagnostics."""
    ys, xs = zscore(y), zscore(x)
    e = ys - q @ (q.T @ ys)
    rx = xs - q @ (q.T @ xs)
    return e[:, None] - rx * beta[None, :]
