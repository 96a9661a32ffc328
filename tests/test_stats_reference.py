"""The statistics tools agree with independent statsmodels / scipy / scikit-learn computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats
from sklearn.metrics import brier_score_loss, roc_auc_score
from statsmodels.stats.multitest import multipletests

from cardiomics.synthetic.assoc_sim import simulate_association_cohort
from cardiomics.tools import ArtifactStore, ToolContext, call_tool
from cardiomics.tools.stats._linear import block_permutations
from cardiomics.tools.stats._prediction import delong
from cardiomics.tools.stats._spatial import knn_weights, morans_i
from cardiomics.tools.stats._transform import rank_inverse_normal

TOL = 1e-8
SEED = 11


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    c = simulate_association_cohort(n=150, n_programmes=3, seed=5)
    ctx = ToolContext(store=ArtifactStore(tmp_path_factory.mktemp("ref")), seed=SEED)
    out = call_tool("association_scan", {
        "columns": c.columns, "phenotypes": ["lvef_pct", "lv_mass_g"], "programmes": ["prog_*"],
        "covariates": ["age", "sex", "bsa_m2", "site"], "transform": "none", "control_rounds": 2}, ctx)
    return c, out


def _z(v):
    v = np.asarray(v, float)
    return (v - v.mean()) / v.std(ddof=1)


def test_ols_matches_statsmodels_formula(example):
    c, out = example
    df = pd.DataFrame(c.columns)
    assert out.n_tests == 6
    for t in out.tests:
        d = df.assign(y=_z(df[t.phenotype]), x=_z(df[t.programme]))
        ref = smf.ols("y ~ x + age + C(sex) + bsa_m2 + C(site)", data=d).fit()
        lo, hi = ref.conf_int(0.05).loc["x"]
        assert abs(t.beta_std.value - ref.params["x"]) < TOL
        assert abs(t.se - ref.bse["x"]) < TOL
        assert abs(t.t - ref.tvalues["x"]) < TOL
        assert abs(t.p_asymptotic - ref.pvalues["x"]) < TOL
        assert abs(t.beta_std.interval.lower - lo) < TOL and abs(t.beta_std.interval.upper - hi) < TOL
        infl = ref.get_influence().cooks_distance[0]
        assert abs(t.assumptions.max_cooks_distance - infl.max()) < TOL
        assert t.assumptions.n_influential == int((infl > 4 / len(d)).sum())
        assert abs(t.assumptions.residual_normality_p - stats.shapiro(ref.resid).pvalue) < TOL


def test_planted_effect_recovered(example):
    c, out = example
    hit = next(t for t in out.tests if (t.phenotype, t.programme) == ("lvef_pct", "prog_00"))
    assert hit.significant and hit.beta_std.interval.upper < 0  # planted -0.4


def test_fdr_matches_multipletests(example):
    _, out = example
    p = np.array([t.p_permutation for t in out.tests])
    rej, q, _, _ = multipletests(p, alpha=0.05, method="fdr_bh")
    assert np.allclose([t.q_value for t in out.tests], q, atol=TOL, rtol=0)
    assert [t.significant for t in out.tests] == rej.tolist()


def test_freedman_lane_matches_naive_refits(example):
    """Permutation p-value recomputed by 1,000 explicit statsmodels refits."""
    c, out = example
    df = pd.DataFrame(c.columns)
    df["y"], df["x"] = _z(df["lvef_pct"]), _z(df["prog_01"])
    Z = np.asarray(pd.get_dummies(df[["age", "sex", "bsa_m2", "site"]], drop_first=True, dtype=float))
    Z = sm.add_constant(Z)
    reduced = sm.OLS(df["y"].to_numpy(), Z).fit()
    X = np.column_stack([df["x"].to_numpy(), Z])
    t_obs = sm.OLS(df["y"].to_numpy(), X).fit().tvalues[0]
    perms = block_permutations(len(df), 1000, np.random.default_rng(SEED), None)  # the tool's permutations
    t_perm = np.array([sm.OLS(reduced.fittedvalues + reduced.resid[p], X).fit().tvalues[0] for p in perms])
    p_ref = (1 + np.sum(np.abs(t_perm) >= np.abs(t_obs) * (1 - 1e-10))) / 1001
    got = next(t for t in out.tests if (t.phenotype, t.programme) == ("lvef_pct", "prog_01"))
    assert abs(got.p_permutation - p_ref) < TOL


def test_rank_int_and_morans_i():
    rng = np.random.default_rng(0)
    v = rng.exponential(size=50)
    v[[3, 7]] = v[5]  # ties
    ref = stats.norm.ppf((stats.rankdata(v) - 0.375) / (50 + 0.25))
    assert np.allclose(rank_inverse_normal(v), ref, atol=TOL, rtol=0)
    xy = rng.uniform(size=(40, 2))
    e = rng.normal(size=40)
    W = knn_weights(xy, 4).toarray()
    ec = e - e.mean()
    ref_i = len(e) / W.sum() * (ec @ W @ ec) / (ec @ ec)
    assert abs(morans_i(e[:, None], knn_weights(xy, 4))[0] - ref_i) < TOL


def test_prediction_metrics_match_references(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=300)
    p = 1 / (1 + np.exp(-(0.3 + 1.4 * x)))
    y = (rng.random(300) < 1 / (1 + np.exp(-(0.1 + x)))).astype(int)
    sex = np.where(rng.random(300) < 0.5, "F", "M")
    ctx = ToolContext(store=ArtifactStore(tmp_path))
    out = call_tool("prediction_metrics", {"y_true": y.tolist(), "y_prob": p.tolist(), "thresholds": [0.1, 0.3],
                                           "groups": {"sex": sex.tolist()}}, ctx)
    o = out.overall
    assert abs(o.auroc.value - roc_auc_score(y, p)) < TOL
    assert abs(o.brier - brier_score_loss(y, p)) < TOL
    # DeLong variance against the O(mn) structural-component definition
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    var_ref = psi.mean(1).var(ddof=1) / pos.size + psi.mean(0).var(ddof=1) / neg.size
    assert abs(delong(y, p)[1] - var_ref) < TOL
    half = stats.norm.ppf(0.975) * np.sqrt(var_ref)
    assert abs(o.auroc.interval.lower - (roc_auc_score(y, p) - half)) < TOL
    d = pd.DataFrame({"y": y, "lp": np.log(p / (1 - p))})
    slope = smf.logit("y ~ lp", d).fit(disp=0)
    citl = smf.glm("y ~ 1", d, family=sm.families.Binomial(), offset=d["lp"]).fit()
    assert abs(o.calibration_slope.value - slope.params["lp"]) < 1e-6  # iterative fits: solver tolerance
    assert abs(o.calibration_intercept.value - citl.params["Intercept"]) < 1e-6
    assert o.calibration_slope.value < 1  # predictions planted too extreme (1.4 vs 1.0)
    for nb in out.net_benefit:
        treat = p >= nb.threshold
        w = nb.threshold / (1 - nb.threshold)
        assert abs(nb.model - (np.sum(treat & (y == 1)) - np.sum(treat & (y == 0)) * w) / 300) < TOL
        assert abs(nb.treat_all - (y.mean() - (1 - y.mean()) * w)) < TOL
    f = next(s for s in out.subgroups if s.level == "F")
    assert abs(f.performance.auroc.value - roc_auc_score(y[sex == "F"], p[sex == "F"])) < TOL
    boot = call_tool("prediction_metrics", {"y_true": y.tolist(), "y_prob": p.tolist(), "ci_method": "bootstrap"}, ctx)
    assert boot.overall.auroc.interval.lower < o.auroc.value < boot.overall.auroc.interval.upper
    assert abs(boot.overall.auroc.interval.lower - o.auroc.interval.lower) < 0.03
