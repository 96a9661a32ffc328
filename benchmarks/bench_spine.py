"""Cold start and the demo: `cardiomics --help` and `cardiomics demo` wall time on this machine.

Run: python benchmarks/bench_spine.py   (prints figures, writes benchmarks/results/spine.json)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rich.console import Console

from _common import peak_rss_mb, write

CLI = [sys.executable, "-m", "cardiomics.cli"]


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cardiomics-bench-"))
    env = {**os.environ, "CARDIOMICS_HOME": str(tmp / "home"), "CARDIOMICS_AUDIT_DIR": str(tmp / "audit")}
    try:
        helps = [timed(CLI + ["--help"], env) for _ in range(5)]
        demo_cold = timed(CLI + ["demo"], env)  # writes the sample, then analyses it
        demo_warm = timed(CLI + ["demo"], env)  # sample exists: analysis only
        figures = {
            "help_s_median": round(statistics.median(helps), 3), "help_target_s": 2.0,
            "demo_first_s": round(demo_cold, 2), "demo_again_s": round(demo_warm, 2),
            "demo_peak_rss_mb": round(peak_rss_mb(children=True), 1),
        }
        figures["help_ratio_to_target"] = round(figures["help_s_median"] / 2.0, 3)
        path = write("spine", figures)
        for k, v in figures.items():
            Console().print(f"{k:>24}: {v}", highlight=False)
        Console().print(f"written to {path}", highlight=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
