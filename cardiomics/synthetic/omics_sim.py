"""Simulated transcriptomes with known truth, deterministic by seed.

- ``simulate_spatial``: spots on a hexagonal grid mixed from known cell-type expression profiles
  with known proportions (spatial domains of different composition), negative-binomial counts,
  and an optional programme planted (genes scaled up) in a known random subset of spots.
- ``simulate_reference``: single cells of the same cell types (a deconvolution reference).
- ``simulate_bulk``: bulk samples with a planted programme in known samples, and optionally a
  signed signature (e.g. a heart-failure consensus) imposed on the "case" samples.

Every file is a valid ``.h5ad`` with raw counts in ``layers['counts']`` and the truth in ``obs``,
``obsm`` and ``uns`` (``uns['omics_kind']`` declares bulk / single_cell / spatial). Gene names are
the caller's symbols (marker lists) followed by neutral filler names ``SIMG00001``...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

DEFAULT_TYPES = {f"type{k}": [f"T{k}M{i:02d}" for i in range(12)] for k in range(5)}


@dataclass
class Profiles:
    genes: list[str]
    cell_types: list[str]
    profiles: np.ndarray  # cell types x genes, rows sum to 1


def celltype_profiles(markers: dict[str, list[str]] | None = None, n_genes: int = 2000,
                      extra_genes: list[str] | None = None, seed: int = 0,
                      marker_fold: tuple[float, float] = (8.0, 20.0)) -> Profiles:
    """Expression profiles of cell types: a shared log-normal baseline, per-type noise, markers up."""
    rng = np.random.default_rng(seed)
    markers = markers or DEFAULT_TYPES
    genes: list[str] = []
    for g in [g for gs in markers.values() for g in gs] + list(extra_genes or []):
        if g not in genes:
            genes.append(g)
    genes += [f"SIMG{i:05d}" for i in range(max(0, n_genes - len(genes)))]
    index = {g: i for i, g in enumerate(genes)}
    base = rng.lognormal(0.0, 1.2, len(genes))
    types = list(markers)
    prof = base[None, :] * rng.lognormal(0.0, 0.3, (len(types), len(genes)))
    for k, t in enumerate(types):
        idx = [index[g] for g in markers[t]]
        prof[k, idx] *= rng.uniform(*marker_fold, len(idx))
    prof /= prof.sum(axis=1, keepdims=True)
    return Profiles(genes, types, prof)


def _nb(rng: np.random.Generator, mu: np.ndarray, theta: float) -> np.ndarray:
    """Negative-binomial counts with mean ``mu`` and dispersion ``theta`` (gamma-Poisson)."""
    lam = rng.gamma(theta, mu / theta)
    return rng.poisson(lam).astype(np.float32)


def _hex_grid(n_side: int) -> np.ndarray:
    rr, cc = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    x = cc * 2.0 + (rr % 2)
    y = rr * np.sqrt(3.0)
    return np.column_stack([x.ravel(), y.ravel()]) * 50.0


def simulate_spatial(n_side: int = 30, seed: int = 0, markers: dict[str, list[str]] | None = None,
                     n_genes: int = 2000, programme_genes: list[str] | None = None,
                     programme_fraction: float = 0.2, programme_fold: float = 3.0,
                     n_domains: int = 4, depth_mean: float = 4000.0, theta: float = 10.0,
                     profiles: Profiles | None = None):
    """A spatial (Visium-like) AnnData with known proportions, domains and planted programme.

    Truth: ``obsm['proportions_true']`` (spots x cell types, ``uns['cell_types']`` order),
    ``obs['domain_true']``, ``obs['programme_active']``.
    """
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    prof = profiles or celltype_profiles(markers, n_genes, programme_genes, seed)
    n_types = len(prof.cell_types)
    coords = _hex_grid(n_side)
    n = len(coords)
    centres = coords[rng.choice(n, n_domains, replace=False)]
    domain = np.argmin(((coords[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    alphas = np.full((n_domains, n_types), 0.6)
    for d in range(n_domains):
        alphas[d, rng.choice(n_types, min(2, n_types), replace=False)] = 4.0
    props = np.vstack([rng.dirichlet(alphas[d]) for d in domain])
    depth = rng.lognormal(np.log(depth_mean), 0.3, n)
    mu = depth[:, None] * (props @ prof.profiles)
    active = np.zeros(n, dtype=bool)
    if programme_genes:
        active[rng.choice(n, int(round(programme_fraction * n)), replace=False)] = True
        idx = [prof.genes.index(g) for g in programme_genes if g in prof.genes]
        mu[np.ix_(active, idx)] *= programme_fold
    counts = sp.csr_matrix(_nb(rng, mu, theta))
    obs = pd.DataFrame({"domain_true": pd.Categorical(domain.astype(str)), "programme_active": active},
                       index=[f"spot{i:05d}" for i in range(n)])
    adata = ad.AnnData(X=counts.copy(), obs=obs, var=pd.DataFrame(index=prof.genes))
    adata.layers["counts"] = counts
    adata.obsm["spatial"] = coords
    adata.obsm["proportions_true"] = props
    adata.uns["cell_types"] = np.array(prof.cell_types)
    adata.uns["omics_kind"] = "spatial"
    return adata


def simulate_reference(profiles: Profiles, n_per_type: int = 100, seed: int = 1,
                       depth_mean: float = 3000.0, theta: float = 5.0):
    """Single cells of each type (``obs['cell_type']``) drawn from ``profiles``."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(profiles.cell_types)), n_per_type)
    depth = rng.lognormal(np.log(depth_mean), 0.4, len(labels))
    mu = depth[:, None] * profiles.profiles[labels]
    counts = sp.csr_matrix(_nb(rng, mu, theta))
    obs = pd.DataFrame({"cell_type": pd.Categorical([profiles.cell_types[k] for k in labels])},
                       index=[f"cell{i:06d}" for i in range(len(labels))])
    adata = ad.AnnData(X=counts.copy(), obs=obs, var=pd.DataFrame(index=profiles.genes))
    adata.layers["counts"] = counts
    adata.uns["omics_kind"] = "single_cell"
    return adata


def simulate_bulk(n_samples: int = 20, seed: int = 0, markers: dict[str, list[str]] | None = None,
                  n_genes: int = 2000, programme_genes: list[str] | None = None,
                  active_fraction: float = 0.5, programme_fold: float = 2.0,
                  signature: dict[str, float] | None = None, signature_log_fold: float = 1.0,
                  depth_mean: float = 2e7, theta: float = 25.0):
    """Bulk samples (``obs['programme_active']``, ``obs['case']``) with known planted effects.

    ``signature`` maps genes to signed weights; in case samples each gene's mean is multiplied by
    ``exp(signature_log_fold * weight / max|weight|)``. Genes of the signature join the panel.
    """
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    extra = list(programme_genes or []) + list(signature or {})
    prof = celltype_profiles(markers, n_genes, extra, seed)
    n_types = len(prof.cell_types)
    mix = rng.dirichlet(np.full(n_types, 20.0), n_samples)
    depth = rng.lognormal(np.log(depth_mean), 0.2, n_samples)
    mu = depth[:, None] * (mix @ prof.profiles)
    n_active = int(round(active_fraction * n_samples))
    active = np.zeros(n_samples, dtype=bool)
    active[rng.choice(n_samples, n_active, replace=False)] = True
    index = {g: i for i, g in enumerate(prof.genes)}
    if programme_genes:
        idx = [index[g] for g in programme_genes]
        mu[np.ix_(active, idx)] *= programme_fold
    if signature:
        idx = np.array([index[g] for g in signature])
        w = np.array(list(signature.values()), dtype=np.float64)
        mu[np.ix_(active, idx)] *= np.exp(signature_log_fold * w / np.abs(w).max())[None, :]
    counts = _nb(rng, mu, theta)
    obs = pd.DataFrame({"programme_active": active, "case": active},
                       index=[f"sample{i:03d}" for i in range(n_samples)])
    adata = ad.AnnData(X=counts.copy(), obs=obs, var=pd.DataFrame(index=prof.genes))
    adata.layers["counts"] = counts
    adata.uns["omics_kind"] = "bulk"
    return adata


def write(adata, path: str | Path) -> Path:
    """Write an AnnData as ``.h5ad`` (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    return path
