"""Quoting of names that come from input tables: data, never instructions, never long."""

from __future__ import annotations

from cardiomics.text import quote_text as quote_name  # noqa: F401  (one quoting rule for every input file)
