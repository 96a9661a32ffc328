"""Inspect and validate ``.h5ad`` files through h5py, reading matrices in row chunks.

Nothing here loads a whole matrix unless asked to (``read_rows``): validation of counts walks the
stored arrays chunk by chunk, so a file larger than memory is checked in bounded memory. The file
is opened read-only and never written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import h5py
import numpy as np
import scipy.sparse as sp

from cardiomics.errors import CardiomicsError, InputError

from ._text import quote, quote_list

if TYPE_CHECKING:
    import pandas as pd

Kind = Literal["bulk", "single_cell", "spatial"]
ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
SYMBOL_COLUMNS = ("gene_symbols", "gene_symbol", "feature_name", "gene_name", "gene_names", "symbol", "Symbol")
DEFAULT_CHUNK_ROWS = 8192


@dataclass
class FileInfo:
    """What validation learnt about a file: enough to read it again without re-checking."""

    kind: Kind
    n_obs: int
    n_vars: int
    counts_elem: str | None  # "layers/counts" or "X" when raw counts exist, else None
    values_elem: str  # the matrix analyses start from
    log_input: bool  # values are already log-scale (bulk without counts)
    gene_symbols_column: str | None
    genes: list[str]
    zero_fraction: float
    image: dict | None = None
    warnings: list[str] = field(default_factory=list)


def _name(path: Path) -> str:
    return quote(path.name, 120)


def _elem_shape(elem) -> tuple[int, int]:
    if isinstance(elem, h5py.Group):
        shape = elem.attrs.get("shape")
        if shape is None:
            raise InputError("not-anndata", "a matrix group has no 'shape' attribute")
        return int(shape[0]), int(shape[1])
    if elem.ndim != 2:
        raise InputError("not-anndata", f"matrix has {elem.ndim} dimensions, expected 2")
    return int(elem.shape[0]), int(elem.shape[1])


def _encoding(elem) -> str:
    if isinstance(elem, h5py.Group):
        enc = elem.attrs.get("encoding-type", "")
        return enc.decode() if isinstance(enc, bytes) else str(enc)
    return "array"


def iter_rows(f: h5py.File, elem_path: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Yield ``(start_row, CSR float32 block)`` over a stored matrix, in row order."""
    elem = f[elem_path]
    n_obs, n_vars = _elem_shape(elem)
    enc = _encoding(elem)
    if enc == "csr_matrix":
        indptr = elem["indptr"][...].astype(np.int64)
        data, indices = elem["data"], elem["indices"]
        for a in range(0, n_obs, chunk_rows):
            b = min(a + chunk_rows, n_obs)
            lo, hi = indptr[a], indptr[b]
            block = sp.csr_matrix(
                (data[lo:hi].astype(np.float32, copy=False), indices[lo:hi], indptr[a:b + 1] - lo),
                shape=(b - a, n_vars))
            yield a, block
    elif enc == "csc_matrix":  # column-major on disk: one read, then row blocks
        import anndata.io

        whole = sp.csr_matrix(anndata.io.read_elem(elem), dtype=np.float32)
        for a in range(0, n_obs, chunk_rows):
            yield a, whole[a:a + chunk_rows]
    elif enc in ("array", ""):
        for a in range(0, n_obs, chunk_rows):
            yield a, sp.csr_matrix(np.asarray(elem[a:a + chunk_rows], dtype=np.float32))
    else:
        raise InputError("unsupported-matrix", f"matrix {elem_path!r} is stored as {quote(enc)!r}",
                         hint="store matrices as dense arrays or CSR/CSC sparse matrices")


def read_rows(f: h5py.File, elem_path: str) -> sp.csr_matrix:
    """The whole matrix as CSR float32 (used where an analysis needs all of it)."""
    blocks = [b for _, b in iter_rows(f, elem_path)]
    return sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]


def _read_df(f: h5py.File, key: str) -> pd.DataFrame:
    import anndata.io

    return anndata.io.read_elem(f[key])


def read_obs(f: h5py.File) -> pd.DataFrame:
    return _read_df(f, "obs")


def gene_names(f: h5py.File, symbols_column: str | None) -> list[str]:
    var = _read_df(f, "var")
    if symbols_column is None:
        return [str(g) for g in var.index]
    return [str(g) for g in var[symbols_column].astype(str)]


def _declared_kind(f: h5py.File) -> str | None:
    if "uns" in f and "omics_kind" in f["uns"]:
        val = f["uns"]["omics_kind"][()]
        return val.decode() if isinstance(val, bytes) else str(val)
    return None


def _find_image(f: h5py.File) -> dict | None:
    """The first low-resolution (else high-resolution) tissue image under ``uns['spatial']``."""
    if "uns" not in f or "spatial" not in f["uns"]:
        return None
    for library in f["uns"]["spatial"]:
        grp = f["uns"]["spatial"][library]
        if not isinstance(grp, h5py.Group) or "images" not in grp:
            continue
        for res in ("lowres", "hires"):
            if res in grp["images"]:
                scale = None
                if "scalefactors" in grp and f"tissue_{res}_scalef" in grp["scalefactors"]:
                    scale = float(grp["scalefactors"][f"tissue_{res}_scalef"][()])
                spot = None
                if "scalefactors" in grp and "spot_diameter_fullres" in grp["scalefactors"]:
                    spot = float(grp["scalefactors"]["spot_diameter_fullres"][()])
                return {"elem": f"uns/spatial/{library}/images/{res}", "resolution": res,
                        "scale": scale, "spot_diameter_fullres": spot}
    return None


def read_image(f: h5py.File, image: dict) -> np.ndarray:
    arr = np.asarray(f[image["elem"]][...])
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float32), 0, 1 if arr.max() <= 1.0 else 255)
        arr = (arr * (255 if arr.max() <= 1.0 else 1)).astype(np.uint8)
    return arr


def read_coords(f: h5py.File) -> np.ndarray:
    return np.asarray(f["obsm"]["spatial"][...], dtype=np.float64)[:, :2]


def _check_genes(path: Path, genes: list[str], f: h5py.File, symbols_column: str | None) -> None:
    name = _name(path)
    blank = [i for i, g in enumerate(genes) if not g or g.lower() in ("nan", "none")]
    if blank:
        raise InputError("missing-gene-names", f"{name}: {len(blank)} genes have no name (first at column {blank[0]})",
                         hint="every var entry needs a gene symbol")
    ens = sum(bool(ENSEMBL.match(g)) for g in genes)
    if ens >= 0.5 * len(genes):
        var_cols = list(_read_df(f, "var").columns)
        found = [c for c in SYMBOL_COLUMNS if c in var_cols and c != symbols_column]
        hint = (f"the file has a var column {found[0]!r}: pass gene_symbols_column={found[0]!r}" if found else
                "map Ensembl gene ids to HGNC symbols (e.g. from the same reference annotation) and store "
                "them as var_names, or pass gene_symbols_column naming a var column of symbols")
        raise InputError("ensembl-ids", f"{name}: {ens} of {len(genes)} gene identifiers are Ensembl ids "
                         f"(e.g. {quote_list([g for g in genes if ENSEMBL.match(g)], 3)}); gene symbols are expected",
                         hint=hint)
    import pandas as pd  # lazy: pandas costs ~0.4 s of import for every registry user

    s = pd.Series(genes)
    dup = s[s.duplicated()].unique()
    if len(dup):
        raise InputError("duplicate-genes", f"{name}: {len(dup)} gene names occur more than once "
                         f"(e.g. {quote_list(dup, 5)})",
                         hint="make names unique (adata.var_names_make_unique()) or aggregate duplicated genes")


def _check_matrix(path: Path, f: h5py.File, elem_path: str, claim_counts: bool, chunk_rows: int) -> tuple[float, float, bool]:
    """Walk the matrix; returns (zero fraction, max value, integer-valued). Raises on bad values."""
    name = _name(path)
    shown = "layers['counts']" if elem_path == "layers/counts" else "X"
    n_obs, n_vars = _elem_shape(f[elem_path])
    nnz, vmax, integer, total = 0, 0.0, True, 0.0
    for start, block in iter_rows(f, elem_path, chunk_rows):
        d = block.data
        if d.size == 0:
            continue
        if not np.isfinite(d).all():
            row = start + int(np.nonzero(~np.isfinite(block.toarray()).all(axis=1))[0][0])
            raise InputError("non-finite-values", f"{name}: {shown} holds NaN or infinite values (first in row {row})",
                             hint="remove or impute non-finite entries before analysis")
        if claim_counts and (d < 0).any():
            raise InputError("negative-counts", f"{name}: {shown} is read as raw counts but holds negative values "
                             f"(min {float(d.min()):.3g})",
                             hint="store raw, non-negative integer counts in layers['counts']")
        if integer and not np.all(d == np.round(d)):
            integer = False
            if claim_counts:
                bad = d[d != np.round(d)]
                raise InputError("non-integer-counts",
                                 f"{name}: {shown} is read as raw counts but {bad.size} values in rows "
                                 f"{start}-{start + block.shape[0] - 1} are not integers (e.g. {float(bad[0]):.4g})",
                                 hint="store raw integer UMI/read counts in layers['counts'] "
                                      "(normalised or log values belong in X)")
        nnz += int(np.count_nonzero(d))
        vmax = max(vmax, float(d.max()))
        total += float(np.abs(d).sum())
    if total == 0.0:
        raise InputError("empty-matrix", f"{name}: {shown} ({n_obs} x {n_vars}) holds no non-zero value",
                         hint="check that the expression matrix was written")
    return 1.0 - nnz / float(n_obs * n_vars), vmax, integer


def inspect_file(path: Path, kind: str = "auto", gene_symbols_column: str | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> FileInfo:
    """Validate one ``.h5ad``; raise InputError naming the file and the problem."""
    name = _name(path)
    if not path.exists() or not path.is_file():
        raise InputError("file-not-found", f"no file {name!r}", hint="pass the path of an existing .h5ad file")
    if path.suffix.lower() != ".h5ad":
        raise InputError("not-h5ad", f"{name!r} is not an .h5ad file", hint="convert to AnnData .h5ad first")
    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # truncated, corrupt or not HDF5
        raise InputError("unreadable-h5ad", f"{name} cannot be opened as HDF5/AnnData: it is truncated or corrupt "
                         f"({type(exc).__name__}: {quote(exc, 160)})",
                         hint="copy the file again or re-export it with adata.write_h5ad()") from None
    try:
        with f:
            return _inspect(path, f, kind, gene_symbols_column, chunk_rows)
    except CardiomicsError:
        raise
    except Exception as exc:  # a structure that h5py opened but cannot read: truncated payload
        raise InputError("unreadable-h5ad", f"{name} cannot be read as AnnData: it is truncated or corrupt "
                         f"({type(exc).__name__}: {quote(exc, 160)})",
                         hint="copy the file again or re-export it with adata.write_h5ad()") from None


def _inspect(path: Path, f: h5py.File, kind: str, symbols_column: str | None, chunk_rows: int) -> FileInfo:
    name = _name(path)
    missing = [k for k in ("X", "obs", "var") if k not in f]
    if missing:
        raise InputError("not-anndata", f"{name} has no {', '.join(missing)}: it is not an AnnData file",
                         hint="write the file with anndata (adata.write_h5ad)")
    n_obs, n_vars = _elem_shape(f["X"])
    if n_obs == 0 or n_vars == 0:
        raise InputError("empty-matrix", f"{name}: the expression matrix is empty ({n_obs} x {n_vars})",
                         hint="the file must hold at least one observation and one gene")
    if symbols_column is not None and symbols_column not in _read_df(f, "var").columns:
        raise InputError("missing-column", f"{name}: var has no column {quote(symbols_column)!r}",
                         hint="pass the name of a var column holding gene symbols, or leave it empty")
    genes = gene_names(f, symbols_column)
    if len(genes) != n_vars:
        raise InputError("not-anndata", f"{name}: var has {len(genes)} rows but X has {n_vars} columns")
    _check_genes(path, genes, f, symbols_column)

    declared = _declared_kind(f)
    has_coords = "obsm" in f and "spatial" in f["obsm"]
    spatial_signals = has_coords or ("uns" in f and "spatial" in f["uns"]) or declared == "spatial"
    if not spatial_signals and "obs" in f:
        spatial_signals = {"array_row", "array_col"} <= set(f["obs"].keys())
    has_counts_layer = "layers" in f and "counts" in f["layers"]
    warnings: list[str] = []

    if kind == "auto":
        kind = declared if declared in ("bulk", "single_cell", "spatial") else None
    if kind is None:
        kind = "spatial" if spatial_signals else "undecided"
    if kind == "spatial":
        if not has_coords:
            raise InputError("missing-coordinates", f"{name} is spatial data but has no spot coordinates "
                             "in obsm['spatial']",
                             hint="store an (n_spots, 2) array of x, y positions in adata.obsm['spatial']")
        coords = np.asarray(f["obsm"]["spatial"][...])
        if coords.ndim != 2 or coords.shape[0] != n_obs or coords.shape[1] < 2:
            raise InputError("bad-coordinates", f"{name}: obsm['spatial'] has shape {coords.shape}, "
                             f"expected ({n_obs}, 2)", hint="one (x, y) row per spot")
        if not np.issubdtype(coords.dtype, np.number) or not np.isfinite(coords[:, :2].astype(float)).all():
            raise InputError("bad-coordinates", f"{name}: obsm['spatial'] holds non-numeric, NaN or infinite positions",
                             hint="every spot needs finite x, y coordinates")

    counts_elem = "layers/counts" if has_counts_layer else None
    if has_counts_layer and _elem_shape(f["layers/counts"]) != (n_obs, n_vars):
        raise InputError("not-anndata", f"{name}: layers['counts'] shape differs from X")
    if counts_elem:
        zero_frac, vmax, _ = _check_matrix(path, f, counts_elem, True, chunk_rows)
        log_input = False
    else:
        zero_frac, vmax, integer = _check_matrix(path, f, "X", False, chunk_rows)
        if kind == "undecided":
            kind = "single_cell" if zero_frac > 0.5 else "bulk"
        if integer and vmax >= 0:
            _check_matrix(path, f, "X", True, chunk_rows)  # negative integer values are not counts
            counts_elem = "X"
            log_input = False
        elif kind in ("single_cell", "spatial"):
            raise InputError("no-raw-counts", f"{name}: {kind.replace('_', '-')} data needs raw counts, but X holds "
                             "non-integer values and there is no layers['counts']",
                             hint="store raw integer counts in layers['counts'] (normalised values may stay in X)")
        else:
            log_input = vmax <= 50.0
            warnings.append("bulk values are not integer counts: treated as normalised expression"
                            + ("" if log_input else " and log1p-transformed"))
    if kind == "undecided":
        kind = "single_cell" if zero_frac > 0.5 else "bulk"
    values_elem = counts_elem or "X"
    return FileInfo(kind=kind, n_obs=n_obs, n_vars=n_vars, counts_elem=counts_elem, values_elem=values_elem,
                    log_input=log_input, gene_symbols_column=symbols_column, genes=genes,
                    zero_fraction=round(zero_frac, 6), image=_find_image(f) if kind == "spatial" else None,
                    warnings=warnings)
