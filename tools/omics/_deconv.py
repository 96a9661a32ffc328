"""Spot deconvolution by non-negative least squares (scipy.optimize.nnls), proportions sum to 1.

With a single-cell reference: each cell type's profile is its pooled counts over the selected
genes, normalised to sum 1; genes are the union of each type's top markers (log fold change of
its profile against the other types' mean). A spot's counts over those genes, normalised to sum
1, are fitted as a non-negative mixture of the profiles, with each gene weighted by
1/sqrt(mean profile) (Poisson-like variance), and the coefficients normalised to sum 1.

Without a reference (``markers``): the profile of a type is the indicator of its shipped marker
genes present in the data, and each marker gene is scaled by its mean over spots; the result is a
relative marker-based composition, not an absolute one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def reference_profiles(counts: sp.csr_matrix, labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Pooled, sum-normalised profiles (types x genes) from labelled single-cell counts."""
    types = sorted({str(t) for t in labels})
    lab = np.asarray([str(t) for t in labels])
    prof = np.vstack([np.asarray(counts[lab == t].sum(axis=0)).ravel() for t in types]).astype(np.float64)
    prof /= np.maximum(prof.sum(axis=1, keepdims=True), 1e-12)
    return types, prof


def select_markers(prof: np.ndarray, n_per_type: int) -> np.ndarray:
    """Indices of each type's top genes by log fold change of its profile vs the others' mean."""
    eps = 1e-7
    chosen: set[int] = set()
    for k in range(prof.shape[0]):
        others = np.delete(prof, k, axis=0).mean(axis=0) if prof.shape[0] > 1 else np.zeros(prof.shape[1])
        lfc = np.log2(prof[k] + eps) - np.log2(others + eps)
        lfc[prof[k] < np.quantile(prof[k], 0.5)] = -np.inf  # expressed genes only
        chosen.update(np.argsort(-lfc)[:n_per_type].tolist())
    return np.array(sorted(chosen))



def nnls_proportions(y: np.ndarray, a: np.ndarray, gene_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """NNLS proportions (spots x types) of rows ``y`` (spots x genes) on profiles ``a`` (genes x types).

    Returns (proportions, residual norm per spot). A spot with no signal gets uniform
    proportions and a residual of NaN.
    """
    from scipy.optimize import nnls  # lazy: scipy.optimize costs ~0.25 s of import
    w = np.ones(a.shape[0]) if gene_weight is None else gene_weight
    aw = a * w[:, None]
    props = np.zeros((y.shape[0], a.shape[1]))
    resid = np.full(y.shape[0], np.nan)
    for i in range(y.shape[0]):
        total = y[i].sum()
        if total <= 0:
            props[i] = 1.0 / a.shape[1]
            continue
        coef, rnorm = nnls(aw, (y[i] / total) * w)
        s = coef.sum()
        if s <= 0:
            props[i] = 1.0 / a.shape[1]
            continue
        props[i] = coef / s
        resid[i] = rnorm
    return props, resid
