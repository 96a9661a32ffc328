"""Spatial domains: PCA of log expression, smoothed over the spots' neighbourhood graph, KMeans.

Features are the top principal components of log-normalised expression (highly variable genes
when known). Each spot's features are averaged with its ``n_neighbors`` nearest spots
(``smoothing`` weight on the neighbour mean), which makes domains spatially coherent; KMeans
(seeded, 10 starts) clusters the smoothed features. With ``n_domains`` unset, the number with the
best silhouette between 3 and 8 is chosen.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def knn_graph(coords: np.ndarray, n_neighbors: int) -> sp.csr_matrix:
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors + 1, len(coords))
    nn = NearestNeighbors(n_neighbors=k).fit(coords)
    _, idx = nn.kneighbors(coords)
    rows = np.repeat(np.arange(len(coords)), k - 1)
    g = sp.csr_matrix((np.ones(rows.size), (rows, idx[:, 1:].ravel())), shape=(len(coords),) * 2)
    return ((g + g.T) > 0).astype(np.float64).tocsr()


def pca_features(x: np.ndarray, n_comps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.decomposition import PCA

    n_comps = max(1, min(n_comps, x.shape[0] - 1, x.shape[1]))
    pca = PCA(n_components=n_comps, svd_solver="full", random_state=seed)
    return pca.fit_transform(x - x.mean(axis=0)), pca.explained_variance_ratio_


def smooth(features: np.ndarray, graph: sp.csr_matrix, weight: float, n_iter: int = 1) -> np.ndarray:
    deg = np.asarray(graph.sum(axis=1)).ravel()
    norm = sp.diags(np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)) @ graph
    out = features
    for _ in range(n_iter):
        out = (1 - weight) * out + weight * (norm @ out)
    return out


def cluster(features: np.ndarray, n_domains: int | None, seed: int) -> tuple[np.ndarray, float, int]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # tiny problems: OpenMP threads only contend
        return _cluster(features, n_domains, seed, KMeans, silhouette_score)


def _cluster(features, n_domains, seed, KMeans, silhouette_score):
    candidates = [n_domains] if n_domains else list(range(3, min(8, len(features) - 1) + 1))
    best = None
    for k in candidates:
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)
        sil = float(silhouette_score(features, labels)) if len(set(labels)) > 1 else 0.0
        if best is None or sil > best[1] + 1e-12:
            best = (labels, sil, k)
    labels, sil, k = best
    # relabel by size (largest domain first) so labels are stable
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    return remap[labels], sil, k


def coherence(labels: np.ndarray, graph: sp.csr_matrix) -> float:
    """Fraction of neighbour pairs that share a domain."""
    g = sp.triu(graph, k=1).tocoo()
    if g.nnz == 0:
        return float("nan")
    return float((labels[g.row] == labels[g.col]).mean())
