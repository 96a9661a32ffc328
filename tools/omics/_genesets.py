"""The curated gene sets shipped with the package: cardiac programmes and cell-type markers.

Each set has genes (HGNC symbols), optional signed weights and a citation; see ``data/*.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

COLLECTIONS = ("programmes", "celltype_markers")


@dataclass(frozen=True)
class GeneSet:
    name: str
    genes: tuple[str, ...]
    weights: tuple[float, ...]
    citation: str
    description: str = ""


@cache
def load_collection(collection: str) -> dict[str, GeneSet]:
    """All sets of one shipped collection (``programmes`` or ``celltype_markers``), by name."""
    if collection not in COLLECTIONS:
        raise KeyError(f"unknown gene-set collection {collection!r}; choose from {COLLECTIONS}")
    text = resources.files(__package__).joinpath("data", f"{collection}.json").read_text()
    raw = json.loads(text)["sets"]
    out = {}
    for name, entry in raw.items():
        genes = tuple(entry["genes"])
        weights = tuple(float(w) for w in entry.get("weights", [1.0] * len(genes)))
        out[name] = GeneSet(name, genes, weights, entry["citation"], entry.get("description", ""))
    return out


def programme_sets() -> dict[str, GeneSet]:
    return load_collection("programmes")


def celltype_markers() -> dict[str, GeneSet]:
    return load_collection("celltype_markers")


def all_sets() -> dict[str, GeneSet]:
    return {**programme_sets(), **celltype_markers()}
