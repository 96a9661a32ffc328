"""The synthetic paired cohort: deterministic, the requested missingness, and its planted truth shows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cardiomics.synthetic.cohort import FACTORS, CohortSpec, simulate_cohort


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(n_patients=800, seed=3)


def test_deterministic_by_seed_and_world_shared():
    a, b = simulate_cohort(n_patients=60, seed=5), simulate_cohort(n_patients=60, seed=5)
    pd.testing.assert_frame_equal(a.imaging, b.imaging)
    pd.testing.assert_frame_equal(a.counts, b.counts)
    c = simulate_cohort(n_patients=60, seed=6)
    assert not np.allclose(a.factors.to_numpy(), c.factors.to_numpy())
    assert a.truth["gene_weights"] == c.truth["gene_weights"]  # same world, other patients


def test_size_limits():
    with pytest.raises(ValueError):
        CohortSpec(n_patients=49)
    with pytest.raises(ValueError):
        CohortSpec(n_patients=5001)


def test_missingness_is_as_requested_and_recorded(cohort):
    p = cohort.patients
    assert abs((~p.has_omics).mean() - 0.15) < 0.04 and abs((~p.has_imaging).mean() - 0.15) < 0.04
    assert cohort.imaging.loc[~p.has_imaging].isna().all(axis=None)
    assert cohort.imaging.loc[p.has_imaging & ~p.has_mapping, "t2_ms"].isna().all()
    assert list(cohort.counts.index) == list(p.index[p.has_omics])
    m = cohort.truth["missingness"]
    assert m["imaging_only"] + m["omics_only"] + m["paired"] == len(p)


def test_planted_factors_drive_phenotypes(cohort):
    img, f = cohort.imaging.dropna(subset=["lv_edv_ml"]), cohort.factors
    r = lambda a, b: np.corrcoef(a, b.loc[a.index])[0, 1]  # noqa: E731
    assert r(np.log(img.lv_edv_ml), f.dilation) > 0.75
    assert r(img.wall_max_mm, f.hypertrophy) > 0.7
    assert r(img.lge_burden_pct, f.fibrosis) > 0.6
    t2 = img.t2_ms.dropna()
    field = cohort.patients.loc[t2.index, "field_strength_t"]
    resid = t2 - t2.groupby(field).transform("mean")  # the scanner shifts T2; within field strength it tracks inflammation
    assert r(resid, f.inflammation) > 0.7
    assert set(FACTORS) == set(f.columns)


def test_counts_carry_programme_activity(cohort):
    counts = cohort.counts
    logcpm = np.log1p(counts.div(counts.sum(1), axis=0) * 1e6)
    z = (logcpm - logcpm.mean()) / logcpm.std()
    genes = [g for g, s in cohort.gene_sets["fibrosis_ecm"].items() if s > 0]
    score = z[genes].mean(1)
    assert np.corrcoef(score, cohort.activities.loc[counts.index, "fibrosis_ecm"])[0, 1] > 0.8
    assert np.all(counts.to_numpy() >= 0) and counts.to_numpy().dtype.kind == "i"
    var_over_mean = (counts.var() / counts.mean()).median()
    assert var_over_mean > 2  # negative-binomial overdispersion, not Poisson


def test_site_effects_are_planted(cohort):
    t1 = cohort.imaging.native_t1_ms.dropna()
    by_field = t1.groupby(cohort.patients.loc[t1.index, "field_strength_t"]).mean()
    assert by_field[3.0] - by_field[1.5] > 150  # 3 T native T1 is longer
    flat = simulate_cohort(n_patients=300, seed=3, site_effects=False)
    t1f = flat.imaging.native_t1_ms.dropna()
    assert t1f.groupby(flat.patients.loc[t1f.index, "site"]).mean().std() < 15


def test_rendered_patients_match_their_geometry(tmp_path):
    c = simulate_cohort(n_patients=50, seed=11, render_images=2)
    assert len(c.images) == 2
    for pid, item in c.images.items():
        geo = c.geometry.loc[pid]
        truth = item["cine"].truth
        assert abs(truth["lv_edv_ml"] - geo.lv_edv_ml) / geo.lv_edv_ml < 0.05
        a, b, k = c.truth["mass_fit"]
        mass_model = np.exp(a + b * np.log(geo.lv_edv_ml) + k * np.log(geo.myo_thickness_mm))
        assert abs(truth["lv_mass_g"] - mass_model) / mass_model < 0.06
        assert abs(item["lge"].truth["scar_burden_pct"] - geo.scar_burden_pct) < 6.0
    out = c.write(tmp_path / "cohort")
    for name in ("patients.parquet", "imaging.parquet", "imaging.csv", "activities.parquet", "omics.h5ad", "truth.json"):
        assert (out / name).is_file()
    assert len(list((out / "images").glob("*.npz"))) == 2
    back = pd.read_parquet(out / "imaging.parquet")
    pd.testing.assert_frame_equal(back, c.imaging)
    assert json.loads((out / "truth.json").read_text())["spec"]["seed"] == 11
    import anndata as ad

    adata = ad.read_h5ad(out / "omics.h5ad")
    assert adata.uns["omics_kind"] == "bulk" and "counts" in adata.layers and adata.n_obs == len(c.counts)
