"""Planted truth recovered from simulated spots and bulk samples (cardiomics.synthetic.omics_sim)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cardiomics.synthetic import omics_sim
from cardiomics.tools import ArtifactStore, ToolContext, call_tool
from cardiomics.tools.omics import celltype_markers, programme_sets

MARKERS = {k: list(v.genes) for k, v in celltype_markers().items()}
FIBROSIS = list(programme_sets()["fibrosis_ecm"].genes)


@pytest.fixture(scope="module")
def spatial(tmp_path_factory):
    root = tmp_path_factory.mktemp("omsim")
    prof = omics_sim.celltype_profiles(MARKERS, n_genes=1500, extra_genes=FIBROSIS, seed=3)
    spots = omics_sim.simulate_spatial(n_side=24, seed=3, profiles=prof, programme_genes=FIBROSIS,
                                       programme_fraction=0.2, programme_fold=2.5)
    ref = omics_sim.simulate_reference(prof, n_per_type=80, seed=4)
    ctx = ToolContext(store=ArtifactStore(root / "store"), seed=0)
    sid = call_tool("load_omics", {"path": str(omics_sim.write(spots, root / "spots.h5ad"))}, ctx).omics_id
    rid = call_tool("load_omics", {"path": str(omics_sim.write(ref, root / "ref.h5ad"))}, ctx).omics_id
    return ctx, spots, sid, rid, prof


def test_deconvolution_recovers_proportions(spatial):
    ctx, spots, sid, rid, prof = spatial
    out = call_tool("deconvolve_spots", {"omics_id": sid, "reference_id": rid}, ctx)
    props = ctx.store.arrays(out.proportions_id)["proportions"]
    truth = spots.obsm["proportions_true"]
    order = [list(prof.cell_types).index(c.cell_type) for c in out.cell_types]
    mae = float(np.abs(props - truth[:, order]).mean())
    assert mae <= 0.05, mae
    assert np.allclose(props.sum(axis=1), 1.0, atol=1e-6)
    assert out.max_abs_sum_error <= 1e-6


def test_planted_programme_detected(spatial):
    ctx, spots, sid, _rid, _prof = spatial
    out = call_tool("score_programmes", {"omics_id": sid, "names": ["fibrosis_ecm"], "n_null": 100}, ctx)
    arr = ctx.store.arrays(out.scores_id)
    truth = spots.obs["programme_active"].to_numpy()
    auroc = roc_auc_score(truth, arr["z"][:, 0])
    assert auroc >= 0.9, auroc
    fib = out.programmes[0]
    assert fib.fraction_active > 0.1 and fib.p_fraction_active < 1e-6
    # spots without the programme: per-spot false-positive rate stays near nominal
    fpr_inactive = float((arr["p"][~truth, 0] < 0.05).mean())
    assert fpr_inactive < 0.15, fpr_inactive


def test_random_and_permuted_sets_hold_nominal_rate(spatial):
    ctx, spots, sid, _rid, prof = spatial
    rng = np.random.default_rng(11)
    fillers = [g for g in prof.genes if g.startswith("SIMG")]
    custom = {f"random{i}": list(rng.choice(fillers, 15, replace=False)) for i in range(4)}
    out = call_tool("score_programmes", {"omics_id": sid, "collection": "programmes", "names": [],
                                         "custom_sets": custom, "n_null": 100}, ctx)
    p = ctx.store.arrays(out.scores_id)["p"]
    rate = float((p < 0.05).mean())
    assert 0.02 <= rate <= 0.09, rate
    # permuted labels: the fibrosis scores shuffled across spots no longer track the planted truth
    fib = call_tool("score_programmes", {"omics_id": sid, "names": ["fibrosis_ecm"], "n_null": 100}, ctx)
    z = ctx.store.arrays(fib.scores_id)["z"][:, 0]
    truth = spots.obs["programme_active"].to_numpy()
    aucs = [roc_auc_score(truth, rng.permutation(z)) for _ in range(20)]
    assert abs(float(np.mean(aucs)) - 0.5) < 0.05


def test_heart_failure_signature_scores_failing_above_control(tmp_path, data_dir):
    import pandas as pd

    sig_path = data_dir / "omics" / "heart_failure_signature" / "signature.csv"
    if not sig_path.exists():
        pytest.skip(f"ReHeaT signature absent at {sig_path}")
    sig = pd.read_csv(sig_path)
    signature = dict(zip(sig["gene"], sig["weight"]))
    adata = omics_sim.simulate_bulk(n_samples=12, seed=5, markers=MARKERS, n_genes=0, signature=signature,
                                    signature_log_fold=1.0, active_fraction=0.5)
    path = omics_sim.write(adata, tmp_path / "hf_bulk.h5ad")
    ctx = ToolContext(store=ArtifactStore(tmp_path / "store"), seed=0)
    oid = call_tool("load_omics", {"path": str(path)}, ctx).omics_id
    out = call_tool("score_programmes", {"omics_id": oid, "names": ["heart_failure_reheat"], "n_null": 100}, ctx)
    hf = out.programmes[0]
    scores = np.array([o.score for o in hf.per_obs])
    case = adata.obs["case"].to_numpy()
    assert hf.n_genes_found == 100
    assert scores[case].min() > scores[~case].max()
    p = np.array([o.p_empirical for o in hf.per_obs])
    assert (p[case] < 0.05).all()
