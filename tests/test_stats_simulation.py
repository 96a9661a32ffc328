"""Calibration on simulated cohorts with known truth (a 25-replicate version of bench_stats.py).

The two 25-replicate tests take about 4 s each on 2 idle cores.

Tolerances are set for 25 replicates: the FDR estimate has a standard error of about 0.02 here,
and 1,200 correlated null p-values give a false-positive rate within about +-0.03 of alpha.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cardiomics.synthetic.assoc_sim import simulate_association_cohort
from cardiomics.tools import ArtifactStore, ToolContext, call_tool

REPS, N, K = 25, 200, 12
EFFECTS = {("lvef_pct", "prog_00"): -0.4, ("lge_burden_pct", "prog_03"): 0.4,
           ("lv_mass_g", "prog_01"): 0.25, ("wall_thickness_septal_mm", "prog_02"): 0.15}


def _scan(c, store, seed, covariates=True):
    return call_tool("association_scan", {
        "columns": c.columns, "phenotypes": c.phenotypes, "programmes": ["prog_*"],
        "covariates": c.covariates if covariates else [], "control_rounds": 1}, ToolContext(store=store, seed=seed))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ArtifactStore(tmp_path_factory.mktemp("sim"))


def test_fdr_and_power_with_planted_effects(store):
    fdp, found = [], {0.15: [], 0.25: [], 0.4: []}
    for r in range(REPS):
        c = simulate_association_cohort(n=N, n_programmes=K, effects=EFFECTS, seed=100 + r)
        out = _scan(c, store, r)
        sig = np.array([t.significant for t in out.tests])
        truth = np.array([(t.phenotype, t.programme) in c.truth for t in out.tests])
        fdp.append((sig & ~truth).sum() / max(sig.sum(), 1))
        for t in out.tests:
            b = c.truth.get((t.phenotype, t.programme))
            if b is not None:
                found[abs(b)].append(t.significant)
    power = {k: float(np.mean(v)) for k, v in found.items()}
    assert np.mean(fdp) <= 0.12, f"empirical FDR {np.mean(fdp):.3f}"
    assert power[0.4] >= 0.9 and power[0.25] >= 0.5, power
    assert power[0.4] >= power[0.25] >= power[0.15]


def test_null_calibration_lambda_and_false_positives(store):
    p_asym, p_perm, any_sig = [], [], []
    for r in range(REPS):
        c = simulate_association_cohort(n=N, n_programmes=K, effects={}, seed=500 + r)
        out = _scan(c, store, r)
        p_asym += [t.p_asymptotic for t in out.tests]
        p_perm += [t.p_permutation for t in out.tests]
        any_sig.append(out.n_significant > 0)
        assert out.n_tests == 4 * K
    p_asym, p_perm = np.array(p_asym), np.array(p_perm)
    lam = np.median(stats.chi2.isf(p_asym, 1)) / stats.chi2.ppf(0.5, 1)
    assert 0.85 <= lam <= 1.15, lam
    assert 0.02 <= (p_asym < 0.05).mean() <= 0.08
    assert 0.02 <= (p_perm < 0.05).mean() <= 0.08
    assert np.mean(any_sig) <= 0.2  # BH controls FWER under the complete null at about q
    assert stats.kstest(p_perm, "uniform").pvalue > 1e-3 or abs(np.median(p_perm) - 0.5) < 0.05


def test_covariates_remove_confounding(store):
    """Programmes and phenotypes share age/sex/site effects: unadjusted scans are inflated."""
    lam_adj, lam_raw = [], []
    for r in range(4):
        c = simulate_association_cohort(n=N, n_programmes=K, effects={}, seed=900 + r)
        lam_adj.append(_scan(c, store, r).genomic_inflation_lambda)
        raw = _scan(c, store, r, covariates=False)
        lam_raw.append(raw.genomic_inflation_lambda)
    assert np.mean(lam_raw) > 2 * np.mean(lam_adj)
    assert 0.6 < np.mean(lam_adj) < 1.5
