"""Quoting of names that come from input tables: data, never instructions, never long."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def quote_name(value: object, max_len: int = 256) -> str:
    """Strip control characters and truncate, so a column name cannot smuggle text into a report."""
    text = _CONTROL.sub("", str(value)).strip()
    return text if len(text) <= max_len else text[: max_len - 1] + "…"
