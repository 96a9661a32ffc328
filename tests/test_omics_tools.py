"""QC, ULM scoring (against decoupler), embedding and determinism of the omics tools."""

from __future__ import annotations

import numpy as np
import pytest

from cardiomics.synthetic import omics_sim
from cardiomics.tools import ArtifactStore, ToolContext, call_tool
from cardiomics.tools.omics import celltype_markers, programme_sets

MARKERS = {k: list(v.genes) for k, v in celltype_markers().items()}


@pytest.fixture(scope="module")
def spots(tmp_path_factory):
    root = tmp_path_factory.mktemp("omtools")
    adata = omics_sim.simulate_spatial(n_side=14, seed=2, markers=MARKERS, n_genes=600)
    path = omics_sim.write(adata, root / "spots.h5ad")
    return root, path, adata


def test_gene_sets_have_citations_and_unique_genes():
    for s in {**programme_sets(), **celltype_markers()}.values():
        assert len(s.citation) > 30 and len(set(s.genes)) == len(s.genes) == len(s.weights)
    hf = programme_sets()["heart_failure_reheat"]
    assert "Ramirez Flores" in hf.citation and sum(w > 0 for w in hf.weights) == 50


def test_qc_reports_removed_and_normalises(spots):
    root, path, adata = spots
    ctx = ToolContext(store=ArtifactStore(root / "s1"))
    oid = call_tool("load_omics", {"path": str(path)}, ctx).omics_id
    out = call_tool("omics_qc", {"omics_id": oid, "min_counts": 3500, "min_cells": 1}, ctx)
    expected = int((np.asarray(adata.layers["counts"].sum(axis=1)).ravel() < 3500).sum())
    assert out.removed["obs_below_min_counts"] == expected > 0
    assert out.n_obs_kept == adata.n_obs - expected
    assert out.parameters["target_sum"] == 1e4 and out.provenance.parameters["min_counts"] == 3500
    import anndata as ad

    proc = ad.read_h5ad(ctx.store.root / "omx" / f"{ctx.store.digest(out.omics_id)}.h5ad")
    assert np.allclose(np.expm1(proc.X.toarray()).sum(axis=1), 1e4, rtol=1e-3)
    assert "highly_variable" in proc.var and "spatial" in proc.obsm
    # scoring accepts the processed id
    res = call_tool("score_programmes", {"omics_id": out.omics_id, "collection": "celltype_markers", "n_null": 20}, ctx)
    assert res.normalisation == "as stored by omics_qc"


def test_ulm_matches_decoupler(spots):
    dc = pytest.importorskip("decoupler")
    import anndata as ad
    import pandas as pd

    from cardiomics.tools.omics._handle import normalise_log1p
    from cardiomics.tools.omics._ulm import score_sets

    _root, path, _ = spots
    adata = ad.read_h5ad(path)
    x = normalise_log1p(adata.layers["counts"], 1e4)
    sets = {k: (list(v.genes), list(v.weights)) for k, v in celltype_markers().items()}
    ours = score_sets([(0, x)], x.shape[0], list(adata.var_names), sets, None, 0, 25, 0)
    net = pd.DataFrame([(k, g, 1.0) for k, (gs, _w) in sets.items() for g in gs], columns=["source", "target", "weight"])
    lx = ad.AnnData(X=x.toarray(), obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names))
    dc.mt.ulm(lx, net, tmin=2, verbose=False)
    ref = lx.obsm["score_ulm"]
    for j, name in enumerate(ours.names):
        assert np.allclose(ours.score[:, j], ref[name].to_numpy(), atol=1e-3), name


def test_embedding_bulk_and_projection(tmp_path):
    bulk = omics_sim.simulate_bulk(n_samples=16, seed=3, markers=MARKERS, n_genes=500,
                                   programme_genes=list(programme_sets()["fibrosis_ecm"].genes), programme_fold=4.0)
    ctx = ToolContext(store=ArtifactStore(tmp_path / "s"), seed=0)
    oid = call_tool("load_omics", {"path": str(omics_sim.write(bulk, tmp_path / "b.h5ad"))}, ctx).omics_id
    out = call_tool("omics_embedding", {"omics_id": oid, "n_components": 4}, ctx)
    assert out.units == "samples" and out.n_units == 16 and len(out.vector) == 4
    evr = out.explained_variance_ratio
    assert all(a >= b for a, b in zip(evr, evr[1:])) and 0 < sum(evr) <= 1
    pc1 = ctx.store.arrays(out.embedding_id)["coordinates"][:, 0]
    active = bulk.obs["programme_active"].to_numpy()
    from sklearn.metrics import roc_auc_score

    assert max(roc_auc_score(active, pc1), 1 - roc_auc_score(active, pc1)) == 1.0  # PC1 = planted programme
    again = call_tool("omics_embedding", {"omics_id": oid, "basis_id": out.basis_id}, ctx)
    assert np.allclose(again.vector, out.vector)


def test_spatial_pseudobulk_embedding_and_determinism(spots):
    root, path, _ = spots
    outs = []
    for _ in range(2):
        ctx = ToolContext(store=ArtifactStore(root / "det"), seed=7)
        oid = call_tool("load_omics", {"path": str(path)}, ctx).omics_id
        outs.append((call_tool("omics_embedding", {"omics_id": oid, "group_key": "domain_true", "n_components": 2}, ctx),
                     call_tool("spatial_domains", {"omics_id": oid, "n_domains": 4}, ctx),
                     call_tool("score_programmes", {"omics_id": oid, "n_null": 30}, ctx)))
    for a, b in zip(*outs):
        assert a.model_dump(exclude={"provenance"}) == b.model_dump(exclude={"provenance"})
    emb, dom, _ = outs[0]
    assert emb.units == "pseudobulk groups" and emb.n_units == 4
    assert dom.n_domains == 4 and dom.figure_id.startswith("fig-")


def test_wrong_kind_is_refused(tmp_path):
    from cardiomics.errors import InputError

    bulk = omics_sim.simulate_bulk(n_samples=5, seed=1, n_genes=200)
    ctx = ToolContext(store=ArtifactStore(tmp_path / "s"))
    oid = call_tool("load_omics", {"path": str(omics_sim.write(bulk, tmp_path / "b.h5ad"))}, ctx).omics_id
    with pytest.raises(InputError) as exc:
        call_tool("deconvolve_spots", {"omics_id": oid}, ctx)
    assert exc.value.code == "not-spatial"
