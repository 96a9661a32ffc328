"""Gene-set scores: decoupler's univariate linear model (ULM), vectorised over sets and chunks.

For one observation the expression of all G genes is regressed on the set's weights (1 for a
member, signed weights for a signature, 0 elsewhere); the score is the slope's t-value, exactly
``decoupler.mt.ulm`` (Badia-i-Mompel et al. 2022, Bioinformatics Advances, doi:10.1093/bioadv/vbac016):
``r = corr(x, w)``, ``t = r * sqrt((G-2) / ((1-r)(1+r)))``. Written here as sums over a sparse
matrix product so that many random sets (the null) cost one product per row block.

Significance: the null of a set is ``n_null`` random gene sets of the same size and weights whose
genes are drawn from the same expression bins as the set's genes (scanpy ``score_genes``
binning: genes ranked by mean log-expression, cut into ``n_bins`` equal-count bins). Per
observation ``p = (1 + #{null t >= t}) / (n_null + 1)`` (one-sided: programme active) and
``z = (t - mean null t) / sd null t``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

EPS = 2.2e-16


@dataclass
class SetMatrix:
    names: list[str]
    weights: sp.csc_matrix  # genes x sets
    n_found: list[int]


def set_matrix(sets: dict[str, tuple[Iterable[str], Iterable[float]]], genes: list[str]) -> SetMatrix:
    """Membership/weight matrix of the named sets over ``genes`` (absent genes are dropped)."""
    index = {g: i for i, g in enumerate(genes)}
    rows, cols, vals, found = [], [], [], []
    for j, (_name, (members, weights)) in enumerate(sets.items()):
        n = 0
        for g, w in zip(members, weights):
            i = index.get(g)
            if i is not None:
                rows.append(i)
                cols.append(j)
                vals.append(float(w))
                n += 1
        found.append(n)
    mat = sp.csc_matrix((vals, (rows, cols)), shape=(len(genes), len(sets)), dtype=np.float64)
    return SetMatrix(list(sets), mat, found)


def expression_bins(gene_means: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-count bins of genes by mean expression (ties broken by position, as a ranking)."""
    order = np.argsort(gene_means, kind="stable")
    bins = np.empty(len(gene_means), dtype=np.int64)
    bins[order] = np.arange(len(gene_means)) * n_bins // len(gene_means)
    return bins


def null_matrix(members: np.ndarray, weights: np.ndarray, bins: np.ndarray, n_null: int,
                rng: np.random.Generator) -> sp.csc_matrix:
    """``n_null`` random sets (genes x n_null): each member replaced by a random gene of its bin.

    Genes of the set itself are excluded; within one random set no gene repeats.
    """
    n_genes = len(bins)
    in_set = np.zeros(n_genes, dtype=bool)
    in_set[members] = True
    rows = np.empty((n_null, len(members)), dtype=np.int64)
    for b in np.unique(bins[members]):
        pos = np.nonzero(bins[members] == b)[0]
        pool = np.nonzero((bins == b) & ~in_set)[0]
        if len(pool) < len(pos):  # a tiny bin: widen to its neighbours
            pool = np.nonzero((np.abs(bins - b) <= 1) & ~in_set)[0]
        if len(pool) < len(pos):
            pool = np.nonzero(~in_set)[0]
        keys = rng.random((n_null, len(pool)))
        take = np.argpartition(keys, len(pos) - 1, axis=1)[:, : len(pos)] if len(pos) < len(pool) else \
            np.tile(np.arange(len(pool)), (n_null, 1))
        rows[:, pos] = pool[take]
    cols = np.repeat(np.arange(n_null), len(members))
    vals = np.tile(weights, n_null)
    return sp.csc_matrix((vals, (rows.ravel(), cols)), shape=(n_genes, n_null), dtype=np.float64)


def ulm_block(x: sp.csr_matrix, w: sp.spmatrix, w_sum: np.ndarray, w_sq: np.ndarray) -> np.ndarray:
    """ULM t-values (rows x sets) for one CSR block against weight columns ``w``."""
    g = x.shape[1]
    xw = x @ w
    xw = xw.toarray() if sp.issparse(xw) else np.asarray(xw)
    sx = np.asarray(x.sum(axis=1), dtype=np.float64)  # rows x 1
    sxx = np.asarray(x.multiply(x).sum(axis=1), dtype=np.float64)
    mean_x = sx / g
    var_x = (sxx - g * mean_x**2) / (g - 1)
    mean_w = w_sum / g
    var_w = (w_sq - g * mean_w**2) / (g - 1)
    cov = (xw - g * mean_x * mean_w[None, :]) / (g - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var_x * var_w[None, :])
        t = r * np.sqrt((g - 2) / ((1.0 - r + EPS) * (1.0 + r + EPS)))
    return np.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class ScoreResult:
    names: list[str]
    n_found: list[int]
    score: np.ndarray  # obs x sets
    z: np.ndarray
    p: np.ndarray
    null_mean: np.ndarray
    null_sd: np.ndarray
    agg_null_means: np.ndarray  # sets x n_null: each random set's mean score over observations


def score_sets(blocks: Iterator[tuple[int, sp.csr_matrix]] | list, n_obs: int, genes: list[str],
               sets: dict[str, tuple[list[str], list[float]]], gene_means: np.ndarray | None,
               n_null: int, n_bins: int, seed: int) -> ScoreResult:
    """Observed ULM scores and their matched-random-set null, over row blocks of log expression."""
    sm = set_matrix(sets, genes)
    n_sets = len(sm.names)
    scored = [j for j in range(n_sets) if sm.n_found[j] >= 2]
    score = np.zeros((n_obs, n_sets), np.float32)
    z = np.zeros_like(score)
    p = np.ones_like(score)
    nmean = np.zeros_like(score)
    nsd = np.zeros_like(score)
    agg = np.zeros((n_sets, max(n_null, 1)), np.float64)
    mats = [sm.weights]
    if n_null > 0 and scored:
        rng = np.random.default_rng(seed)
        bins = expression_bins(gene_means, min(n_bins, len(genes)))
        for j in scored:
            col = sm.weights[:, j]
            members, weights = col.indices, col.data
            mats.append(null_matrix(members, weights, bins, n_null, rng))
    w_all = sp.hstack(mats, format="csc")
    w_sum = np.asarray(w_all.sum(axis=0)).ravel()
    w_sq = np.asarray(w_all.multiply(w_all).sum(axis=0)).ravel()
    for start, block in blocks:
        t = ulm_block(block, w_all, w_sum, w_sq)
        stop = start + block.shape[0]
        score[start:stop] = t[:, :n_sets]
        if n_null > 0:
            for k, j in enumerate(scored):
                tn = t[:, n_sets + k * n_null: n_sets + (k + 1) * n_null]
                obs = t[:, j:j + 1]
                m, s = tn.mean(axis=1), tn.std(axis=1, ddof=1)
                nmean[start:stop, j] = m
                nsd[start:stop, j] = s
                z[start:stop, j] = np.divide(obs[:, 0] - m, s, out=np.zeros_like(m), where=s > 0)
                p[start:stop, j] = (1.0 + (tn >= obs).sum(axis=1)) / (n_null + 1.0)
                agg[j] += tn.sum(axis=0)
    agg /= max(n_obs, 1)
    return ScoreResult(sm.names, sm.n_found, score, z, p, nmean, nsd, agg)


def gene_means_of(blocks: Iterator[tuple[int, sp.csr_matrix]], n_vars: int) -> tuple[np.ndarray, int]:
    total = np.zeros(n_vars, np.float64)
    n = 0
    for _, block in blocks:
        total += np.asarray(block.sum(axis=0)).ravel()
        n += block.shape[0]
    return total / max(n, 1), n
