"""A small simulated radiogenomic cohort with planted imaging-programme effects.

Why: association tests are validated against known truth (empirical FDR, power, null calibration)
when real paired imaging + omics data are not at hand. Programmes and phenotypes both depend on
age, sex, body size and site, so an analysis that forgets the covariates finds spurious links;
given the covariates, only the planted (phenotype, programme) pairs are associated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PHENOTYPES = ("lvef_pct", "lv_mass_g", "wall_thickness_septal_mm", "lge_burden_pct")


@dataclass
class AssocCohort:
    """Columns of a cohort table plus the planted truth."""

    columns: dict[str, list]
    phenotypes: list[str]
    programmes: list[str]
    covariates: list[str]
    truth: dict[tuple[str, str], float] = field(default_factory=dict)  # planted standardised effects

    @property
    def n(self) -> int:
        return len(self.columns[self.phenotypes[0]])

    def records(self) -> list[dict]:
        names = list(self.columns)
        return [dict(zip(names, row)) for row in zip(*(self.columns[c] for c in names))]


def simulate_association_cohort(
    n: int = 300,
    n_programmes: int = 20,
    effects: dict[tuple[str, str], float] | None = None,
    seed: int = 0,
    n_sites: int = 3,
    spatial: bool = False,
    spatial_noise_sd: float = 0.0,
) -> AssocCohort:
    """Simulate ``n`` subjects (or spots when ``spatial``) with covariates, programmes, phenotypes.

    ``effects`` maps (phenotype, programme) to a planted effect in SD of phenotype per SD of
    programme, both taken net of the covariates; every other pair is null. Default: a few effects
    of 0.15, 0.25 and 0.4 on the first four programmes (those beyond ``n_programmes`` are dropped).
    ``lge_burden_pct`` is right-skewed (a log-normal transform of its latent score), so the
    transformation rule has something to catch. With ``spatial`` the rows get coordinates on a grid
    (``x_um``, ``y_um``); ``spatial_noise_sd`` > 0 adds a smooth spatial field to every phenotype
    that the covariates do not explain (residual autocorrelation).
    """
    rng = np.random.default_rng(seed)
    programmes = [f"prog_{k:02d}" for k in range(n_programmes)]
    if effects is None:
        effects = {("lvef_pct", "prog_00"): -0.4, ("lv_mass_g", "prog_01"): 0.25,
                   ("wall_thickness_septal_mm", "prog_02"): 0.15, ("lge_burden_pct", "prog_03"): 0.4}
    effects = {k: v for k, v in effects.items() if k[1] in programmes and k[0] in PHENOTYPES}
    age = rng.normal(58, 12, n)
    sex = rng.integers(0, 2, n)  # 1 = male
    bsa = rng.normal(1.75 + 0.2 * sex, 0.15, n)
    site_idx = rng.integers(0, n_sites, n)
    site_shift = rng.normal(0, 0.6, n_sites)
    cov_signal = (age - 58) / 12 * 0.5 + (sex - 0.5) * 0.6 + (bsa - 1.85) / 0.15 * 0.3 + site_shift[site_idx]

    prog = {}
    for k, name in enumerate(programmes):  # confounded by covariates, independent given them
        load = 0.3 + 0.4 * ((k % 3) == 0)
        prog[name] = load * cov_signal + rng.normal(0, 1, n)

    field_ = np.zeros(n)
    coords = None
    if spatial:
        side = int(np.ceil(np.sqrt(n)))
        gx, gy = np.meshgrid(np.arange(side), np.arange(side))
        coords = np.c_[gx.ravel()[:n], gy.ravel()[:n]].astype(float) * 100.0
        if spatial_noise_sd > 0:
            f = (np.sin(coords[:, 0] / 400.0 + rng.uniform(0, 6)) + np.cos(coords[:, 1] / 300.0 + rng.uniform(0, 6)))
            field_ = spatial_noise_sd * f / f.std()

    columns: dict[str, list] = {"age": age.round(1).tolist(), "sex": np.where(sex == 1, "M", "F").tolist(),
                                "bsa_m2": bsa.round(3).tolist(), "site": [f"site{s}" for s in site_idx]}
    scales = {"lvef_pct": (58.0, 8.0), "lv_mass_g": (120.0, 25.0), "wall_thickness_septal_mm": (9.5, 1.8)}
    for ph in PHENOTYPES:
        latent = 0.8 * cov_signal + rng.normal(0, 1, n) + field_
        for (p, g), b in effects.items():
            if p == ph:
                resid_prog = prog[g] - np.polyval(np.polyfit(cov_signal, prog[g], 1), cov_signal)
                latent = latent + b * resid_prog / resid_prog.std() * 1.0
        if ph == "lge_burden_pct":
            columns[ph] = np.exp(0.9 * latent / latent.std()).round(4).tolist()  # right-skewed, > 0
        else:
            mu, sd = scales[ph]
            columns[ph] = (mu + sd * latent / latent.std()).round(4).tolist()
    for name in programmes:
        columns[name] = prog[name].round(5).tolist()
    if coords is not None:
        columns["x_um"], columns["y_um"] = coords[:, 0].tolist(), coords[:, 1].tolist()
    return AssocCohort(columns=columns, phenotypes=list(PHENOTYPES), programmes=programmes,
                       covariates=["age", "sex", "bsa_m2", "site"],
                       truth={k: float(v) for k, v in effects.items()})
