"""Grounding check: every number in a narrative must come from a tool output.

A number in the text is grounded when some value in the tool outputs rounds to it at the
precision it is written with (``62.4`` matches 62.36; ``62`` matches 61.6). A number written with a
unit (``150.0 ml``, ``59.9 %``) must match a value carrying that unit (or a value without a known
unit), so a volume cannot stand in for an ejection fraction. Thousands separators (``1,234``),
decimal commas (``62,4``), leading decimals (``.45``) and scientific notation (``3e-4``) are read
as the numbers they are, and so is a number glued to the abbreviation of a cardiac quantity
(``EF45%``, ``LVEDV212ml``), while digits inside names (``MYH7``, ``COL1A1``, ``T1``) are not numbers.
Every knowledge id in the text (``kb:…``, bracketed or not, alone or in a list) must be among the
ids retrieval returned in this run; an id in any other spelling (``kb-…``) was never returned and
is flagged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

_NUMBER = re.compile(r"""
    (?<![\w.,])
    [-−+]?
    (?: \d{1,3}(?:,\d{3})+(?:\.\d+)?      # 1,234 / 1,234.5
      | \d+,\d{1,2}(?![\d,])              # decimal comma: 62,4
      | \d+(?:\.\d+)?                     # 62 / 62.4
      | \.\d+ )                           # .45
    (?:[eE][-−+]?\d+ | \s?[x×]\s?10\^[-−+]?\d+)?
    (?![\w.]*\d)
""", re.X)
# abbreviations a narrative may write with the number glued on (EF45%); other letters before a digit
# make a name (MYH7, T1), not a number
_GLUED = re.compile(r"""
    \b(?:LV|RV)?(?:EF|EDVi?|ESVi?|SVi?|MASSi?)
    (?P<number>[-−+]?\d+(?:\.\d+)?)
    (?![\w.]*\d)
""", re.X | re.I)
_UNIT = re.compile(r"\s?(%|per\s?cent|percent|ml/m²|ml/m2|ml/m\^2|g/m²|g/m2|g/m\^2|mL|ml|kg|g|mm|cm|ms|bpm)(?![A-Za-z²])", re.I)
_CITATION = re.compile(r"\bkb[:\-][A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?")
_UNIT_NAMES = {"%": "%", "percent": "%", "per cent": "%", "percent ": "%", "ml/m2": "ml/m²", "ml/m^2": "ml/m²",
               "g/m2": "g/m²", "g/m^2": "g/m²", "pct": "%"}
_KEY_SUFFIX = {"_mm": "mm", "_ms": "ms", "_ml": "ml", "_pct": "%", "_g": "g", "_ml_m2": "ml/m²", "_g_m2": "g/m²"}


def _norm_unit(unit: str) -> str:
    u = re.sub(r"\s+", " ", unit.strip().lower())
    return _UNIT_NAMES.get(u.replace(" ", "") if u.startswith("per") else u, u)


class UnitValue(float):
    """A tool-output number that knows its unit (a plain ``float`` everywhere else)."""

    unit: str

    def __new__(cls, value: float, unit: str) -> UnitValue:
        obj = super().__new__(cls, value)
        obj.unit = unit
        return obj


def numeric_values(obj: Any) -> list[float]:
    """Every number anywhere in a nested tool output (provenance and hashes excluded), with its unit when known."""
    found: list[float] = []

    def walk(x: Any, key: str = "", unit: str | None = None) -> None:
        if key in ("provenance", "png_base64", "html"):
            return
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)) and math.isfinite(x):
            u = unit or next((v for s, v in sorted(_KEY_SUFFIX.items(), key=lambda i: -len(i[0])) if key.endswith(s)), None)
            found.append(UnitValue(float(x), u) if u else float(x))
        elif isinstance(x, dict):
            here = _norm_unit(x["unit"]) if isinstance(x.get("unit"), str) else unit
            for k, v in x.items():
                walk(v, str(k), None if k == "level" else here)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v, key, unit)

    walk(obj)
    return found


def _parse(raw: str) -> tuple[float, int]:
    """Value and decimals of a number as written."""
    s = raw.replace("−", "-").replace("+", "")
    s = re.sub(r"\s?[x×]\s?10\^", "e", s)
    if re.fullmatch(r"-?\d+,\d{1,2}", s):
        s = s.replace(",", ".")
    s = s.replace(",", "")
    mant = re.split(r"[eE]", s)[0]
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    exp = int(re.split(r"[eE]", s)[1]) if re.search(r"[eE]", s) else 0
    return float(s), max(decimals - exp, 0)


def _numbers(scan: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of every number written in ``scan``, in reading order."""
    found = {m.start(): (m.start(), m.end(), m.group()) for m in _NUMBER.finditer(scan)}
    for m in _GLUED.finditer(scan):
        found.setdefault(m.start("number"), (m.start("number"), m.end("number"), m.group("number")))
    return [found[k] for k in sorted(found)]


def check(text: str, values: Iterable[float], retrieved_ids: Iterable[str] = ()) -> list[str]:
    """Problems found in ``text``; an empty list means grounded."""
    pool = sorted({(float(v), getattr(v, "unit", None) or "") for v in values})
    units_known = {u for _, u in pool if u}
    problems = []
    allowed = set(retrieved_ids)
    for match in _CITATION.finditer(text):
        if match.group() not in allowed:
            problems.append(f"citation [{match.group()}] was not returned by knowledge retrieval in this run")
    # ids are not numbers: blank them (keeping positions) before reading numbers
    scan = _CITATION.sub(lambda m: " " * len(m.group()), text)
    for start, end, raw in _numbers(scan):
        x, decimals = _parse(raw)
        tol = 0.5 * 10 ** (-decimals) + 1e-9
        unit_m = _UNIT.match(scan, end)
        unit = _norm_unit(unit_m.group(1)) if unit_m else None
        ok_unit = (lambda u, unit=unit: not u or u == unit) if unit in units_known else (lambda u: True)
        if not any(ok_unit(u) and (abs(v - x) <= tol or abs(abs(v) - abs(x)) <= tol) for v, u in pool):
            where = f" {unit}" if unit else ""
            problems.append(f"number {raw.strip()}{where} at character {start} matches no tool output"
                            + (" with that unit" if unit in units_known else ""))
    return problems
