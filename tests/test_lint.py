"""The code base passes the project's ruff configuration (pyproject.toml, [tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"ruff check failed:\n{res.stdout}{res.stderr}"
