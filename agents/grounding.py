"""Grounding check: every number in a narrative must come from a tool output.

A number in the text is grounded when some value in the tool outputs rounds to it at the
precision it is written with (``62.4`` matches 62.36; ``62`` matches 61.6). Citations in square
brackets (``[kb:…]``) must be among the ids retrieval returned in this run.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

_NUMBER = re.compile(r"(?<![\w.])[-−]?\d+(?:\.\d+)?(?![\w.]*\d)")
_CITATION = re.compile(r"\[(kb:[A-Za-z0-9_.:-]+)\]")


def numeric_values(obj: Any) -> list[float]:
    """Every number anywhere in a nested tool output (provenance and hashes excluded)."""
    found: list[float] = []

    def walk(x: Any, key: str = "") -> None:
        if key in ("provenance", "png_base64", "html"):
            return
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)) and math.isfinite(x):
            found.append(float(x))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, str(k))
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v, key)

    walk(obj)
    return found


def check(text: str, values: Iterable[float], retrieved_ids: Iterable[str] = ()) -> list[str]:
    """Problems found in ``text``; an empty list means grounded."""
    pool = sorted(set(values))
    problems = []
    for match in _NUMBER.finditer(text):
        raw = match.group().replace("−", "-")
        decimals = len(raw.split(".")[1]) if "." in raw else 0
        x = float(raw)
        tol = 0.5 * 10 ** (-decimals) + 1e-9
        if not any(abs(v - x) <= tol or abs(abs(v) - abs(x)) <= tol for v in pool):
            problems.append(f"number {raw} at character {match.start()} matches no tool output")
    allowed = set(retrieved_ids)
    for match in _CITATION.finditer(text):
        if match.group(1) not in allowed:
            problems.append(f"citation [{match.group(1)}] was not returned by knowledge retrieval in this run")
    return problems
