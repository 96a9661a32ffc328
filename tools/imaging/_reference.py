"""Published adult reference ranges (the data file cites its source)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from ..contract import ReferenceRange

Sex = Literal["male", "female"]
_FILE = Path(__file__).with_name("data") / "reference_ranges.json"


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(_FILE.read_text())


def reference_range(quantity: str, sex: Sex | None) -> ReferenceRange | None:
    table = _table()
    entry = table["ranges"].get(quantity)
    if entry is None:
        return None
    if sex in ("male", "female"):
        lo, hi = entry[sex]
        population = f"adult {'men' if sex == 'male' else 'women'}, SSFP cine"
    else:  # sex unknown: the union of both ranges, so nothing is flagged on a guess
        lo, hi = min(v[0] for v in entry.values()), max(v[1] for v in entry.values())
        population = "adults, sex not given (union of male and female ranges), SSFP cine"
    return ReferenceRange(lower=lo, upper=hi, population=population, source=table["source"])
