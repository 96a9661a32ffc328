"""Baselines behind the fusion interface: linear CCA, late fusion (per-modality PCA), and an oracle.

Why: a deep fusion model is only worth its complexity if it beats simple linear methods on the same
split, and is judged against the ceiling set by the truth. Baselines impute missing features with
the training mean (0 after standardisation) and remove site by centring each site on the training
set's per-site means ("regressing site out of the inputs"); an unknown site is left uncentred.
"""

from __future__ import annotations

import numpy as np
from sklearn.cross_decomposition import CCA
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge

from .base import MODALITIES, Encoding
from .features import FusionData


class _SiteCentring:
    def fit(self, x: np.ndarray, site: np.ndarray) -> _SiteCentring:
        self.means = {}
        for s in np.unique(site[site >= 0]):
            rows = x[site == s]
            self.means[int(s)] = np.nan_to_num(np.nanmean(rows, 0)) if len(rows) and not np.isnan(rows).all() else 0.0
        return self

    def __call__(self, x: np.ndarray, site: np.ndarray) -> np.ndarray:
        out = np.nan_to_num(np.array(x, np.float64))
        obs = ~np.isnan(x)
        for s, mu in self.means.items():
            rows = site == s
            out[rows] = (out[rows] - mu) * obs[rows]
        return out


class CCABaseline:
    """Canonical correlation analysis on paired patients; programmes regressed on the imaging variates."""

    name = "cca"

    def __init__(self, n_programmes: int, n_components: int = 4) -> None:
        self.n_programmes, self.k = n_programmes, n_components

    def fit(self, data: FusionData) -> CCABaseline:
        self.ci = _SiteCentring().fit(data.imaging, data.site)
        self.co = _SiteCentring().fit(data.omics, data.site)
        pair = data.has_imaging & data.has_omics
        x, y = self.ci(data.imaging[pair], data.site[pair]), self.co(data.omics[pair], data.site[pair])
        self.cca = CCA(n_components=self.k, max_iter=2000).fit(x, y)
        # imaging -> programmes through the canonical imaging variates (CCA regression)
        self.reg = Ridge(alpha=1e-3).fit(self.cca.transform(x), np.nan_to_num(data.omics[pair, : self.n_programmes]))
        return self

    def encode(self, data: FusionData, modalities: tuple[str, ...] = MODALITIES) -> Encoding:
        x, y = self.ci(data.imaging, data.site), self.co(data.omics, data.site)
        xs, ys = self.cca.transform(x, y)
        use_i = data.has_imaging & ("imaging" in modalities)
        use_o = data.has_omics & ("omics" in modalities)
        n = np.maximum(use_i.astype(int) + use_o, 1)[:, None]
        mean = (xs * use_i[:, None] + ys * use_o[:, None]) / n
        return Encoding(mean, np.zeros_like(mean))

    def predict_programmes(self, data: FusionData) -> np.ndarray:
        return self.reg.predict(self.cca.transform(self.ci(data.imaging, data.site)))


class LateFusionBaseline:
    """Per-modality PCA, concatenated for the joint space; ridge from imaging PCs to programmes."""

    name = "late_fusion"

    def __init__(self, n_programmes: int, n_components: int = 4, alpha: float = 1.0) -> None:
        self.n_programmes, self.k, self.alpha = n_programmes, n_components, alpha

    def fit(self, data: FusionData) -> LateFusionBaseline:
        self.ci = _SiteCentring().fit(data.imaging, data.site)
        self.co = _SiteCentring().fit(data.omics, data.site)
        xi = self.ci(data.imaging[data.has_imaging], data.site[data.has_imaging])
        xo = self.co(data.omics[data.has_omics], data.site[data.has_omics])
        self.pi = PCA(self.k, random_state=0).fit(xi)
        self.po = PCA(self.k, random_state=0).fit(xo)
        pair = data.has_imaging & data.has_omics
        zi = self.pi.transform(self.ci(data.imaging[pair], data.site[pair]))
        self.reg = Ridge(alpha=self.alpha).fit(zi, np.nan_to_num(data.omics[pair, : self.n_programmes]))
        return self

    def encode(self, data: FusionData, modalities: tuple[str, ...] = MODALITIES) -> Encoding:
        zi = self.pi.transform(self.ci(data.imaging, data.site)) * (data.has_imaging & ("imaging" in modalities))[:, None]
        zo = self.po.transform(self.co(data.omics, data.site)) * (data.has_omics & ("omics" in modalities))[:, None]
        mean = np.column_stack([zi, zo])
        return Encoding(mean, np.zeros_like(mean))

    def predict_programmes(self, data: FusionData) -> np.ndarray:
        return self.reg.predict(self.pi.transform(self.ci(data.imaging, data.site)))


class Oracle:
    """Sees the true latent factors (and age, sex): the ceiling for any model of these data."""

    name = "oracle"

    def __init__(self, n_programmes: int) -> None:
        self.n_programmes = n_programmes

    def fit(self, data: FusionData) -> Oracle:
        rows = data.has_omics
        self.reg = Ridge(alpha=1e-3).fit(data.truth[rows], data.omics[rows, : self.n_programmes])
        return self

    def encode(self, data: FusionData, modalities: tuple[str, ...] = MODALITIES) -> Encoding:
        return Encoding(data.truth[:, :4].copy(), np.zeros((len(data), 4)))

    def predict_programmes(self, data: FusionData) -> np.ndarray:
        return self.reg.predict(data.truth)
