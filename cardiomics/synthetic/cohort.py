"""A synthetic paired imaging-omics cohort with known truth, deterministic by seed.

Why: fusion models and virtual transcriptomics can only be validated where the truth is known.
Each patient carries four latent disease factors (dilation, hypertrophy, focal fibrosis,
inflammation), confounders (age, sex) and a site (scanner field strength, contouring habits,
omics batch). They drive

- CMR phenotypes computed from geometry parameters (LV/RV volumes and EF, LV mass from an
  empirical fit to the cine phantom's rendered labels, wall thickness summaries, LGE burden,
  native T1 / T2 / ECV mapping), with measurement noise and site effects; for a few patients
  (``render_images``) the geometry is rendered through :mod:`cardiomics.synthetic.phantom` as a
  cine stack and an LGE image, so the imaging path is real;
- transcriptomic programme activities (the shipped cardiac programmes) as linear functions of the
  factors plus private noise, and bulk negative-binomial counts over a gene panel holding every
  programme gene, with per-site batch shifts.

Two seeds: ``world_seed`` fixes the world (gene baselines, gene weights, batch shifts), ``seed``
draws the patients, so cohorts with different ``seed`` share one biology and can serve as
training and held-out sets. Missingness (imaging-only, omics-only, no mapping) is recorded.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

FACTORS = ("dilation", "hypertrophy", "fibrosis", "inflammation")
IMAGING_FEATURES = (
    "lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct",
    "wall_mean_mm", "wall_max_mm", "lge_burden_pct", "native_t1_ms", "t2_ms", "ecv_pct",
    "age_years", "sex_male",
)
MAPPING_FEATURES = ("native_t1_ms", "t2_ms", "ecv_pct")
# programme x factor loadings (dilation, hypertrophy, fibrosis, inflammation) and age (per 10 years)
_LOADINGS = {
    "fibrosis_ecm": ((0.30, 0.10, 0.90, 0.30), 0.00),
    "inflammation": ((0.00, 0.00, 0.25, 0.95), 0.00),
    "hypertrophy_fetal": ((0.35, 0.85, 0.00, 0.00), 0.00),
    "cardiomyocyte_stress": ((0.60, 0.50, 0.10, 0.20), 0.00),
    "angiogenesis": ((-0.20, 0.50, 0.30, 0.30), 0.00),
    "oxidative_phosphorylation": ((-0.70, -0.20, -0.20, -0.20), -0.12),
    "heart_failure_reheat": ((0.70, 0.30, 0.40, 0.10), 0.08),
}
_FACTOR_CORR = np.array([[1.0, 0.0, 0.3, 0.0], [0.0, 1.0, 0.2, 0.0], [0.3, 0.2, 1.0, 0.3], [0.0, 0.0, 0.3, 1.0]])
_TERRITORIES = ((1, 2, 7, 8, 13, 14), (3, 4, 9, 10, 15), (5, 6, 11, 12, 16))
_MASS_FIT = (-0.327, 0.545, 1.168)  # log mass = a + b log EDV + c log wall, fitted on rendered phantoms (1 % error)


class CohortSpec(BaseModel):
    """What to simulate. Every field has a sensible default; the result is a pure function of it."""

    model_config = ConfigDict(extra="forbid")

    n_patients: int = Field(500, ge=50, le=5000)
    seed: int = Field(0, ge=0, description="Draws the patients.")
    world_seed: int = Field(0, ge=0, description="Fixes gene baselines, gene weights and site batch effects.")
    n_sites: int = Field(3, ge=1, le=6)
    frac_imaging_only: float = Field(0.15, ge=0, le=0.9)
    frac_omics_only: float = Field(0.15, ge=0, le=0.9)
    frac_no_mapping: float = Field(0.10, ge=0, le=1, description="Imaged patients without T1/T2/ECV mapping.")
    n_filler_genes: int = Field(60, ge=0, le=2000)
    depth_mean: float = Field(2e5, gt=1e3, description="Mean library size over the panel.")
    nb_theta: float = Field(15.0, gt=0.5, description="Negative-binomial dispersion (larger: less noise).")
    programme_noise_sd: float = Field(0.35, ge=0, description="Private (non-factor) SD of each programme activity.")
    site_effects: bool = True
    render_images: int = Field(0, ge=0, le=20, description="Render cine + LGE phantoms for this many imaged patients.")


@dataclass
class Cohort:
    """A simulated cohort: observed tables, the truth behind them and (optionally) rendered images."""

    spec: CohortSpec
    patients: pd.DataFrame  # patient_id index: site, field_strength_t, age_years, sex_male, has_imaging, has_omics, has_mapping
    factors: pd.DataFrame  # true latent factors
    geometry: pd.DataFrame  # true geometry parameters (phantom spec fields)
    imaging: pd.DataFrame  # measured phenotypes, NaN where missing
    activities: pd.DataFrame  # true programme activities
    counts: pd.DataFrame  # bulk counts (omics patients x genes)
    gene_sets: dict[str, dict[str, float]]  # programme -> gene -> sign
    truth: dict[str, Any]
    images: dict[str, dict[str, Any]] = field(default_factory=dict)  # patient_id -> {"cine": Phantom, "lge": LgePhantom}

    @property
    def programmes(self) -> list[str]:
        return list(self.activities.columns)

    def to_anndata(self):
        """Bulk counts as AnnData (raw counts in ``layers['counts']``, truth in ``obs``)."""
        import anndata as ad

        obs = self.patients.loc[self.counts.index, ["site", "age_years", "sex_male"]].copy()
        obs["site"] = obs["site"].astype(str)
        for p in self.activities.columns:
            obs[f"true_{p}"] = self.activities.loc[self.counts.index, p].to_numpy()
        x = self.counts.to_numpy(np.float32)
        adata = ad.AnnData(X=x.copy(), obs=obs, var=pd.DataFrame(index=list(self.counts.columns)))
        adata.layers["counts"] = x
        adata.uns["omics_kind"] = "bulk"
        return adata

    def write(self, folder: str | Path) -> Path:
        """Tables as Parquet (and CSV for the phenotypes), counts as h5ad, truth as JSON, images as npz."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("patients", "factors", "geometry", "imaging", "activities"):
            getattr(self, name).to_parquet(out / f"{name}.parquet")
        self.imaging.to_csv(out / "imaging.csv")
        self.to_anndata().write_h5ad(out / "omics.h5ad")
        (out / "truth.json").write_text(json.dumps({**self.truth, "spec": self.spec.model_dump()}, indent=1))
        if self.images:
            (out / "images").mkdir(exist_ok=True)
            for pid, item in self.images.items():
                cine, lge = item["cine"], item["lge"]
                np.savez_compressed(out / "images" / f"{pid}.npz", cine=cine.images, cine_labels=cine.labels,
                                    lge=lge.image, lge_labels=lge.labels, scar=lge.scar_mask,
                                    spacing_mm=np.array(cine.spacing_mm))
        return out


# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def programme_gene_sets() -> dict[str, dict[str, float]]:
    """The shipped cardiac programmes (gene -> sign), read from the omics tool data without importing it."""
    spec = importlib.util.find_spec("cardiomics.tools")
    root = Path(list(spec.submodule_search_locations)[0])
    raw = json.loads((root / "omics" / "data" / "programmes.json").read_text())["sets"]
    out = {}
    for name in _LOADINGS:
        entry = raw[name]
        weights = entry.get("weights", [1.0] * len(entry["genes"]))
        out[name] = {g: float(np.sign(w) or 1.0) for g, w in zip(entry["genes"], weights)}
    return out


@dataclass(frozen=True)
class _World:
    genes: list[str]
    log_base: np.ndarray  # (G,) log proportion
    weights: np.ndarray  # (G, P) log-fold per unit activity
    batch: np.ndarray  # (sites, G) log-fold per site
    field_t: np.ndarray  # (sites,) 1.5 or 3.0
    volume_bias: np.ndarray  # (sites,) multiplicative contour bias
    lge_bias: np.ndarray  # (sites,) multiplicative threshold bias


def _world(spec: CohortSpec, sets: dict[str, dict[str, float]]) -> _World:
    rng = np.random.default_rng(10_000 + spec.world_seed)
    genes: list[str] = []
    for gs in sets.values():
        genes += [g for g in gs if g not in genes]
    genes += [f"SIMG{i:05d}" for i in range(spec.n_filler_genes)]
    index = {g: i for i, g in enumerate(genes)}
    log_base = rng.normal(0.0, 1.0, len(genes))
    log_base -= np.log(np.exp(log_base).sum())
    weights = np.zeros((len(genes), len(sets)))
    for p, gs in enumerate(sets.values()):
        for g, sign in gs.items():
            weights[index[g], p] = sign * rng.uniform(0.30, 0.55) / (2.0 if len(gs) > 50 else 1.0)
    n = spec.n_sites
    on = 1.0 if spec.site_effects else 0.0
    batch = on * rng.normal(0.0, 0.25, (n, len(genes)))
    field_t = np.array([1.5 if s % 2 == 0 else 3.0 for s in range(n)]) if spec.site_effects else np.full(n, 1.5)
    volume_bias = 1.0 + on * rng.uniform(-0.07, 0.07, n)
    lge_bias = 1.0 + on * rng.uniform(-0.25, 0.25, n)
    return _World(genes, log_base, weights, batch, field_t, volume_bias, lge_bias)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _geometry(rng: np.random.Generator, f: np.ndarray, age: np.ndarray, male: np.ndarray) -> pd.DataFrame:
    """True heart geometry (PhantomSpec units) from factors and confounders."""
    n = len(age)
    dil, hyp, fib, inf = f.T
    age_z = (age - 55.0) / 15.0
    edv = 140.0 * np.exp(0.26 * dil + 0.12 * male - 0.03 * age_z + rng.normal(0, 0.05, n))
    ef = 0.63 - 0.07 * dil - 0.04 * np.clip(dil, 0, None) ** 2 - 0.025 * fib + 0.02 * np.tanh(hyp) + rng.normal(0, 0.02, n)
    wall = 8.8 * np.exp(0.15 * hyp - 0.04 * dil + 0.06 * male + 0.03 * age_z + rng.normal(0, 0.035, n))
    asym = 1.10 + 0.16 * _softplus(2.0 * (hyp - 0.5)) + rng.normal(0, 0.025, n)
    rv_edv = edv * np.exp(0.06 + 0.07 * dil + rng.normal(0, 0.05, n))
    rv_ef = 0.58 - 0.045 * dil - 0.02 * fib + rng.normal(0, 0.03, n)
    burden = 28.0 * (1.0 - np.exp(-0.9 * np.clip(fib - 0.25, 0, None)))  # focal scar only beyond a threshold
    trans = np.clip(0.35 + 0.25 * fib + rng.normal(0, 0.05, n), 0.25, 1.0)
    n_seg = np.clip(np.round(16.0 * burden / 100.0 / trans), 0, 12).astype(int)
    segments, territory = [], rng.integers(0, len(_TERRITORIES), n)
    for i in range(n):
        order = list(_TERRITORIES[territory[i]]) + [s for t in _TERRITORIES if t != _TERRITORIES[territory[i]] for s in t]
        segments.append(sorted(order[: n_seg[i]]))
    return pd.DataFrame({
        "lv_edv_ml": np.clip(edv, 60, 450), "lv_ef": np.clip(ef, 0.10, 0.80),
        "myo_thickness_mm": np.clip(wall, 5.0, 22.0), "wall_max_ratio": asym,
        "rv_edv_ml": np.clip(rv_edv, 60, 500), "rv_ef": np.clip(rv_ef, 0.15, 0.75),
        "scar_segments": [json.dumps(s) for s in segments], "scar_transmurality": np.where(n_seg > 0, trans, 0.0),
        "scar_burden_pct": np.where(n_seg > 0, 100.0 * n_seg * trans / 16.0, 0.0),
    })


def _phenotypes(rng: np.random.Generator, geo: pd.DataFrame, f: np.ndarray, age: np.ndarray, male: np.ndarray,
                site: np.ndarray, world: _World) -> pd.DataFrame:
    """Measured CMR phenotypes: geometry + measurement noise + site effects; mapping from tissue state."""
    n = len(geo)
    vb = world.volume_bias[site]
    edv = geo["lv_edv_ml"].to_numpy() * vb * np.exp(rng.normal(0, 0.025, n))
    ef = np.clip(geo["lv_ef"].to_numpy() + rng.normal(0, 0.015, n), 0.05, 0.85)
    rv_edv = geo["rv_edv_ml"].to_numpy() * vb * np.exp(rng.normal(0, 0.04, n))
    rv_ef = np.clip(geo["rv_ef"].to_numpy() + rng.normal(0, 0.025, n), 0.05, 0.85)
    wall = geo["myo_thickness_mm"].to_numpy()
    a, b, c = _MASS_FIT
    mass = np.exp(a + b * np.log(geo["lv_edv_ml"].to_numpy()) + c * np.log(wall)) * vb * np.exp(rng.normal(0, 0.035, n))
    dil, hyp, fib, inf = f.T
    age_z = (age - 55.0) / 15.0
    three_t = world.field_t[site] > 2.0
    lge = geo["scar_burden_pct"].to_numpy() * world.lge_bias[site] + np.abs(rng.normal(0, 0.4, n))
    t1 = np.where(three_t, 1190.0, 1000.0) + 18.0 * fib + 30.0 * _softplus(1.3 * inf) + 6.0 * age_z + rng.normal(0, 12.0, n)
    t2 = np.where(three_t, 44.0, 50.0) + 3.5 * _softplus(1.5 * inf) + rng.normal(0, 1.0, n)
    ecv = 25.0 + 2.4 * fib + 1.2 * _softplus(inf) + 0.5 * age_z + rng.normal(0, 0.8, n)
    return pd.DataFrame({
        "lv_edv_ml": edv, "lv_esv_ml": edv * (1 - ef), "lv_ef_pct": 100 * ef, "lv_mass_g": mass,
        "rv_edv_ml": rv_edv, "rv_esv_ml": rv_edv * (1 - rv_ef), "rv_ef_pct": 100 * rv_ef,
        "wall_mean_mm": wall * np.exp(rng.normal(0, 0.03, n)),
        "wall_max_mm": wall * geo["wall_max_ratio"].to_numpy() * np.exp(rng.normal(0, 0.03, n)),
        "lge_burden_pct": np.clip(lge, 0, 100), "native_t1_ms": t1, "t2_ms": t2, "ecv_pct": ecv,
        "age_years": age, "sex_male": male.astype(float),
    })


def simulate_cohort(spec: CohortSpec | None = None, **overrides: Any) -> Cohort:
    """Simulate a cohort (``CohortSpec`` fields as keyword overrides). Pure function of the spec."""
    spec = (spec or CohortSpec()).model_copy(update=overrides) if overrides else (spec or CohortSpec())
    spec = CohortSpec.model_validate(spec.model_dump())
    rng = np.random.default_rng(spec.seed)
    sets = programme_gene_sets()
    world = _world(spec, sets)
    n = spec.n_patients
    ids = [f"SYN{spec.seed:04d}-{i:05d}" for i in range(n)]
    f = rng.multivariate_normal(np.zeros(len(FACTORS)), _FACTOR_CORR, n)
    age = np.round(rng.uniform(20, 85, n), 1)
    male = (rng.random(n) < 0.55).astype(int)
    site = rng.integers(0, spec.n_sites, n)
    u = rng.random(n)
    imaging_only = u < spec.frac_imaging_only
    omics_only = (u >= spec.frac_imaging_only) & (u < spec.frac_imaging_only + spec.frac_omics_only)
    has_imaging, has_omics = ~omics_only, ~imaging_only
    has_mapping = has_imaging & (rng.random(n) >= spec.frac_no_mapping)

    geo = _geometry(rng, f, age, male)
    pheno = _phenotypes(rng, geo, f, age, male, site, world)
    pheno.loc[~has_mapping, list(MAPPING_FEATURES)] = np.nan
    pheno.loc[~has_imaging, :] = np.nan

    names = list(sets)
    load = np.array([_LOADINGS[p][0] for p in names])  # (P, K)
    age_eff = np.array([_LOADINGS[p][1] for p in names])
    acts = f @ load.T + np.outer((age - 55.0) / 10.0, age_eff) + rng.normal(0, spec.programme_noise_sd, (n, len(names)))
    depth = rng.lognormal(np.log(spec.depth_mean), 0.3, n)
    log_mu = np.log(depth)[:, None] + world.log_base[None] + acts @ world.weights.T + world.batch[site]
    lam = rng.gamma(spec.nb_theta, np.exp(log_mu) / spec.nb_theta)
    counts = rng.poisson(lam).astype(np.int64)

    index = pd.Index(ids, name="patient_id")
    patients = pd.DataFrame({"site": site, "field_strength_t": world.field_t[site], "age_years": age, "sex_male": male,
                             "has_imaging": has_imaging, "has_omics": has_omics, "has_mapping": has_mapping,
                             "library_size": counts.sum(1)}, index=index)
    cohort = Cohort(
        spec=spec, patients=patients,
        factors=pd.DataFrame(f, index=index, columns=list(FACTORS)),
        geometry=geo.set_index(index), imaging=pheno.set_index(index),
        activities=pd.DataFrame(acts, index=index, columns=names),
        counts=pd.DataFrame(counts[has_omics], index=index[has_omics], columns=world.genes),
        gene_sets=sets,
        truth={
            "factors": list(FACTORS), "factor_correlation": _FACTOR_CORR.tolist(), "programmes": names,
            "programme_loadings": {p: dict(zip(FACTORS, _LOADINGS[p][0])) for p in names},
            "programme_age_effect_per_10y": {p: _LOADINGS[p][1] for p in names},
            "programme_noise_sd": spec.programme_noise_sd, "mass_fit": list(_MASS_FIT),
            "site_field_strength_t": world.field_t.tolist(), "site_volume_bias": world.volume_bias.tolist(),
            "site_lge_bias": world.lge_bias.tolist(), "site_batch_sd": 0.25 if spec.site_effects else 0.0,
            "gene_weights": {g: dict(zip(names, map(float, world.weights[i]))) for i, g in enumerate(world.genes)
                             if np.any(world.weights[i])},
            "missingness": {"imaging_only": int(imaging_only.sum()), "omics_only": int(omics_only.sum()),
                            "paired": int((has_imaging & has_omics).sum()), "no_mapping": int((has_imaging & ~has_mapping).sum())},
        },
    )
    if spec.render_images:
        cohort.images = render_patients(cohort, [i for i in ids if patients.loc[i, "has_imaging"]][: spec.render_images])
    return cohort


def phantom_spec_for(cohort: Cohort, patient_id: str, **overrides: Any):
    """The PhantomSpec of one patient's true geometry (small, fast grid unless overridden)."""
    from .phantom import PhantomSpec

    g = cohort.geometry.loc[patient_id]
    seed = int(patient_id.split("-")[-1]) + 1000 * cohort.spec.seed
    values = dict(n_frames=12, n_slices=10, rows=128, cols=128, pixel_mm=2.0, slice_mm=10.0,
                  lv_edv_ml=float(g["lv_edv_ml"]), lv_ef=float(g["lv_ef"]), rv_edv_ml=float(g["rv_edv_ml"]),
                  rv_ef=float(g["rv_ef"]), myo_thickness_mm=float(g["myo_thickness_mm"]),
                  scar_segments=json.loads(g["scar_segments"]),
                  scar_transmurality=float(g["scar_transmurality"]) if g["scar_transmurality"] > 0 else 0.5, seed=seed)
    values.update(overrides)
    return PhantomSpec(**values)


def render_patients(cohort: Cohort, patient_ids: list[str], **overrides: Any) -> dict[str, dict[str, Any]]:
    """Render cine and LGE phantoms of the given patients' true geometry."""
    from .phantom import make_lge, make_phantom

    out = {}
    for pid in patient_ids:
        spec = phantom_spec_for(cohort, pid, **overrides)
        out[pid] = {"cine": make_phantom(spec), "lge": make_lge(spec)}
    return out
