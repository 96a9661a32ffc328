"""Bad AnnData files are refused with a clear InputError naming the file; none is modified."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cardiomics.errors import InputError
from cardiomics.hashing import sha256_file
from cardiomics.synthetic import omics_sim
from cardiomics.tools import ArtifactStore, ToolContext, call_tool


def _ctx(tmp_path):
    return ToolContext(store=ArtifactStore(tmp_path / "store"))


def _spatial(tmp_path, name="good.h5ad"):
    adata = omics_sim.simulate_spatial(n_side=8, seed=1, n_genes=200)
    return omics_sim.write(adata, tmp_path / name), adata


def _refused(tmp_path, path, code, **args):
    before = sha256_file(path)
    with pytest.raises(InputError) as exc:
        call_tool("load_omics", {"path": str(path), **args}, _ctx(tmp_path))
    assert exc.value.code == code, exc.value
    assert path.name in exc.value.message
    assert sha256_file(path) == before
    return exc.value


def test_good_file_loads_and_is_untouched(tmp_path):
    path, _ = _spatial(tmp_path)
    before = sha256_file(path)
    out = call_tool("load_omics", {"path": str(path)}, _ctx(tmp_path))
    assert out.kind == "spatial" and out.n_obs == 64 and out.counts_source == "layers/counts"
    assert sha256_file(path) == before


def test_truncated_file(tmp_path):
    path, _ = _spatial(tmp_path)
    cut = tmp_path / "truncated.h5ad"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    err = _refused(tmp_path, cut, "unreadable-h5ad")
    assert "truncated or corrupt" in err.message


def test_non_integer_counts(tmp_path):
    _, adata = _spatial(tmp_path)
    adata.layers["counts"] = adata.layers["counts"].astype(np.float32) * 0.37
    path = omics_sim.write(adata, tmp_path / "fractional.h5ad")
    err = _refused(tmp_path, path, "non-integer-counts")
    assert "layers['counts']" in err.message


def test_spatial_without_coordinates(tmp_path):
    _, adata = _spatial(tmp_path)
    del adata.obsm["spatial"]
    path = omics_sim.write(adata, tmp_path / "nocoords.h5ad")
    err = _refused(tmp_path, path, "missing-coordinates")
    assert "obsm['spatial']" in err.message


def test_nan_coordinates(tmp_path):
    _, adata = _spatial(tmp_path)
    adata.obsm["spatial"][3, 0] = np.nan
    _refused(tmp_path, omics_sim.write(adata, tmp_path / "nancoords.h5ad"), "bad-coordinates")


def test_ensembl_ids_with_hint(tmp_path):
    _, adata = _spatial(tmp_path)
    symbols = list(adata.var_names)
    adata.var["gene_symbols"] = symbols
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    path = omics_sim.write(adata, tmp_path / "ensembl.h5ad")
    err = _refused(tmp_path, path, "ensembl-ids")
    assert "gene_symbols_column='gene_symbols'" in err.hint
    out = call_tool("load_omics", {"path": str(path), "gene_symbols_column": "gene_symbols"}, _ctx(tmp_path))
    assert out.n_genes == len(symbols)


def test_duplicated_genes(tmp_path):
    _, adata = _spatial(tmp_path)
    names = list(adata.var_names)
    names[5] = names[4]
    adata.var_names = names
    _refused(tmp_path, omics_sim.write(adata, tmp_path / "dups.h5ad"), "duplicate-genes")


def test_empty_and_all_zero(tmp_path):
    empty = ad.AnnData(X=sp.csr_matrix((0, 5), dtype=np.float32), var=pd.DataFrame(index=list("ABCDE")))
    _refused(tmp_path, omics_sim.write(empty, tmp_path / "empty.h5ad"), "empty-matrix")
    zeros = ad.AnnData(X=np.zeros((4, 3), np.float32), var=pd.DataFrame(index=["A1", "B2", "C3"]))
    _refused(tmp_path, omics_sim.write(zeros, tmp_path / "zeros.h5ad"), "empty-matrix")


def test_single_cell_without_raw_counts(tmp_path):
    rng = np.random.default_rng(0)
    x = sp.random(300, 50, density=0.1, format="csr", random_state=1, dtype=np.float32)
    x.data = np.log1p(x.data * 10 + rng.random(x.nnz).astype(np.float32))
    adata = ad.AnnData(X=x, var=pd.DataFrame(index=[f"G{i}" for i in range(50)]))
    _refused(tmp_path, omics_sim.write(adata, tmp_path / "lognorm_sc.h5ad"), "no-raw-counts")


def test_not_an_h5ad_and_missing(tmp_path):
    txt = tmp_path / "table.h5ad"
    txt.write_text("gene,count\nA,1\n")
    _refused(tmp_path, txt, "unreadable-h5ad")
    with pytest.raises(InputError) as exc:
        call_tool("load_omics", {"path": str(tmp_path / "absent.h5ad")}, _ctx(tmp_path))
    assert exc.value.code == "file-not-found"


def test_changed_source_is_refused(tmp_path):
    path, adata = _spatial(tmp_path)
    ctx = _ctx(tmp_path)
    oid = call_tool("load_omics", {"path": str(path)}, ctx).omics_id
    adata.layers["counts"] = adata.layers["counts"] * 2
    omics_sim.write(adata, path)
    with pytest.raises(InputError) as exc:
        call_tool("score_programmes", {"omics_id": oid}, ctx)
    assert exc.value.code == "source-changed"


def test_bulk_normalised_values_accepted_with_warning(tmp_path):
    adata = omics_sim.simulate_bulk(n_samples=6, seed=2, n_genes=300)
    adata.X = np.log1p(np.asarray(adata.X) / adata.X.sum(1, keepdims=True) * 1e6 + 0.5)
    del adata.layers["counts"]
    out = call_tool("load_omics", {"path": str(omics_sim.write(adata, tmp_path / "tpm.h5ad"))}, _ctx(tmp_path))
    assert out.kind == "bulk" and not out.has_raw_counts and out.warnings
