"""``load_omics``: validate an AnnData file and register it as an omics dataset id."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, Field

from cardiomics.hashing import sha256_file

from .._registry import ToolContext, tool
from ..contract import ToolOutput
from . import _examples, _h5, _handle

log = structlog.get_logger(__name__)


class LoadOmicsInput(BaseModel):
    path: str = Field(description="Path of an AnnData .h5ad file (bulk, single-cell or spatial).")
    kind: Literal["auto", "bulk", "single_cell", "spatial"] = Field(
        "auto", description="Data kind; 'auto' reads uns['omics_kind'], spatial signals, else sparsity.")
    gene_symbols_column: str | None = Field(
        None, description="var column holding gene symbols when var_names are other identifiers.")


class OmicsDataset(ToolOutput):
    omics_id: str = Field(description="Id of the validated dataset; pass it to the other omics tools.")
    kind: Literal["bulk", "single_cell", "spatial"]
    n_obs: int = Field(description="Samples, cells or spots.")
    n_genes: int
    has_raw_counts: bool = Field(description="Integer counts found (layers['counts'] or X).")
    counts_source: Literal["layers/counts", "X", "none"]
    zero_fraction: float = Field(description="Fraction of zero entries in the matrix analysed.")
    has_coordinates: bool
    has_tissue_image: bool
    warnings: list[str] = Field(default_factory=list)


def _example(ctx: ToolContext) -> dict:
    return {"path": str(_examples.example_spatial(ctx.store.root))}


@tool(role="analysis", example=_example, private=("path",))
def load_omics(inp: LoadOmicsInput, ctx: ToolContext) -> OmicsDataset:
    """Validate a transcriptomics AnnData (.h5ad) file and register it; returns an omics_id.

    Use first, before any other omics tool. Accepts bulk (samples x genes), single-cell or
    single-nucleus (cells x genes, raw counts in layers['counts']) and spatial (spots x genes,
    coordinates in obsm['spatial'], optional H&E image in uns['spatial']). Checks: readable
    (not truncated), non-empty, unique gene symbols (Ensembl ids are refused with a hint),
    integer non-negative counts where counts are stored, finite coordinates for spatial data.
    The file is read in chunks and never modified; a bad file gives an InputError naming it.
    """
    path = Path(inp.path).expanduser()
    info = _h5.inspect_file(path, inp.kind, inp.gene_symbols_column)
    digest = sha256_file(path)
    omics_id = _handle.register_source(ctx.store, path, info, digest)
    ctx.used_input("omics_file", digest)
    log.info("omics.loaded", kind=info.kind, n_obs=info.n_obs, n_genes=info.n_vars)
    return OmicsDataset(
        omics_id=omics_id, kind=info.kind, n_obs=info.n_obs, n_genes=info.n_vars,
        has_raw_counts=info.counts_elem is not None, counts_source=info.counts_elem or "none",
        zero_fraction=info.zero_fraction, has_coordinates=info.kind == "spatial",
        has_tissue_image=info.image is not None, warnings=info.warnings,
    )
