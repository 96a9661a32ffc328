"""Omics datasets as store ids (``omx-…``): a validated source file, or a processed AnnData.

A source id records where the validated file lies, its SHA-256, size and modification time; it
is re-checked each time the id is used, so a file that changed after validation is refused. A
processed dataset (after QC) is written into the store as ``.h5ad``; the id is its content hash.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse as sp

from cardiomics.errors import InputError, NotFoundError
from cardiomics.hashing import sha256_bytes, sha256_file, sha256_json

from . import _h5
from ._h5 import FileInfo

KIND = "omx"
TARGET_SUM = {"bulk": 1e6, "single_cell": 1e4, "spatial": 1e4}


@dataclass
class Dataset:
    """A resolved omics id: the file to read and what validation or QC recorded about it."""

    omics_id: str
    path: Path
    meta: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def processed(self) -> bool:
        return self.meta["type"] == "processed"

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    def open(self) -> h5py.File:
        return h5py.File(self.path, "r")

    def genes(self) -> list[str]:
        with self.open() as f:
            return _h5.gene_names(f, self.meta.get("gene_symbols_column"))

    def iter_lognorm(self, chunk_rows: int = _h5.DEFAULT_CHUNK_ROWS) -> Iterator[tuple[int, sp.csr_matrix]]:
        """Log-normalised expression in row blocks (library-size to ``target_sum`` then log1p)."""
        with self.open() as f:
            if self.processed:
                yield from _h5.iter_rows(f, "X", chunk_rows)
                return
            elem = self.meta["values_elem"]
            for start, block in _h5.iter_rows(f, elem, chunk_rows):
                if self.meta["counts_elem"]:
                    block = normalise_log1p(block, TARGET_SUM[self.kind])
                elif not self.meta["log_input"]:
                    block = block.copy()
                    block.data = np.log1p(np.maximum(block.data, 0))
                yield start, block

    def iter_counts(self, chunk_rows: int = _h5.DEFAULT_CHUNK_ROWS) -> Iterator[tuple[int, sp.csr_matrix]]:
        elem = self.meta["counts_elem"]
        if elem is None:
            raise InputError("no-raw-counts", "this dataset has no raw counts",
                             hint="this analysis needs integer counts in layers['counts']")
        with self.open() as f:
            yield from _h5.iter_rows(f, elem, chunk_rows)

    def obs(self):
        with self.open() as f:
            return _h5.read_obs(f)

    def coords(self) -> np.ndarray:
        with self.open() as f:
            if "obsm" not in f or "spatial" not in f["obsm"]:
                raise InputError("missing-coordinates", "the dataset has no obsm['spatial'] coordinates",
                                 hint="spatial tools need a spatial (Visium-like) dataset")
            return _h5.read_coords(f)

    def image(self) -> tuple[np.ndarray, dict] | None:
        img = self.meta.get("image")
        if not img:
            return None
        with self.open() as f:
            return _h5.read_image(f, img), img


def normalise_log1p(block: sp.csr_matrix, target_sum: float) -> sp.csr_matrix:
    """scanpy's ``normalize_total(target_sum)`` followed by ``log1p``, row by row."""
    block = sp.csr_matrix(block, dtype=np.float32, copy=True)
    totals = np.asarray(block.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    block.data *= np.repeat(scale, np.diff(block.indptr)).astype(np.float32)
    np.log1p(block.data, out=block.data)
    return block


def register_source(store, path: Path, info: FileInfo, digest: str) -> str:
    st = path.stat()
    meta = {
        "type": "source", "path": str(path.resolve()), "sha256": digest, "size": st.st_size,
        "mtime_ns": st.st_mtime_ns, "kind": info.kind, "n_obs": info.n_obs, "n_vars": info.n_vars,
        "counts_elem": info.counts_elem, "values_elem": info.values_elem, "log_input": info.log_input,
        "gene_symbols_column": info.gene_symbols_column, "zero_fraction": info.zero_fraction,
        "image": info.image, "warnings": info.warnings,
    }
    key = sha256_json({"sha256": digest, "kind": info.kind, "symbols": info.gene_symbols_column})[:24]
    return store.put(KIND, {}, meta, key=key)


def save_processed(store, adata, meta: dict[str, Any]) -> str:
    """Write a processed AnnData into the store; returns its ``omx-`` id (hash of the file)."""
    with tempfile.TemporaryDirectory(dir=store.root) as tmp:
        out = Path(tmp) / "processed.h5ad"
        adata.write_h5ad(out)
        data = out.read_bytes()
    key = sha256_json({"file": sha256_bytes(data), "meta": meta})[:24]
    store.put_bytes(KIND, data, ".h5ad", key)
    full = {**meta, "type": "processed", "sha256": sha256_bytes(data), "kind": meta["kind"],
            "n_obs": int(adata.n_obs), "n_vars": int(adata.n_vars), "counts_elem": "layers/counts",
            "values_elem": "X", "log_input": True, "gene_symbols_column": None}
    return store.put(KIND, {}, full, key=key)


def resolve(store, omics_id: str) -> Dataset:
    """The dataset behind an id, checking that a source file is unchanged since validation."""
    if not omics_id.startswith(f"{KIND}-"):
        raise InputError("wrong-id-kind", f"{omics_id!r} is not an omics dataset id",
                         hint="pass the omics_id returned by load_omics or omics_qc")
    try:
        meta = store.meta(omics_id)
    except NotFoundError:
        raise NotFoundError("unknown-artefact", f"no omics dataset {omics_id!r} in this store",
                            hint="call load_omics first (ids are valid within one data directory)") from None
    digest = store.digest(omics_id)
    if meta["type"] == "processed":
        path = Path(store.root) / KIND / f"{digest}.h5ad"
        if not path.exists():
            raise NotFoundError("unknown-artefact", f"the processed file of {omics_id!r} is missing")
        return Dataset(omics_id, path, meta)
    path = Path(meta["path"])
    if not path.exists():
        raise InputError("source-missing", f"the file behind {omics_id} ({path.name!r}) no longer exists",
                         hint="call load_omics again with the file's current path")
    st = path.stat()
    if (st.st_size, st.st_mtime_ns) != (meta["size"], meta["mtime_ns"]) and sha256_file(path) != meta["sha256"]:
        raise InputError("source-changed", f"{path.name!r} changed after it was validated as {omics_id}",
                         hint="call load_omics again to validate the new content")
    return Dataset(omics_id, path, meta)


def used(ctx, ds: Dataset) -> None:
    """Record the dataset's content hash in the call's provenance."""
    ctx.used_input(ds.omics_id, ds.sha256)

