"""``omics_embedding``: a low-dimensional molecular representation for fusion.

Units are samples (bulk) or pseudobulk profiles (single cell / spatial: counts summed per group
of ``group_key``, or per cell/spot when no key is given). Each unit is library-size normalised to
counts per million and log1p-transformed; PCA on the most variable genes (centred, not scaled)
gives the basis, stored with its gene list and centre so that other datasets can be projected
onto it (``basis_id``). The dataset's own vector is its whole-file pseudobulk projected on the basis.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import structlog
from pydantic import BaseModel, Field

from cardiomics.errors import InputError

from .._registry import ToolContext, tool
from ..contract import ToolOutput
from . import _examples, _handle
from ._text import quote

log = structlog.get_logger(__name__)
MAX_FIT_UNITS = 20000


class OmicsEmbeddingInput(BaseModel):
    omics_id: str = Field(description="Dataset id from load_omics or omics_qc.")
    n_components: int = Field(10, ge=1, le=50, description="Dimensions of the embedding.")
    group_key: str | None = Field(None, description="obs column defining pseudobulk groups (e.g. sample, donor, domain).")
    basis_id: str | None = Field(None, description="Project onto a stored basis (from an earlier omics_embedding) instead of fitting one.")
    n_top_genes: int = Field(2000, ge=10, description="Most variable genes used to fit the basis.")


class OmicsEmbedding(ToolOutput):
    embedding_id: str = Field(description="Stored units x components coordinates.")
    basis_id: str = Field(description="Stored PCA basis (genes, centre, loadings) for projecting other data.")
    units: str = Field(description="'samples', 'pseudobulk groups' or 'cells/spots'.")
    n_units: int
    n_components: int
    n_genes_used: int
    explained_variance_ratio: list[float] = Field(description="Per component, on the fitting data.")
    vector: list[float] = Field(description="The whole dataset's pseudobulk projected on the basis.")
    group_labels: list[str] | None = Field(None, description="Pseudobulk group of each embedding row (quoted).")


def _example(ctx: ToolContext) -> dict:
    return {"omics_id": _examples.loaded_id(ctx, _examples.example_bulk(ctx.store.root)), "n_components": 3}


def _cpm_log(x: np.ndarray) -> np.ndarray:
    tot = x.sum(axis=1, keepdims=True)
    return np.log1p(np.divide(x * 1e6, tot, out=np.zeros_like(x), where=tot > 0))


@tool(role="analysis", example=_example)
def omics_embedding(inp: OmicsEmbeddingInput, ctx: ToolContext) -> OmicsEmbedding:
    """Low-dimensional molecular embedding (PCA) of a dataset, for fusion with imaging.

    Use after load_omics (or omics_qc). Bulk: PCA over samples. Single cell / spatial: pseudobulk
    per obs[group_key] group (or per cell/spot without a key), then PCA. Returns explained
    variance, the stored coordinates (embedding_id), the stored basis (basis_id) and the dataset's
    pseudobulk vector; pass basis_id to project a new dataset into an existing basis.
    """
    ds = _handle.resolve(ctx.store, inp.omics_id)
    _handle.used(ctx, ds)
    genes = ds.genes()
    counts_like = ds.meta["counts_elem"] is not None or ds.processed
    blocks = ds.iter_counts() if (counts_like and not ds.processed) else None
    if ds.processed:
        from . import _h5

        with ds.open() as f:
            mat = _h5.read_rows(f, "layers/counts")
    elif blocks is not None:
        mat = sp.vstack([b for _, b in blocks], format="csr")
    else:  # bulk normalised values: back to a linear scale for pseudobulk sums
        mat = sp.vstack([b for _, b in ds.iter_lognorm()], format="csr")
        mat.data = np.expm1(mat.data)
    labels = None
    if inp.group_key:
        obs = ds.obs()
        if inp.group_key not in obs.columns:
            raise InputError("missing-column", f"obs has no column {quote(inp.group_key)!r}",
                             hint=f"obs columns: {', '.join(quote(c, 40) for c in list(obs.columns)[:20])}")
        lab = obs[inp.group_key].astype(str).to_numpy()
        labels = sorted(set(lab))
        ind = sp.csr_matrix((np.ones(len(lab)), ([labels.index(v) for v in lab], np.arange(len(lab)))),
                            shape=(len(labels), len(lab)))
        units_mat = np.asarray((ind @ mat).todense(), dtype=np.float64)
        units = "pseudobulk groups"
    else:
        units_mat = None
        units = "samples" if ds.kind == "bulk" else "cells/spots"
    whole = _cpm_log(np.asarray(mat.sum(axis=0), dtype=np.float64))
    if inp.basis_id:
        basis = ctx.store.arrays(inp.basis_id)
        bmeta = ctx.store.meta(inp.basis_id)
        gi = {g: i for i, g in enumerate(genes)}
        missing = [g for g in bmeta["genes"] if g not in gi]
        if len(missing) > 0.5 * len(bmeta["genes"]):
            raise InputError("few-shared-genes", f"only {len(bmeta['genes']) - len(missing)} of the basis genes "
                             "are in this dataset", hint="project data measured on the same genes")
        cols = np.array([gi.get(g, -1) for g in bmeta["genes"]])
        centre, load, evr = basis["centre"], basis["loadings"], basis["explained_variance_ratio"]
        basis_id = inp.basis_id

        def take(x: np.ndarray) -> np.ndarray:
            out = np.where(cols[None, :] >= 0, x[:, np.maximum(cols, 0)], centre[None, :])
            return (out - centre) @ load.T
    else:
        fit = units_mat if units_mat is not None else None
        if fit is None:
            rng = np.random.default_rng(ctx.seed)
            rows = np.arange(mat.shape[0])
            if len(rows) > MAX_FIT_UNITS:
                rows = np.sort(rng.choice(rows, MAX_FIT_UNITS, replace=False))
            fit = np.asarray(mat[rows].todense(), dtype=np.float64)
        logfit = _cpm_log(fit)
        if logfit.shape[0] < 3:
            raise InputError("too-few-units", f"{logfit.shape[0]} units: PCA needs at least 3",
                             hint="use a group_key with 3 or more groups, or project with basis_id")
        var = logfit.var(axis=0)
        cols = np.sort(np.argsort(-var, kind="stable")[: min(inp.n_top_genes, len(var))])
        from sklearn.decomposition import PCA

        k = min(inp.n_components, logfit.shape[0] - 1, len(cols))
        centre = logfit[:, cols].mean(axis=0)
        pca = PCA(n_components=k, svd_solver="full", random_state=ctx.seed).fit(logfit[:, cols] - centre)
        load, evr = pca.components_, pca.explained_variance_ratio_
        # sign convention: largest-magnitude loading of each component positive (deterministic)
        flip = np.sign(load[np.arange(k), np.abs(load).argmax(axis=1)])
        load = load * flip[:, None]
        basis_id = ctx.store.put("ombs", {"centre": centre, "loadings": load, "explained_variance_ratio": evr},
                                 {"genes": [genes[c] for c in cols], "omics_id": inp.omics_id,
                                  "normalisation": "CPM + log1p", "seed": ctx.seed})

        def take(x: np.ndarray) -> np.ndarray:
            return (x[:, cols] - centre) @ load.T
    if units_mat is not None:
        coords = take(_cpm_log(units_mat))
    else:
        coords = np.vstack([take(_cpm_log(np.asarray(mat[a:a + 4096].todense(), dtype=np.float64)))
                            for a in range(0, mat.shape[0], 4096)])
    vector = take(whole)[0]
    emb_id = ctx.store.put("omem", {"coordinates": coords.astype(np.float64)},
                           {"omics_id": inp.omics_id, "basis_id": basis_id, "units": units})
    log.info("omics.embedding", n_units=len(coords), k=len(vector))
    return OmicsEmbedding(
        embedding_id=emb_id, basis_id=basis_id, units=units, n_units=int(coords.shape[0]),
        n_components=int(len(vector)), n_genes_used=int(load.shape[1]),
        explained_variance_ratio=[round(float(v), 6) for v in evr], vector=[round(float(v), 6) for v in vector],
        group_labels=[quote(v, 64) for v in labels] if labels is not None else None,
    )
