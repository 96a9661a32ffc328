"""Free text from input files (DICOM tags, AnnData metadata, table columns) made safe to show as data."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_WS = re.compile(r"\s+")
ELLIPSIS = "…"


def quote_text(value: Any, max_len: int = 256) -> str:
    """Free text from an input file made safe to show as data.

    Control and format characters (including bidi overrides and zero-width characters) are
    removed, runs of whitespace collapse to one space, and text longer than ``max_len`` is cut and
    ends with an ellipsis (the result is never longer than ``max_len``). ``None`` gives ``""``.
    """
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", errors="replace")
    elif isinstance(value, (list, tuple)):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if ch in "\t\n\r\x0b\x0c" else ch for ch in text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    text = _WS.sub(" ", text).strip()
    max_len = max(int(max_len), 1)
    if len(text) > max_len:
        text = text[: max_len - 1].rstrip() + ELLIPSIS
    return text
