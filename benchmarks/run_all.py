"""Run every ``bench_*.py`` here, one process each, and gather their figures beside their targets.

Writes ``benchmarks/results/summary.json``: per benchmark its exit status, wall time, result
file and numeric figures; and one list of every figure that has a target, with the ratio
figure / target (a ratio ≤ 1 meets a 'lower is better' target). Benchmarks print and record;
they never gate CI, so this exits 0 unless asked (``--strict``) to fail on a missed target.

Targets come from a benchmark's ``targets`` block (``{name: {value, target, unit, better, ratio}}``)
or, for benchmarks without one, from key pairs such as ``help_s_median`` / ``help_target_s``.

Run: python benchmarks/run_all.py [--only NAME ...] [--timeout SECONDS] [--strict]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from _common import machine  # noqa: E402
from _measure import load_average  # noqa: E402


def flatten(obj, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("targets", "machine"):
                continue
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = obj
    return out


def paired_targets(flat: dict[str, float]) -> dict[str, dict]:
    """``x_target_s`` beside ``x_s…``: the value key is the target key without its 'target' word."""
    found = {}
    for key, limit in flat.items():
        leaf = key.rsplit(".", 1)[-1]
        if "target" not in leaf.split("_") or "ratio" in leaf:
            continue
        stem = "_".join(w for w in leaf.split("_") if w != "target")
        parent = key[: -len(leaf)]
        cands = [k for k in flat if k.startswith(parent + stem) and "target" not in k and "ratio" not in k]
        if cands and limit:
            best = min(cands, key=len)
            value = flat[best]
            found[stem] = {"value": value, "target": limit, "better": "lower", "ratio": round(value / limit, 3),
                           "met": value <= limit, "from": best}
    return found


def run_one(path: Path, timeout: int) -> dict:
    before = {p: p.stat().st_mtime for p in RESULTS.glob("*.json")} if RESULTS.exists() else {}
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=timeout, cwd=HERE.parent, check=False)
        rc, tail = res.returncode, (res.stdout + res.stderr)[-3000:]
    except subprocess.TimeoutExpired as exc:
        rc, tail = "timeout", str(exc)[-500:]
    wall = round(time.perf_counter() - t0, 2)
    written = [p for p in RESULTS.glob("*.json") if p.name != "summary.json" and p.stat().st_mtime > before.get(p, 0)]
    entry: dict = {"rc": rc, "wall_s": wall, "results": [p.name for p in written], "figures": {}, "targets": {}}
    if rc != 0:
        entry["output_tail"] = tail
    for p in written:
        data = json.loads(p.read_text())
        entry["figures"].update(flatten(data))
        entry["targets"].update(data.get("targets") or paired_targets(flatten(data)))
    return entry


def fusion_tools() -> list[str]:
    """Registered fusion tools (projection of a patient into the joint latent space), if any."""
    from cardiomics.tools import registry

    return sorted(n for n, s in registry().items() if s.func.__module__.startswith("cardiomics.tools.fusion"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="benchmark names (bench_NAME.py) to run; default all")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per benchmark")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--collect", action="store_true", help="run nothing: summarise the result files already in results/")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    con = Console()
    benches = sorted(HERE.glob("bench_*.py"))
    if args.only:
        benches = [b for b in benches if b.stem.removeprefix("bench_") in args.only or b.stem in args.only]
    RESULTS.mkdir(exist_ok=True)
    summary: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), "load_average_start": load_average(),
                     "benchmarks": {}, "targets": [], "notes": {}}
    for b in ([] if args.collect else benches):
        con.print(f"[bold]{b.name}[/] …", highlight=False)
        entry = run_one(b, args.timeout)
        summary["benchmarks"][b.stem] = entry
        con.print(f"  rc={entry['rc']} in {entry['wall_s']} s; results: {', '.join(entry['results']) or 'none'}", highlight=False)
        for name, t in entry["targets"].items():
            summary["targets"].append({"benchmark": b.stem, "figure": name, **t})
    if args.collect:
        for p in sorted(RESULTS.glob("*.json")):
            if p.name == "summary.json":
                continue
            data = json.loads(p.read_text())
            flat = flatten(data)
            name = str(data.get("benchmark", p.stem))
            entry = {"rc": None, "wall_s": None, "results": [p.name], "figures": flat, "when": data.get("when"),
                     "targets": data.get("targets") or paired_targets(flat)}
            summary["benchmarks"][name] = entry
            for fig, t in entry["targets"].items():
                summary["targets"].append({"benchmark": name, "figure": fig, **t})
    fusion = fusion_tools()
    fusion_figures = [k for e in summary["benchmarks"].values() for k in e["figures"] if "fusion" in k or "projection" in k]
    if not fusion:
        summary["notes"]["fusion_projection"] = "not available: no fusion tool is registered in this installation"
    elif not fusion_figures:
        summary["notes"]["fusion_projection"] = f"not measured: fusion tools {fusion} exist but no benchmark reports their throughput"
    omics = {k: v for e in summary["benchmarks"].values() for k, v in e["figures"].items() if k.endswith("cells_per_s")}
    summary["notes"]["omics_scoring_throughput"] = omics or "not measured (bench_omics.py did not run or wrote no cells_per_s)"
    summary["load_average_end"] = load_average()
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    table = Table(title="Figures against targets (ratio ≤ 1 meets a 'lower is better' target)")
    for col in ("benchmark", "figure", "value", "target", "ratio", "met"):
        table.add_column(col)
    for t in summary["targets"]:
        table.add_row(t["benchmark"], t["figure"], f"{t['value']}", f"{t['target']}", f"{t['ratio']}",
                      "[green]yes[/]" if t.get("met") else "[red]no[/]")
    con.print(table)
    for k, v in summary["notes"].items():
        con.print(f"{k}: {v}", highlight=False)
    con.print(f"written to {RESULTS / 'summary.json'}", highlight=False)
    missed = [t for t in summary["targets"] if t.get("met") is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
