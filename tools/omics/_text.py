"""Text from input files shown as data: control characters removed, length bounded."""

from __future__ import annotations

from typing import Any

from cardiomics.text import quote_text as quote  # one quoting rule for every input file


def quote_list(values: Any, n: int = 5) -> str:
    """The first ``n`` items, quoted, for an error message."""
    items = [quote(v, 64) for v in list(values)[:n]]
    return ", ".join(repr(i) for i in items)
