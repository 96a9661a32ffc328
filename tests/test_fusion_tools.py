"""Fusion tools through the registry: the demo phantom finds its neighbours, predictions follow the truth."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from cardiomics.errors import InputError
from cardiomics.synthetic.cohort import simulate_cohort
from cardiomics.tools import ArtifactStore, ToolContext, call_tool


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    mp = pytest.MonkeyPatch()
    mp.setenv("CARDIOMICS_COHORT_DIR", str(root / "cohort"))
    yield ToolContext(store=ArtifactStore(root / "store"), seed=0)
    mp.undo()


@pytest.fixture(scope="module")
def demo(ctx):
    """The demo-style phantom study, measured by the imaging tools on its rendered labels."""
    import json

    from cardiomics.tools.imaging._regional import example_segmentation

    seg = example_segmentation(ctx)
    func = call_tool("cardiac_function", {"segmentation_id": seg}, ctx)
    reg = call_tool("regional_function", {"segmentation_id": seg}, ctx)
    truth = json.loads((ctx.store.root / "sample" / "truth.json").read_text())
    return func, reg, truth


def _imaging(row) -> dict:
    return {k: float(v) for k, v in row.items() if np.isfinite(v)}


def test_demo_phantom_projects_and_finds_five_neighbours(ctx, demo):
    func, reg, truth = demo
    proj = call_tool("fusion_project", {"cardiac_function": func.model_dump(mode="json"),
                                        "regional_function": reg.model_dump(mode="json"), "sex": "female"}, ctx)
    assert proj.imaging_features_used["sex_male"] == 0.0
    assert proj.modalities == ["imaging"] and proj.provenance.models[0].id == "fusion-mvae"
    assert proj.imaging_feature_sources["lv_edv_ml"] == "cardiac_function"
    assert proj.imaging_feature_sources["wall_max_mm"] == "regional_function"
    assert "t2_ms" in proj.imaging_features_missing and 0 < proj.mean_posterior_sd < 1
    nb = call_tool("cohort_neighbours", {"projection_id": proj.projection_id, "k": 5}, ctx)
    assert len(nb.neighbours) == 5 and all(n.patient_id.startswith("SYN") for n in nb.neighbours)
    d = [n.distance for n in nb.neighbours]
    assert d == sorted(d)
    edv = truth["truth"]["lv_edv_ml"]
    assert abs(nb.median_neighbour_phenotypes["lv_edv_ml"] - edv) / edv < 0.3  # neighbours look like the phantom
    fig = call_tool("latent_figure", {"projection_id": proj.projection_id, "k": 5}, ctx)
    assert base64.b64decode(fig.figure.png_base64)[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.neighbour_ids == [n.patient_id for n in nb.neighbours]
    assert fig.figure.result_id == proj.projection_id


@pytest.fixture(scope="module")
def patients():
    c = simulate_cohort(n_patients=200, seed=31)
    paired = c.patients.index[c.patients.has_imaging & c.patients.has_omics & c.patients.has_mapping]
    fib = c.factors.loc[paired, "fibrosis"]
    return c, fib.idxmax(), fib.idxmin()


def test_virtual_transcriptomics_follows_planted_fibrosis(ctx, patients):
    c, hi, lo = patients
    out = {}
    for pid in (hi, lo):
        proj = call_tool("fusion_project", {"imaging": _imaging(c.imaging.loc[pid])}, ctx)
        vt = call_tool("virtual_transcriptomics", {"projection_id": proj.projection_id}, ctx)
        assert vt.label.startswith("PREDICTED") and all(p.status == "PREDICTED" for p in vt.programmes)
        assert all(p.measured_score is None for p in vt.programmes)
        out[pid] = {p.programme: p.score for p in vt.programmes}
    f_hi, f_lo = out[hi]["fibrosis_ecm"], out[lo]["fibrosis_ecm"]
    assert f_hi.value > f_lo.value + 1.0
    for est in (f_hi, f_lo):
        assert est.interval.level == 0.90 and est.interval.lower < est.value < est.interval.upper
    truth_order = c.activities.loc[hi, "fibrosis_ecm"] > c.activities.loc[lo, "fibrosis_ecm"]
    assert truth_order


def test_drivers_of_a_scarred_heart(ctx, patients):
    c, hi, _ = patients
    proj = call_tool("fusion_project", {"imaging": _imaging(c.imaging.loc[hi])}, ctx)
    dr = call_tool("prediction_drivers", {"projection_id": proj.projection_id, "programme": "fibrosis_ecm", "top_k": 3}, ctx)
    top = {d.feature for d in dr.drivers}
    assert top & {"lge_burden_pct", "ecv_pct", "native_t1_ms"}
    assert abs(dr.completeness_gap) < 0.1
    assert dr.drivers[0].direction == "raises"


def test_omics_narrows_the_posterior(ctx, patients):
    c, hi, _ = patients
    from cardiomics.models.fusion import load_reference

    ref = load_reference()
    z = ref.pre.omics_matrix(c.counts.loc[[hi]])[0]
    scores = {p: float(z[j]) for j, p in enumerate(ref.pre.programmes)}
    img = _imaging(c.imaging.loc[hi])
    site = int(c.patients.loc[hi, "site"])
    a = call_tool("fusion_project", {"imaging": img, "site": site}, ctx)
    b = call_tool("fusion_project", {"imaging": img, "omics_programme_scores": scores, "site": site}, ctx)
    assert b.modalities == ["imaging", "omics"] and b.mean_posterior_sd < a.mean_posterior_sd
    vt = call_tool("virtual_transcriptomics", {"projection_id": b.projection_id}, ctx)
    assert {p.programme: p.measured_score for p in vt.programmes}["fibrosis_ecm"] == pytest.approx(scores["fibrosis_ecm"], abs=1e-3)


def test_typed_errors(ctx):
    with pytest.raises(InputError) as e:
        call_tool("fusion_project", {"imaging": {"lv_edv_ml": 150.0}}, ctx)
    assert e.value.code == "too-few-imaging-features"
    with pytest.raises(InputError) as e:
        call_tool("fusion_project", {}, ctx)
    assert e.value.code == "no-modalities"
    with pytest.raises(InputError) as e:
        call_tool("cohort_neighbours", {"projection_id": "fus-" + "0" * 24}, ctx)
    assert e.value.code == "unknown-projection"
    proj = call_tool("fusion_project", {"omics_programme_scores": {"fibrosis_ecm": 1.0, "inflammation": 0.5}}, ctx)
    with pytest.raises(InputError) as e:
        call_tool("virtual_transcriptomics", {"projection_id": proj.projection_id}, ctx)
    assert e.value.code == "no-imaging"
    with pytest.raises(InputError) as e:
        call_tool("prediction_drivers", {"projection_id": proj.projection_id, "programme": "nonsense"}, ctx)
    assert e.value.code == "unknown-programme"
