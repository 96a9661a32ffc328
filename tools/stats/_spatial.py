"""Moran's I of regression residuals on a k-nearest-neighbour graph of spot coordinates.

Residual spatial autocorrelation means neighbouring rows are not independent: the association
p-values then overstate the evidence. Moran (1950, Biometrika 37:17).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy import sparse


def knn_weights(coords: np.ndarray, k: int = 6) -> sparse.csr_matrix:
    """Row-standardised k-nearest-neighbour weights (self excluded)."""
    from scipy import sparse  # lazy: scikit-learn and scipy.sparse cost ~0.7 s of import
    from sklearn.neighbors import NearestNeighbors

    n = coords.shape[0]
    k = min(k, n - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)
    rows = np.repeat(np.arange(n), k)
    return sparse.csr_matrix((np.full(n * k, 1.0 / k), (rows, idx[:, 1:].ravel())), shape=(n, n))


def morans_i(E: np.ndarray, W: sparse.csr_matrix) -> np.ndarray:
    """Moran's I of each column of E (n, T) for row-standardised W (so S0 = n)."""
    Ec = E - E.mean(axis=0)
    return np.einsum("ij,ij->j", Ec, W @ Ec) / np.einsum("ij,ij->j", Ec, Ec)


def moran_null(E: np.ndarray, W: sparse.csr_matrix, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """Permutation null of Moran's I: (n_perm, T) values after randomly relabelling rows."""
    return np.stack([morans_i(E[rng.permutation(E.shape[0])], W) for _ in range(n_perm)])


def moran_p(obs: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided (positive autocorrelation) permutation p-values of observed I against the null."""
    return (1.0 + (null >= obs[..., None, :] - 1e-12).sum(axis=-2)) / (null.shape[0] + 1.0)
