"""Evaluation metrics of a shared latent space and of virtual transcriptomics, on held-out patients.

- ``r2_true``: squared Pearson correlation of predicted vs true programme activity (scale-free: the
  measured score and the planted activity live on different scales).
- ``r2_measured``: coefficient of determination vs the measured (standardised) programme score.
- ``foscttm``: fraction of samples closer than the true match (Liu et al. 2019), imaging vs omics
  embeddings of the same patients; 0 is perfect, 0.5 is chance.
- ``site_entropy``: mean normalised entropy of site labels among each patient's k nearest
  neighbours (1 = neighbours drawn evenly from all sites, 0 = all from one site), an iLISI-like
  batch-mixing score.
- ``factor_probe``: Pearson r of a ridge probe from the latent to each true factor, fitted on the
  training embeddings and scored on the held-out ones.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.linear_model import Ridge
from sklearn.neighbors import NearestNeighbors


def r2_true(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(pred[:, j], truth[:, j])[0, 1] ** 2 for j in range(truth.shape[1])])


def r2_measured(pred: np.ndarray, measured: np.ndarray) -> np.ndarray:
    ss_res = ((measured - pred) ** 2).sum(0)
    ss_tot = ((measured - measured.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / ss_tot


def coverage(lower: np.ndarray, upper: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return ((measured >= lower) & (measured <= upper)).mean(0)


def foscttm(a: np.ndarray, b: np.ndarray) -> float:
    """Rows of ``a`` and ``b`` are the same samples in two embeddings (same space)."""
    d = cdist(a, b)
    true = np.diag(d)
    n = len(a)
    fa = (d < true[:, None]).sum(1) / (n - 1)
    fb = (d < true[None, :]).sum(0) / (n - 1)
    return float(np.mean((fa + fb) / 2.0))


def site_entropy(emb: np.ndarray, site: np.ndarray, k: int = 15) -> float:
    sites = np.unique(site)
    if len(sites) < 2:
        return 1.0
    nn = NearestNeighbors(n_neighbors=k + 1).fit(emb)
    idx = nn.kneighbors(emb, return_distance=False)[:, 1:]
    lab = site[idx]
    ent = np.zeros(len(emb))
    for s in sites:
        p = (lab == s).mean(1)
        ent -= np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
    return float(np.mean(ent) / np.log(len(sites)))


def factor_probe(train_emb: np.ndarray, train_factors: np.ndarray, test_emb: np.ndarray,
                 test_factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Pearson r, R²) per factor of a ridge probe latent -> factor."""
    reg = Ridge(alpha=1e-2).fit(train_emb, train_factors)
    pred = reg.predict(test_emb)
    r = np.array([np.corrcoef(pred[:, j], test_factors[:, j])[0, 1] for j in range(test_factors.shape[1])])
    return r, r2_measured(pred, test_factors)
