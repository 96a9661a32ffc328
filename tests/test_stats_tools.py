"""association_scan / association_plots / prediction_metrics: inputs, controls, outputs, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cardiomics.errors import InputError, NotFoundError
from cardiomics.hashing import sha256_json
from cardiomics.synthetic.assoc_sim import simulate_association_cohort
from cardiomics.tools import ArtifactStore, ToolContext, call_tool, registry
from cardiomics.tools.stats import store_table

BASE = {"phenotypes": ["lvef_pct", "lge_burden_pct"], "programmes": ["prog_0*"],
        "covariates": ["age", "sex", "bsa_m2", "site"], "control_rounds": 2}


@pytest.fixture
def ctx(tmp_path):
    return ToolContext(store=ArtifactStore(tmp_path), seed=3)


@pytest.fixture(scope="module")
def cohort():
    return simulate_association_cohort(n=160, n_programmes=4, seed=21)


def _body(out):
    return out.model_dump(mode="json", exclude={"provenance"})


def test_registered_with_docstrings():
    reg = registry()
    for name in ("association_scan", "prediction_metrics", "association_plots", "knowledge_search"):
        assert name in reg and len(reg[name].description) > 200


def test_three_table_forms_agree_and_input_untouched(ctx, cohort):
    cols = cohort.columns
    before = sha256_json(cols)
    a = call_tool("association_scan", {"columns": cols, **BASE}, ctx)
    b = call_tool("association_scan", {"records": cohort.records(), **BASE}, ctx)
    c = call_tool("association_scan", {"table_id": store_table(ctx.store, cols), **BASE}, ctx)
    assert _body(a) == _body(b) == _body(c)
    assert sha256_json(cols) == before
    assert a.n_tests == 8 and a.provenance.seed == 3 and "table" in c.provenance.input_hashes


def test_transform_rule_recorded_and_outputs(ctx, cohort):
    out = call_tool("association_scan", {"columns": cohort.columns, **BASE}, ctx)
    rec = {t.variable: t for t in out.transforms}
    assert rec["lge_burden_pct"].transformed and rec["lge_burden_pct"].skewness > 1
    assert not rec["lvef_pct"].transformed
    assert "Freedman-Lane" in out.permutation_scheme
    assert out.negative_controls.permuted_labels.clean and "clean" in out.negative_controls.summary
    assert out.negative_controls.shuffled_locations is None
    t = next(t for t in out.tests if (t.phenotype, t.programme) == ("lge_burden_pct", "prog_03"))
    assert t.significant and t.beta_std.value > 0 and t.p_permutation >= 1 / 1001
    assert t.assumptions.residual_normality_test == "Shapiro-Wilk" and t.assumptions.max_cooks_distance > 0
    q = np.array([x.q_value for x in sorted(out.tests, key=lambda x: x.p_permutation)])
    assert np.all(np.diff(q) >= -1e-15)  # BH q-values monotone in p


def test_deterministic_for_seed(tmp_path, cohort):
    args = {"columns": cohort.columns, **BASE}
    one = call_tool("association_scan", args, ToolContext(store=ArtifactStore(tmp_path / "a"), seed=5))
    two = call_tool("association_scan", args, ToolContext(store=ArtifactStore(tmp_path / "b"), seed=5))
    other = call_tool("association_scan", args, ToolContext(store=ArtifactStore(tmp_path / "c"), seed=6))
    assert _body(one) == _body(two)
    assert [t.p_permutation for t in one.tests] != [t.p_permutation for t in other.tests]


def test_missing_values_and_blocks(ctx, cohort):
    cols = {k: list(v) for k, v in cohort.columns.items()}
    cols["lvef_pct"][:10] = [None] * 10
    cols["prog_01"][5:25] = [None] * 20
    out = call_tool("association_scan", {"columns": cols, **BASE, "permute_within": "site"}, ctx)
    n = {(t.phenotype, t.programme): t.n for t in out.tests}
    assert n[("lvef_pct", "prog_00")] == 150 and n[("lvef_pct", "prog_01")] == 135 and n[("lge_burden_pct", "prog_02")] == 160


def test_spatial_control_flags_autocorrelated_residuals(ctx):
    clean = simulate_association_cohort(n=400, n_programmes=2, seed=8, spatial=True)
    dirty = simulate_association_cohort(n=400, n_programmes=2, seed=8, spatial=True, spatial_noise_sd=1.5)
    args = {**BASE, "programmes": ["prog_*"], "coordinates": ["x_um", "y_um"]}
    ok = call_tool("association_scan", {"columns": clean.columns, **args}, ctx)
    bad = call_tool("association_scan", {"columns": dirty.columns, **args}, ctx)
    assert ok.negative_controls.shuffled_locations.clean and ok.negative_controls.all_clean
    sl = bad.negative_controls.shuffled_locations
    assert not sl.clean and sl.fraction_autocorrelated == 1.0 and sl.fraction_autocorrelated_shuffled <= 0.5
    assert not bad.negative_controls.all_clean and "NOT clean" in bad.negative_controls.summary
    assert all(t.assumptions.residual_morans_p is not None for t in bad.tests)


@pytest.mark.parametrize("change,code", [
    ({"phenotypes": ["no_such_col"]}, "unknown-column"),
    ({"programmes": ["lvef_pct"]}, "overlapping-columns"),
    ({"phenotypes": ["sex"], "covariates": ["age"]}, "not-numeric"),
    ({"n_permutations": 10}, "invalid-arguments"),
    ({"max_tests": 1}, "too-many-tests"),
    ({"records": [{"a": 1}]}, "invalid-arguments"),  # two table forms at once
    ({"phenotypes": ["prog_00"], "programmes": ["const"]}, "constant-column"),
])
def test_bad_input_is_refused(ctx, cohort, change, code):
    with pytest.raises(InputError) as err:
        call_tool("association_scan", {"columns": {**cohort.columns, "const": [1.0] * cohort.n}, **BASE, **change}, ctx)
    assert err.value.code == code and err.value.hint


def test_plots_are_pngs_in_store(ctx, cohort):
    scan = call_tool("association_scan", {"columns": cohort.columns, **BASE}, ctx)
    out = call_tool("association_plots", {"results_id": scan.results_id, "top_n": 5}, ctx)
    for fig in (out.volcano, out.forest):
        assert re.fullmatch(r"fig-[0-9a-f]{24}", fig.id)
        with open(fig.path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(NotFoundError):
        call_tool("association_plots", {"results_id": "assoc-" + "0" * 24}, ctx)


def test_prediction_subgroups_and_refusals(ctx):
    rng = np.random.default_rng(0)
    n = 400
    site = np.array(["A", "B"] * (n // 2))
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-x))).astype(int)
    p = 1 / (1 + np.exp(-np.where(site == "A", x, 0.2 * x)))  # uninformative at site B
    out = call_tool("prediction_metrics", {"y_true": y.tolist(), "y_prob": p.tolist(), "groups": {"site": site.tolist()}}, ctx)
    a, b = (s.performance for s in out.subgroups)
    assert a.auroc.value > 0.65 and b.auroc.value > 0.65  # ranking is kept at B...
    assert b.calibration_slope.value > 2 * a.calibration_slope.value  # ...but B's predictions are far too flat
    with pytest.raises(InputError) as err:
        call_tool("prediction_metrics", {"y_true": [0, 1] * 10, "y_prob": [2.0] * 20}, ctx)
    assert err.value.code == "invalid-arguments"
    with pytest.raises(InputError):
        call_tool("prediction_metrics", {"y_true": [1] * 20, "y_prob": [0.5] * 20}, ctx)
