"""Cold start: `cardiomics --help`, and the first tool call in a fresh process, with the imports behind it.

The registry imports every tool module; any heavy library a module imports at its top is paid by
every process that touches one tool (the CLI's first command, each MCP server, each batch worker).
``-X importtime`` names them: the offenders listed are tool modules whose own import (cumulative)
takes longest, with the third-party packages they pull in.

Run: python benchmarks/bench_coldstart.py   (writes benchmarks/results/coldstart.json)
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write
from _measure import load_average, target

HELP_TARGET_S = 1.0
FIRST_CALL = (
    "from cardiomics.tools import ArtifactStore, ToolContext, call_tool\n"
    "import tempfile\n"
    "call_tool('prediction_metrics', {'y_true': [0, 1] * 10, 'y_prob': [0.2, 0.7] * 10}, "
    "ToolContext(store=ArtifactStore(tempfile.mkdtemp())))\n"
)


def _timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def importtime(env: dict) -> tuple[float, list[dict]]:
    """Total import seconds of the registry and the slowest tool modules / third-party imports under them."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import cardiomics.tools as t; t.registry()"],
                         capture_output=True, text=True, env=env, check=True)
    rows = []
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)) / 1e6, len(m.group(3)), m.group(4)))
    total = max((r[0] for r in rows if r[2] == "cardiomics.tools._catalogue"), default=0.0)
    # stack-walk: the import log lists children before their parent, parent at smaller indent
    offenders, pending = [], []
    for cum, indent, name in rows:
        children = [p for p in pending if p[1] > indent]
        pending = [p for p in pending if p[1] <= indent] + [(cum, indent, name)]
        if name.startswith("cardiomics.tools.") and name.count(".") >= 3 and cum >= 0.1:
            heavy = sorted({c[2].split(".")[0] for c in children if not c[2].startswith(("cardiomics", "_")) and c[0] >= 0.05})
            offenders.append({"module": name, "cumulative_s": round(cum, 3), "heavy_imports": heavy})
    offenders.sort(key=lambda o: -o["cumulative_s"])
    return round(total, 3), offenders[:12]


def main() -> None:
    from rich.console import Console

    tmp = Path(tempfile.mkdtemp(prefix="cardiomics-bench-cold-"))
    env = {**os.environ, "CARDIOMICS_HOME": str(tmp / "home"), "CARDIOMICS_AUDIT_DIR": str(tmp / "audit")}
    cli = [sys.executable, "-m", "cardiomics.cli"]
    _timed(cli + ["--help"], env)  # page cache
    helps = [_timed(cli + ["--help"], env) for _ in range(5)]
    firsts = [_timed([sys.executable, "-c", FIRST_CALL], env) for _ in range(3)]
    bare = [_timed([sys.executable, "-c", "pass"], env) for _ in range(3)]
    total_import_s, offenders = importtime(env)
    help_s = round(statistics.median(helps), 3)
    figures = {
        "help_s": [round(x, 3) for x in helps], "help_median_s": help_s,
        "first_tool_call_s": [round(x, 3) for x in firsts], "first_tool_call_median_s": round(statistics.median(firsts), 3),
        "python_startup_s": round(statistics.median(bare), 3),
        "registry_import_s": total_import_s, "import_offenders": offenders,
        "load_average": load_average(),
        "targets": {"cli_help_s": target(help_s, HELP_TARGET_S, "s")},
    }
    path = write("coldstart", figures)
    con = Console()
    con.print(f"--help {help_s:.2f} s (target ≤ {HELP_TARGET_S} s); first tool call in a fresh process "
              f"{figures['first_tool_call_median_s']:.2f} s (registry imports {total_import_s:.2f} s)", highlight=False)
    for o in offenders:
        con.print(f"  {o['cumulative_s']:6.3f} s  {o['module']}  <- {', '.join(o['heavy_imports']) or '-'}", highlight=False)
    con.print(f"written to {path}", highlight=False)


if __name__ == "__main__":
    main()
