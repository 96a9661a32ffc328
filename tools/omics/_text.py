"""Text from input files shown as data: control characters removed, length bounded."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_WS = re.compile(r"\s+")


def quote(value: Any, max_len: int = 256) -> str:
    """Make free text from an AnnData file (gene names, labels) safe to show; it stays data."""
    if value is None:
        return ""
    text = unicodedata.normalize("NFC", str(value))
    text = "".join(" " if ch in "\t\n\r\x0b\x0c" else ch for ch in text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    text = _WS.sub(" ", text).strip()
    if len(text) > max_len:
        text = text[: max_len - 1].rstrip() + "…"
    return text


def quote_list(values: Any, n: int = 5) -> str:
    """The first ``n`` items, quoted, for an error message."""
    items = [quote(v, 64) for v in list(values)[:n]]
    return ", ".join(repr(i) for i in items)
