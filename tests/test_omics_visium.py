"""The real 10x Visium human heart section (shared data): markers, deconvolution, domains figure."""

from __future__ import annotations

import numpy as np
import pytest

from cardiomics.hashing import sha256_file
from cardiomics.tools import ArtifactStore, ToolContext, call_tool

REL = "omics/visium_human_heart/example_visium_reduced.h5ad"


@pytest.fixture(scope="module")
def visium(tmp_path_factory):
    from conftest import shared_data

    data = shared_data()
    if data is None or not (data / REL).exists():
        pytest.skip("Visium section not found (set CARDIOMICS_DATA)")
    path = data / REL
    ctx = ToolContext(store=ArtifactStore(tmp_path_factory.mktemp("visium")), seed=0)
    before = sha256_file(path)
    out = call_tool("load_omics", {"path": str(path)}, ctx)
    return ctx, path, out, before


def test_loads_as_spatial_with_image(visium):
    _ctx, _path, out, _ = visium
    assert out.kind == "spatial" and out.n_obs == 1046 and out.n_genes == 1000
    assert out.counts_source == "layers/counts" and out.has_tissue_image


def test_cardiomyocyte_score_highest_in_myocardial_cluster(visium):
    """Myocardium = the cluster whose own markers are most depleted of stromal (ECM) genes.

    The section's own annotation is its leiden clusters. Each cluster's marker statistics
    (Wilcoxon vs the rest, on the file's own log counts) are averaged over the Hallmark EMT/ECM
    genes (an external reference, disjoint from the shipped cardiomyocyte markers): the most
    depleted cluster is the purest myocardium, the most enriched the most stromal.
    """
    import anndata as ad
    import scanpy as sc

    from conftest import shared_data

    ctx, path, out, _ = visium
    gmt = shared_data() / "genesets" / "h.all.v7.0.symbols.gmt"
    emt = next(line.rstrip("\n").split("\t")[2:] for line in open(gmt)
               if line.startswith("HALLMARK_EPITHELIAL_MESENCHYMAL_TRANSITION\t"))
    adata = ad.read_h5ad(path)
    emt = [g for g in emt if g in adata.var_names]
    from cardiomics.tools.omics import celltype_markers

    assert not set(emt) & set(celltype_markers()["cardiomyocyte"].genes)
    sc.tl.rank_genes_groups(adata, "leiden", method="wilcoxon", layer="logcounts", use_raw=False)
    clusters = list(adata.obs["leiden"].cat.categories)
    stromal = {c: sc.get.rank_genes_groups_df(adata, c).set_index("names").loc[emt, "scores"].mean() for c in clusters}
    myocardium = min(stromal, key=stromal.get)
    most_stromal = max(stromal, key=stromal.get)

    res = call_tool("score_programmes", {"omics_id": out.omics_id, "collection": "celltype_markers",
                                         "names": ["cardiomyocyte"], "n_null": 50}, ctx)
    cm = ctx.store.arrays(res.scores_id)["score"][:, 0]
    labels = adata.obs["leiden"].astype(str).to_numpy()
    by_cluster = {c: float(cm[labels == c].mean()) for c in clusters}
    assert max(by_cluster, key=by_cluster.get) == myocardium
    assert by_cluster[myocardium] > by_cluster[most_stromal]


def test_marker_deconvolution_sums_to_one(visium):
    ctx, _path, out, _ = visium
    res = call_tool("deconvolve_spots", {"omics_id": out.omics_id}, ctx)
    props = ctx.store.arrays(res.proportions_id)["proportions"]
    assert props.shape[0] == 1046
    assert np.all(props >= 0)
    assert np.abs(props.sum(axis=1) - 1.0).max() <= 1e-6
    shares = {c.cell_type: c.mean_proportion.value for c in res.cell_types}
    assert max(shares, key=shares.get) == "cardiomyocyte"


def test_domains_figure_over_tissue_image(visium):
    ctx, path, out, before = visium
    res = call_tool("spatial_domains", {"omics_id": out.omics_id, "compare_key": "leiden"}, ctx)
    png = open(res.figure_path, "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    assert res.has_tissue_image and sum(res.domain_sizes) == 1046
    assert res.spatial_coherence > 0.5  # smoothed domains are spatially contiguous
    assert sha256_file(path) == before
