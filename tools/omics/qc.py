"""``omics_qc``: per-observation QC metrics, filtering, normalisation and highly variable genes.

scanpy's own functions do the work (``calculate_qc_metrics``, ``filter_cells``, ``filter_genes``,
``normalize_total``, ``log1p``, ``highly_variable_genes`` flavour 'seurat'), so the conventions
are scanpy's: library size to ``target_sum`` then natural-log ``log1p``; mitochondrial genes are
those whose symbol starts with 'MT-'. The processed dataset (raw counts kept in
``layers['counts']``, log-normalised values in ``X``, ``var['highly_variable']``) is stored and
returned as a new omics_id.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import structlog
from pydantic import BaseModel, Field

from cardiomics.errors import InputError

from .._registry import ToolContext, tool
from ..contract import Estimate, Interval, ToolOutput
from . import _examples, _h5, _handle

log = structlog.get_logger(__name__)

DEFAULTS = {  # kind -> (min_counts, min_genes, min_cells, max_pct_mt, target_sum)
    "single_cell": (500, 200, 3, 20.0, 1e4),
    "spatial": (100, 50, 3, None, 1e4),
    "bulk": (100_000, 0, 1, None, 1e6),
}


class OmicsQCInput(BaseModel):
    omics_id: str = Field(description="Dataset id from load_omics.")
    min_counts: int | None = Field(None, ge=0, description="Drop observations with fewer total counts (default by kind).")
    min_genes: int | None = Field(None, ge=0, description="Drop observations with fewer detected genes.")
    min_cells: int | None = Field(None, ge=0, description="Drop genes detected in fewer observations.")
    max_pct_mt: float | None = Field(None, gt=0, le=100, description="Drop observations above this % mitochondrial counts "
                                                                     "(default: 20 for single cell, off otherwise).")
    target_sum: float | None = Field(None, gt=0, description="Library size after normalisation (1e4 cells/spots, 1e6 bulk).")
    n_top_genes: int = Field(2000, ge=10, description="Number of highly variable genes (scanpy flavour 'seurat').")


class QCMetric(BaseModel):
    name: Literal["total_counts", "n_genes_by_counts", "pct_counts_mt"]
    median: float
    interval: Interval = Field(description="5th-95th percentile over kept observations.")


class OmicsQC(ToolOutput):
    omics_id: str = Field(description="Id of the processed dataset (log-normalised X, raw counts kept).")
    kind: str
    n_obs_in: int
    n_obs_kept: int
    n_genes_in: int
    n_genes_kept: int
    removed: dict[str, int] = Field(description="Observations/genes removed by each criterion, in the order applied.")
    parameters: dict = Field(description="Effective parameters (kind defaults filled in).")
    metrics: list[QCMetric]
    n_mito_genes: int
    n_highly_variable: int
    median_total_counts: Estimate
    normalisation: str


def _example(ctx: ToolContext) -> dict:
    return {"omics_id": _examples.loaded_id(ctx, _examples.example_spatial(ctx.store.root))}


@tool(role="analysis", example=_example)
def omics_qc(inp: OmicsQCInput, ctx: ToolContext) -> OmicsQC:
    """Quality control and normalisation of an omics dataset; returns a new processed omics_id.

    Use after load_omics and before scoring or embedding when you want filtering and highly
    variable genes (the scoring tools also accept a raw omics_id and normalise on the fly).
    Computes per-observation total counts, genes detected and % mitochondrial counts; removes
    observations/genes failing the thresholds (reported per criterion); normalises library size
    and log1p-transforms (scanpy conventions); flags highly variable genes. Needs raw counts.
    """
    import anndata as ad
    import scanpy as sc

    ds = _handle.resolve(ctx.store, inp.omics_id)
    _handle.used(ctx, ds)
    if ds.processed:
        raise InputError("already-processed", f"{inp.omics_id} is already QC-processed",
                         hint="pass the omics_id returned by load_omics")
    if ds.meta["counts_elem"] is None:
        raise InputError("no-raw-counts", "QC needs raw integer counts; this bulk dataset holds normalised values",
                         hint="score it directly with score_programmes, or provide counts in layers['counts']")
    d_counts, d_genes, d_cells, d_mt, d_target = DEFAULTS[ds.kind]
    params = {
        "min_counts": d_counts if inp.min_counts is None else inp.min_counts,
        "min_genes": d_genes if inp.min_genes is None else inp.min_genes,
        "min_cells": d_cells if inp.min_cells is None else inp.min_cells,
        "max_pct_mt": d_mt if inp.max_pct_mt is None else inp.max_pct_mt,
        "target_sum": d_target if inp.target_sum is None else inp.target_sum,
        "n_top_genes": inp.n_top_genes, "hvg_flavor": "seurat", "mito_prefix": "MT-",
    }
    with ds.open() as f:
        counts = _h5.read_rows(f, ds.meta["counts_elem"])
        obs = _h5.read_obs(f)
        coords = _h5.read_coords(f) if ds.kind == "spatial" else None
    genes = ds.genes()
    obs.index = [str(i) for i in range(len(obs))]  # positions, not source names
    obs["source_index"] = np.arange(len(obs))
    adata = ad.AnnData(X=counts, obs=obs)
    adata.var_names = genes
    if coords is not None:
        adata.obsm["spatial"] = coords
    adata.var["mt"] = adata.var_names.str.upper().str.startswith("MT-")
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    n_obs_in, n_genes_in = adata.n_obs, adata.n_vars
    removed: dict[str, int] = {}

    def drop(mask: np.ndarray, label: str) -> None:
        nonlocal adata
        removed[label] = int((~mask).sum())
        if (~mask).any():
            adata = adata[mask].copy()

    drop(adata.obs["total_counts"].to_numpy() >= params["min_counts"], "obs_below_min_counts")
    drop(adata.obs["n_genes_by_counts"].to_numpy() >= params["min_genes"], "obs_below_min_genes")
    if params["max_pct_mt"] is not None:
        drop(adata.obs["pct_counts_mt"].to_numpy() <= params["max_pct_mt"], "obs_above_max_pct_mt")
    if adata.n_obs < 2:
        raise InputError("all-filtered", f"QC left {adata.n_obs} of {n_obs_in} observations",
                         hint=f"relax the thresholds (now {params})")
    gene_keep, _ = sc.pp.filter_genes(adata, min_cells=params["min_cells"], inplace=False)
    removed["genes_below_min_cells"] = int((~gene_keep).sum())
    adata = adata[:, gene_keep].copy()
    if adata.n_vars < 10:
        raise InputError("all-filtered", f"QC left {adata.n_vars} genes", hint="lower min_cells")
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=params["target_sum"])
    sc.pp.log1p(adata)
    n_top = min(params["n_top_genes"], adata.n_vars)
    sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=n_top)
    if ds.meta.get("image"):  # keep the tissue image for figures
        with ds.open() as f:
            img = _h5.read_image(f, ds.meta["image"])
        adata.uns["spatial"] = {"tissue": {"images": {"lowres": img},
                                           "scalefactors": {"tissue_lowres_scalef": ds.meta["image"]["scale"] or 1.0,
                                                            "spot_diameter_fullres": ds.meta["image"]["spot_diameter_fullres"] or 0.0}}}
    adata.uns["omics_kind"] = ds.kind
    image = None
    if ds.meta.get("image"):
        image = {"elem": "uns/spatial/tissue/images/lowres", "resolution": "lowres",
                 "scale": ds.meta["image"]["scale"], "spot_diameter_fullres": ds.meta["image"]["spot_diameter_fullres"]}
    out_id = _handle.save_processed(ctx.store, adata, {"kind": ds.kind, "parent": inp.omics_id,
                                                       "parameters": params, "image": image})
    qc = adata.obs

    def metric(col: str) -> QCMetric:
        v = qc[col].to_numpy(dtype=float)
        return QCMetric(name=col, median=round(float(np.median(v)), 3),
                        interval=Interval(lower=round(float(np.percentile(v, 5)), 3),
                                          upper=round(float(np.percentile(v, 95)), 3), level=0.9,
                                          method="5th-95th percentile over kept observations"))

    log.info("omics.qc", kept=adata.n_obs, genes=adata.n_vars)
    tc = qc["total_counts"].to_numpy(dtype=float)
    return OmicsQC(
        omics_id=out_id, kind=ds.kind, n_obs_in=n_obs_in, n_obs_kept=int(adata.n_obs), n_genes_in=n_genes_in,
        n_genes_kept=int(adata.n_vars), removed=removed, parameters=params,
        metrics=[metric("total_counts"), metric("n_genes_by_counts"), metric("pct_counts_mt")],
        n_mito_genes=int(adata.var["mt"].sum()), n_highly_variable=int(adata.var["highly_variable"].sum()),
        median_total_counts=Estimate.of(np.median(tc), "counts", ndigits=1),
        normalisation=f"scanpy normalize_total(target_sum={params['target_sum']:g}) + log1p (natural log)",
    )
