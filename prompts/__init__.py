"""Prompts: one file per agent role, plus the report narrative template. Versioned by content hash."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from cardiomics.hashing import sha256_text

_DIR = Path(__file__).parent
ROLE_FILES = {"processing": "processing.md", "analysis": "analysis.md", "explanation": "explanation.md"}


@cache
def load(name: str) -> str:
    return (_DIR / name).read_text(encoding="utf-8")


def role_prompt(role: str) -> str:
    return load(ROLE_FILES[role])


def prompt_hashes() -> dict[str, str]:
    """SHA-256 of every prompt file, recorded at run start so a report names the prompts behind it."""
    return {p.name: sha256_text(p.read_text(encoding="utf-8")) for p in sorted(_DIR.iterdir()) if p.suffix in (".md", ".j2")}


__all__ = ["ROLE_FILES", "load", "prompt_hashes", "role_prompt"]
