"""Spatial tools: ``deconvolve_spots`` (NNLS cell-type proportions) and ``spatial_domains``."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import structlog
from pydantic import BaseModel, Field

from cardiomics.errors import InputError
from cardiomics.hashing import sha256_array, sha256_json

from .._registry import ToolContext, tool
from ..contract import Estimate, Interval, ToolOutput
from . import _deconv, _domains, _examples, _h5, _handle, _plot, _ulm
from ._genesets import all_sets, celltype_markers
from ._text import quote

log = structlog.get_logger(__name__)


def _spatial(ctx: ToolContext, omics_id: str) -> _handle.Dataset:
    ds = _handle.resolve(ctx.store, omics_id)
    if ds.kind != "spatial":
        raise InputError("not-spatial", f"{omics_id} is {ds.kind.replace('_', '-')} data, not spatial",
                         hint="spatial tools need spots with obsm['spatial'] coordinates")
    _handle.used(ctx, ds)
    return ds


def _counts(ds: _handle.Dataset) -> sp.csr_matrix:
    with ds.open() as f:
        elem = "layers/counts" if ds.processed else ds.meta["counts_elem"]
        if elem is None:
            raise InputError("no-raw-counts", "deconvolution needs raw counts", hint="store counts in layers['counts']")
        return _h5.read_rows(f, elem)


# ----------------------------------------------------------------------------- deconvolution

class DeconvolveInput(BaseModel):
    omics_id: str = Field(description="Spatial dataset id (load_omics or omics_qc).")
    reference_id: str | None = Field(None, description="Single-cell reference dataset id (load_omics); "
                                     "without it the shipped cell-type markers give a relative composition.")
    cell_type_key: str = Field("cell_type", description="obs column of the reference holding cell-type labels.")
    n_markers_per_type: int = Field(50, ge=5, le=500, description="Reference genes per cell type used in the fit.")


class CellTypeShare(BaseModel):
    cell_type: str
    mean_proportion: Estimate = Field(description="Mean proportion over spots; interval = 5th-95th percentile over spots.")
    fraction_dominant: float = Field(description="Fraction of spots where this type has the largest proportion.")


class SpotDeconvolution(ToolOutput):
    proportions_id: str = Field(description="Stored spots x cell types proportions (rows sum to 1).")
    method: str
    reference: str = Field(description="'single-cell reference' or 'shipped markers (relative)'.")
    n_spots: int
    n_genes_used: int
    cell_types: list[CellTypeShare]
    max_abs_sum_error: float = Field(description="max |sum of proportions - 1| over spots.")
    n_spots_without_signal: int = Field(description="Spots with no counts on the genes used (given uniform proportions).")
    median_relative_residual: float | None


def _deconv_example(ctx: ToolContext) -> dict:
    return {"omics_id": _examples.loaded_id(ctx, _examples.example_spatial(ctx.store.root))}


@tool(role="analysis", example=_deconv_example)
def deconvolve_spots(inp: DeconvolveInput, ctx: ToolContext) -> SpotDeconvolution:
    """Estimate cell-type proportions in each spatial spot by non-negative least squares.

    Use after load_omics on a spatial (Visium-like) dataset. With reference_id (a single-cell
    dataset whose obs[cell_type_key] labels cell types), spots are fitted as non-negative mixtures
    of the reference's cell-type profiles over marker genes (scipy nnls), normalised so each
    spot's proportions sum to 1. Without a reference, the shipped heart markers (cardiomyocyte,
    fibroblast, endothelial, smooth muscle, pericyte, myeloid, lymphoid) give a relative,
    marker-based composition. Proportions are stored (proportions_id); the output summarises them.
    """
    ds = _spatial(ctx, inp.omics_id)
    genes = ds.genes()
    counts = _counts(ds)
    index = {g: i for i, g in enumerate(genes)}
    if inp.reference_id:
        ref = _handle.resolve(ctx.store, inp.reference_id)
        _handle.used(ctx, ref)
        obs = ref.obs()
        if inp.cell_type_key not in obs.columns:
            raise InputError("missing-column", f"the reference has no obs column {quote(inp.cell_type_key)!r}",
                             hint=f"obs columns: {', '.join(quote(c, 40) for c in list(obs.columns)[:20])}")
        rgenes = ref.genes()
        shared = [g for g in rgenes if g in index]
        if len(shared) < 20:
            raise InputError("few-shared-genes", f"spots and reference share {len(shared)} genes",
                             hint="use a reference measured on the same gene symbols")
        with ref.open() as f:
            rcounts = _h5.read_rows(f, "layers/counts" if ref.processed else ref.meta["counts_elem"])
        ridx = {g: i for i, g in enumerate(rgenes)}
        types, prof = _deconv.reference_profiles(rcounts[:, [ridx[g] for g in shared]],
                                                 obs[inp.cell_type_key].to_numpy())
        if len(types) < 2:
            raise InputError("one-cell-type", "the reference holds fewer than 2 cell types")
        sel = _deconv.select_markers(prof, inp.n_markers_per_type)
        a = prof[:, sel].T
        a = a / a.sum(axis=0, keepdims=True)
        y = counts[:, [index[shared[i]] for i in sel]].toarray()
        weight = 1.0 / np.sqrt(a.mean(axis=1) + 1e-9)
        reference = "single-cell reference"
        types = [quote(t, 64) for t in types]
    else:
        markers = {k: [g for g in v.genes if g in index] for k, v in celltype_markers().items()}
        types = [k for k, v in markers.items() if len(v) >= 2]
        if len(types) < 2:
            raise InputError("few-markers", "fewer than 2 cell types have 2+ marker genes in this dataset",
                             hint="pass a single-cell reference_id")
        used = sorted({index[g] for t in types for g in markers[t]})
        pos = {gi: r for r, gi in enumerate(used)}
        a = np.zeros((len(used), len(types)))
        for k, t in enumerate(types):
            for g in markers[t]:
                a[pos[index[g]], k] = 1.0 / len(markers[t])
        raw = counts[:, used].toarray()
        y = raw / np.maximum(raw.mean(axis=0, keepdims=True), 1e-9)
        weight = None
        reference = "shipped markers (relative)"
    props, resid = _deconv.nnls_proportions(y, a, weight)
    no_signal = int(np.isnan(resid).sum())
    err = float(np.abs(props.sum(axis=1) - 1.0).max())
    pid = ctx.store.put("omdc", {"proportions": props.astype(np.float64)},
                        {"omics_id": inp.omics_id, "reference_id": inp.reference_id, "cell_types": types})
    dominant = np.bincount(props.argmax(axis=1), minlength=len(types)) / len(props)
    shares = [CellTypeShare(cell_type=t, fraction_dominant=round(float(dominant[k]), 4),
                            mean_proportion=Estimate.of(props[:, k].mean(), "fraction", ndigits=4, interval=Interval(
                                lower=round(float(np.percentile(props[:, k], 5)), 4),
                                upper=round(float(np.percentile(props[:, k], 95)), 4), level=0.9,
                                method="5th-95th percentile over spots")))
              for k, t in enumerate(types)]
    log.info("omics.deconvolved", n_spots=len(props), n_types=len(types))
    ok = resid[~np.isnan(resid)]
    return SpotDeconvolution(
        proportions_id=pid, method="scipy.optimize.nnls per spot, coefficients normalised to sum 1",
        reference=reference, n_spots=len(props), n_genes_used=int(a.shape[0]), cell_types=shares,
        max_abs_sum_error=err, n_spots_without_signal=no_signal,
        median_relative_residual=round(float(np.median(ok)), 6) if ok.size else None,
    )


# ----------------------------------------------------------------------------- domains

class SpatialDomainsInput(BaseModel):
    omics_id: str = Field(description="Spatial dataset id (load_omics or omics_qc).")
    n_domains: int | None = Field(None, ge=2, le=20, description="Number of domains; unset: best silhouette in 3-8.")
    n_neighbors: int = Field(6, ge=1, le=30, description="Spatial neighbours per spot (6 on a Visium hexagonal grid).")
    smoothing: float = Field(0.5, ge=0, le=1, description="Weight of the neighbour mean in the smoothed features.")
    n_comps: int = Field(15, ge=2, le=50, description="Principal components of expression.")
    programme: str = Field("cardiomyocyte", description="Shipped programme or cell-type set shown in the figure's second panel.")
    compare_key: str | None = Field(None, description="obs column with an existing annotation to compare (adjusted Rand index).")


class SpatialDomains(ToolOutput):
    domains_id: str = Field(description="Stored domain label per spot.")
    n_domains: int
    domain_sizes: list[int]
    silhouette: float
    spatial_coherence: float = Field(description="Fraction of neighbouring spot pairs in the same domain.")
    programme_shown: str
    programme_mean_by_domain: list[float | None] = Field(description="Mean ULM t of the programme per domain.")
    ari_vs_annotation: float | None
    figure_id: str
    figure_path: str
    has_tissue_image: bool


def _domains_example(ctx: ToolContext) -> dict:
    return {"omics_id": _examples.loaded_id(ctx, _examples.example_spatial(ctx.store.root)), "n_domains": 4}


def _lognorm_dense(ds: _handle.Dataset, genes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Dense log expression of the most variable genes (HVGs when QC flagged them)."""
    x = sp.vstack([b for _, b in ds.iter_lognorm()], format="csr")
    keep = None
    if ds.processed:
        import anndata.io
        import h5py

        with h5py.File(ds.path, "r") as f:
            var = anndata.io.read_elem(f["var"])
        if "highly_variable" in var.columns:
            keep = np.nonzero(var["highly_variable"].to_numpy())[0]
    if keep is None or len(keep) < 10:
        mean = np.asarray(x.mean(axis=0)).ravel()
        var = np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2
        keep = np.sort(np.argsort(-var, kind="stable")[: min(2000, x.shape[1])])
    return x, keep


@tool(role="analysis", example=_domains_example)
def spatial_domains(inp: SpatialDomainsInput, ctx: ToolContext) -> SpatialDomains:
    """Find spatial domains of a tissue section and draw them over the tissue image.

    Use after load_omics (or omics_qc) on a spatial dataset. Domains: PCA of log-normalised
    expression, features averaged over each spot's spatial neighbours, KMeans (seeded). Returns
    domain sizes, silhouette, spatial coherence, the mean of one programme or cell-type score per
    domain, and a PNG figure (figure_id, figure_path): spots coloured by domain and by the
    programme score, over the H&E image stored in the file when present.
    """
    ds = _spatial(ctx, inp.omics_id)
    sets = all_sets()
    if inp.programme not in sets:
        raise InputError("unknown-gene-set", f"no shipped set {quote(inp.programme)!r}",
                         hint=f"available: {', '.join(sorted(sets))}")
    genes = ds.genes()
    coords = ds.coords()
    x, keep = _lognorm_dense(ds, genes)
    feats, _evr = _domains.pca_features(x[:, keep].toarray(), inp.n_comps, ctx.seed)
    graph = _domains.knn_graph(coords, inp.n_neighbors)
    smoothed = _domains.smooth(feats, graph, inp.smoothing)
    labels, sil, k = _domains.cluster(smoothed, inp.n_domains, ctx.seed)
    gs = sets[inp.programme]
    sm = _ulm.set_matrix({gs.name: (list(gs.genes), list(gs.weights))}, genes)
    if sm.n_found[0] >= 2:
        w = sm.weights
        score = _ulm.ulm_block(x, w, np.asarray(w.sum(axis=0)).ravel(),
                               np.asarray(w.multiply(w).sum(axis=0)).ravel())[:, 0]
    else:
        score = np.full(len(labels), np.nan)
    by_domain = [round(float(np.nanmean(score[labels == d])), 4) if np.isfinite(score).any() else None
                 for d in range(k)]
    ari = None
    if inp.compare_key:
        obs = ds.obs()
        if inp.compare_key not in obs.columns:
            raise InputError("missing-column", f"obs has no column {quote(inp.compare_key)!r}")
        from sklearn.metrics import adjusted_rand_score

        ari = round(float(adjusted_rand_score(obs[inp.compare_key].astype(str).to_numpy(), labels)), 4)
    img = ds.image()
    png = _plot.domains_figure(coords, labels, score if np.isfinite(score).any() else None, inp.programme,
                               img[0] if img else None, img[1]["scale"] if img else None,
                               img[1]["spot_diameter_fullres"] if img else None)
    key = sha256_json({"labels": sha256_array(labels), "score": sha256_array(np.nan_to_num(score)),
                       "ds": ds.sha256, "programme": inp.programme})[:24]
    fig_path = ctx.store.put_bytes("fig", png, ".png", key)
    did = ctx.store.put("omdm", {"domains": labels.astype(np.int64), "programme_score": score.astype(np.float32)},
                        {"omics_id": inp.omics_id, "parameters": inp.model_dump(), "seed": ctx.seed})
    log.info("omics.domains", n_domains=k, silhouette=round(sil, 3))
    return SpatialDomains(
        domains_id=did, n_domains=k, domain_sizes=np.bincount(labels, minlength=k).tolist(),
        silhouette=round(sil, 4), spatial_coherence=round(_domains.coherence(labels, graph), 4),
        programme_shown=inp.programme, programme_mean_by_domain=by_domain, ari_vs_annotation=ari,
        figure_id=f"fig-{key}", figure_path=str(fig_path), has_tissue_image=img is not None,
    )
