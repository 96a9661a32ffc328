"""Feature spaces of the fusion models: which imaging phenotypes and omics summaries, and their scaling.

Why one module: the shipped weights are only meaningful with the exact transforms they were trained
with, so the transforms (log of volumes and mass, log1p of LGE burden, z-scores) and the omics
summary (programme scores on standardised log-CPM, plus principal components of the panel) are
fitted once, stored inside the weights file and reused for every new patient.

Missing values are NaN throughout; a boolean mask says what was observed. Imaging features fall in
groups (cine function, regional thickness, LGE, mapping, demographics) because a study provides
or lacks a whole group at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

IMAGING_FEATURES: tuple[str, ...] = (
    "lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct",
    "wall_mean_mm", "wall_max_mm", "lge_burden_pct", "native_t1_ms", "t2_ms", "ecv_pct",
    "age_years", "sex_male",
)
IMAGING_GROUPS: dict[str, tuple[str, ...]] = {
    "cine_function": ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct"),
    "regional": ("wall_mean_mm", "wall_max_mm"),
    "lge": ("lge_burden_pct",),
    "mapping": ("native_t1_ms", "t2_ms", "ecv_pct"),
    "demographics": ("age_years", "sex_male"),
}
IMAGING_UNITS = {"ml": "ml", "pct": "%", "g": "g", "mm": "mm", "ms": "ms", "years": "years", "male": "0/1"}
_LOG = ("lv_edv_ml", "lv_esv_ml", "lv_mass_g", "rv_edv_ml", "rv_esv_ml")
_LOG1P = ("lge_burden_pct",)
N_OMICS_PCS = 6


def feature_unit(name: str) -> str:
    return IMAGING_UNITS.get(name.rsplit("_", 1)[-1], "")


@dataclass
class FusionData:
    """Model-ready arrays of n patients. ``imaging``/``omics`` are standardised with NaN for missing."""

    ids: list[str]
    imaging: np.ndarray  # (n, p) float32
    omics: np.ndarray  # (n, q) float32
    site: np.ndarray  # (n,) int64, -1 unknown
    truth: np.ndarray | None = None  # (n, k) true factors + age (oracle only)
    targets_true: np.ndarray | None = None  # (n, P) true programme activities (evaluation only)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx) -> FusionData:
        idx = np.asarray(idx)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return FusionData([self.ids[i] for i in idx], self.imaging[idx], self.omics[idx], self.site[idx],
                          pick(self.truth), pick(self.targets_true))

    def only(self, modalities: tuple[str, ...]) -> FusionData:
        """The same patients with the modalities not named blanked out (as if never measured)."""
        img = self.imaging if "imaging" in modalities else np.full_like(self.imaging, np.nan)
        om = self.omics if "omics" in modalities else np.full_like(self.omics, np.nan)
        return FusionData(self.ids, img, om, self.site, self.truth, self.targets_true)

    @property
    def has_imaging(self) -> np.ndarray:
        return ~np.isnan(self.imaging).all(1)

    @property
    def has_omics(self) -> np.ndarray:
        return ~np.isnan(self.omics).all(1)


@dataclass
class Preprocessor:
    """Fitted transforms: imaging z-scores, omics gene standardisation, programme sets and PCA basis."""

    programmes: list[str]
    genes: list[str]
    set_matrix: np.ndarray  # (G, P) sign / n_genes: programme score = z_genes @ set_matrix
    img_mean: np.ndarray = field(default=None)
    img_sd: np.ndarray = field(default=None)
    gene_mean: np.ndarray = field(default=None)
    gene_sd: np.ndarray = field(default=None)
    pcs: np.ndarray = field(default=None)  # (G, N_OMICS_PCS)
    om_mean: np.ndarray = field(default=None)
    om_sd: np.ndarray = field(default=None)
    n_sites: int = 3

    @property
    def omics_features(self) -> list[str]:
        return [f"score_{p}" for p in self.programmes] + [f"omics_pc{i + 1}" for i in range(self.pcs.shape[1])]

    # ---- imaging
    @staticmethod
    def _img_transform(df: pd.DataFrame) -> np.ndarray:
        x = df.reindex(columns=list(IMAGING_FEATURES)).to_numpy(np.float64, na_value=np.nan).copy()
        for j, name in enumerate(IMAGING_FEATURES):
            if name in _LOG:
                x[:, j] = np.log(np.clip(x[:, j], 1.0, None))
            elif name in _LOG1P:
                x[:, j] = np.log1p(np.clip(x[:, j], 0.0, None))
        return x

    def imaging_matrix(self, df: pd.DataFrame) -> np.ndarray:
        return ((self._img_transform(df) - self.img_mean) / self.img_sd).astype(np.float32)

    def imaging_raw(self, z: np.ndarray) -> np.ndarray:
        """Back from standardised to natural units (for reporting)."""
        x = np.asarray(z, np.float64) * self.img_sd + self.img_mean
        for j, name in enumerate(IMAGING_FEATURES):
            if name in _LOG:
                x[..., j] = np.exp(x[..., j])
            elif name in _LOG1P:
                x[..., j] = np.expm1(x[..., j])
        return x

    # ---- omics
    def gene_z(self, counts: pd.DataFrame) -> np.ndarray:
        """Standardised log-CPM over the panel; genes absent from ``counts`` are NaN (scores skip them)."""
        c = counts.reindex(columns=self.genes).to_numpy(np.float64, na_value=np.nan)
        tot = np.nansum(c, axis=1, keepdims=True)
        logcpm = np.log1p(c / np.maximum(tot, 1.0) * 1e6)
        return (logcpm - self.gene_mean) / self.gene_sd

    def programme_scores(self, z: np.ndarray) -> np.ndarray:
        present = ~np.isnan(z)
        w = np.abs(self.set_matrix) > 0
        num = np.nan_to_num(z) @ self.set_matrix
        frac = (present.astype(float) @ w) / np.maximum(w.sum(0), 1)
        return num / np.maximum(frac, 1e-9)

    def omics_raw_features(self, counts: pd.DataFrame) -> np.ndarray:
        z = self.gene_z(counts)
        pcs = np.nan_to_num(z) @ self.pcs
        return np.column_stack([self.programme_scores(z), pcs])

    def omics_matrix(self, counts: pd.DataFrame) -> np.ndarray:
        return ((self.omics_raw_features(counts) - self.om_mean) / self.om_sd).astype(np.float32)

    def scores_to_standard(self, scores: dict[str, float]) -> np.ndarray:
        """Programme scores given in the raw score scale -> a standardised omics row (PCs missing)."""
        row = np.full(len(self.omics_features), np.nan)
        for j, p in enumerate(self.programmes):
            if p in scores:
                row[j] = (scores[p] - self.om_mean[j]) / self.om_sd[j]
        return row.astype(np.float32)

    # ---- fitting
    @classmethod
    def fit(cls, imaging: pd.DataFrame, counts: pd.DataFrame, gene_sets: dict[str, dict[str, float]],
            n_sites: int) -> Preprocessor:
        genes = list(counts.columns)
        index = {g: i for i, g in enumerate(genes)}
        programmes = list(gene_sets)
        sm = np.zeros((len(genes), len(programmes)))
        for p, name in enumerate(programmes):
            members = [(index[g], s) for g, s in gene_sets[name].items() if g in index]
            for i, s in members:
                sm[i, p] = s / len(members)
        pre = cls(programmes=programmes, genes=genes, set_matrix=sm, n_sites=n_sites)
        x = cls._img_transform(imaging)
        pre.img_mean, pre.img_sd = np.nanmean(x, 0), np.nanstd(x, 0) + 1e-6
        c = counts.to_numpy(np.float64)
        logcpm = np.log1p(c / c.sum(1, keepdims=True) * 1e6)
        pre.gene_mean, pre.gene_sd = logcpm.mean(0), logcpm.std(0) + 1e-6
        z = (logcpm - pre.gene_mean) / pre.gene_sd
        _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
        pre.pcs = vt[:N_OMICS_PCS].T
        raw = np.column_stack([pre.programme_scores(z), z @ pre.pcs])
        pre.om_mean, pre.om_sd = raw.mean(0), raw.std(0) + 1e-6
        return pre

    def state(self) -> dict:
        arrays = {k: np.asarray(getattr(self, k), np.float64) for k in
                  ("set_matrix", "img_mean", "img_sd", "gene_mean", "gene_sd", "pcs", "om_mean", "om_sd")}
        return {"programmes": list(self.programmes), "genes": list(self.genes), "n_sites": int(self.n_sites), **arrays}

    @classmethod
    def from_state(cls, st: dict) -> Preprocessor:
        arr = {k: np.asarray(st[k], np.float64) for k in
               ("set_matrix", "img_mean", "img_sd", "gene_mean", "gene_sd", "pcs", "om_mean", "om_sd")}
        return cls(programmes=list(st["programmes"]), genes=list(st["genes"]), n_sites=int(st["n_sites"]), **arr)

    def transform_cohort(self, cohort) -> FusionData:
        """A simulated :class:`~cardiomics.synthetic.cohort.Cohort` as model-ready arrays (truth attached)."""
        ids = list(cohort.patients.index)
        img = self.imaging_matrix(cohort.imaging.loc[ids])
        om = np.full((len(ids), len(self.omics_features)), np.nan, np.float32)
        pos = {pid: i for i, pid in enumerate(ids)}
        if len(cohort.counts):
            rows = [pos[p] for p in cohort.counts.index]
            om[rows] = self.omics_matrix(cohort.counts)
        truth = np.column_stack([cohort.factors.loc[ids].to_numpy(), cohort.patients.loc[ids, ["age_years", "sex_male"]].to_numpy()])
        return FusionData(ids, img, om, cohort.patients.loc[ids, "site"].to_numpy(np.int64),
                          truth.astype(np.float64), cohort.activities.loc[ids, self.programmes].to_numpy(np.float64))
