"""Cohort tables: given as records, as columns, or as a stored ``table-…`` artefact.

Numeric columns become float arrays (missing = NaN); text columns stay text (missing = "").
"""

from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

from cardiomics.errors import InputError
from cardiomics.hashing import sha256_array, sha256_json

from .._registry import ToolContext
from ..contract import ResultId

Cell = float | int | str | bool | None


class TableInput(BaseModel):
    """One cohort table, rows = subjects (or spots). Give exactly one of the three forms."""

    records: list[dict[str, Cell]] | None = Field(None, description="Rows as objects, e.g. [{'lvef_pct': 55, 'age': 61, 'sex': 'F', ...}].")
    columns: dict[str, list[Cell]] | None = Field(None, description="Columns as lists of equal length, e.g. {'lvef_pct': [...], 'age': [...]}.")
    table_id: ResultId | None = Field(None, description="Id of a table stored earlier (kind 'table', one array per column).")

    @model_validator(mode="after")
    def _exactly_one(self) -> TableInput:
        given = [k for k in ("records", "columns", "table_id") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of records, columns, table_id (got {given or 'none'})")
        return self


def _as_array(name: str, values: list[Any]) -> np.ndarray:
    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    return np.array(["" if v is None else str(v) for v in values], dtype=str)


def load_table(inp: TableInput, ctx: ToolContext) -> dict[str, np.ndarray]:
    """The table as name -> 1-D array, all of one length; records its content hash in provenance."""
    if inp.table_id is not None:
        arrays = ctx.store.arrays(inp.table_id)
        ctx.used_input("table", ctx.store.digest(inp.table_id))
        table = {k: (v.astype(float) if v.dtype.kind in "biuf" else v.astype(str)) for k, v in arrays.items()}
    else:
        if inp.records is not None:
            if not inp.records:
                raise InputError("empty-table", "records is empty", hint="pass at least one row per subject")
            names = list(dict.fromkeys(k for r in inp.records for k in r))
            cols = {k: [r.get(k) for r in inp.records] for k in names}
        else:
            cols = dict(inp.columns or {})
            lengths = {k: len(v) for k, v in cols.items()}
            if len(set(lengths.values())) > 1:
                raise InputError("ragged-columns", f"columns have different lengths: {lengths}",
                                 hint="every column needs one value per row (use null for missing)")
        table = {k: _as_array(k, v) for k, v in cols.items()}
        ctx.used_input("table", sha256_json({k: sha256_array(v) for k, v in sorted(table.items())}))
    if not table or len(next(iter(table.values()))) == 0:
        raise InputError("empty-table", "the table has no rows", hint="pass one row per subject")
    return table


def store_table(store, columns: dict[str, list | np.ndarray]) -> str:
    """Store a cohort table (one array per column) and return its ``table-…`` id."""
    arrays = {k: (np.asarray(v, dtype=float) if np.asarray(v).dtype.kind in "biuf" else np.asarray(v, dtype=str))
              for k, v in columns.items()}
    return store.put("table", arrays, {"columns": list(arrays)})


def expand_names(patterns: list[str], table: dict[str, np.ndarray], field: str) -> list[str]:
    """Column names matching each pattern (exact names or shell wildcards like 'emb_*'), in order."""
    out: list[str] = []
    for pat in patterns:
        hits = [pat] if pat in table else sorted(fnmatch.filter(table, pat))
        if not hits:
            raise InputError("unknown-column", f"{field}: no column matches {pat!r}",
                             hint=f"columns present: {', '.join(sorted(table)[:30])}")
        out.extend(h for h in hits if h not in out)
    return out


def numeric(table: dict[str, np.ndarray], name: str, field: str) -> np.ndarray:
    col = table[name]
    if col.dtype.kind != "f":
        raise InputError("not-numeric", f"{field}: column {name!r} is not numeric",
                         hint="phenotypes, programmes and scores must be numbers (null for missing)")
    return col
