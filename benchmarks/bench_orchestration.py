"""Orchestration overhead: one study through the graph (audit + SQLite checkpointer + approvals)
against the same tools called directly, and how much each run adds to the checkpoint database.

Both paths do the same work on a 25-frame, 10-slice phantom: the deterministic planner's tool
calls (load, segment, function, regional, literature, figures: whatever the protocol holds), then
report composition and HTML; the direct path calls the tools without executor, audit or graph. Each path gets its own empty data directory (the
artefact store is content-addressed, so a shared one would let the second path skip writes).
Targets: the deterministic graph end to end in at most 15 s; orchestration + audit overhead at
most 5 % of the direct path. The overhead is measured as the time each path spends outside the tools
(wall minus the tools' provenance durations), graph minus direct, over the direct wall time: the tools'
own run-to-run spread is larger than the overhead. The plain wall-time ratio is reported too, with
the median of the pair-by-pair differences; pairs alternate which path runs first.

Run: python benchmarks/bench_orchestration.py   (writes benchmarks/results/orchestration.json)
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write
from _measure import load_average, target

REPEATS = 6  # interleaved pairs; fewer were too few: run-to-run noise (~5-10 %) matched the overhead sought


def _settings(root: Path):
    from cardiomics.config import Settings

    return Settings(home=root / "home", audit_dir=root / "audit").ensure()


class _DirectExecutor:
    """The planner's tool calls straight to ``call_tool``: no allow-list, no audit, no checkpoint."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def call(self, role: str, name: str, arguments: dict, *, step: str | None = None):
        from cardiomics.tools import call_tool

        return call_tool(name, arguments, self.ctx)


def _tool_seconds(results: dict) -> float:
    """Time spent inside the tools, from each output's provenance."""
    return sum((r.get("provenance") or {}).get("duration_s", 0.0) for r in results.values() if isinstance(r, dict))


def direct(study: Path, root: Path) -> tuple[float, float]:
    """The deterministic planner's protocol (whatever tools it calls today), called directly, then the report."""
    from cardiomics.agents.compose import compose
    from cardiomics.agents.protocol import DeterministicPlanner
    from cardiomics.agents.reports import ReportStore
    from cardiomics.tools import ArtifactStore, ToolContext

    s = _settings(root)
    t0 = time.perf_counter()
    ex = _DirectExecutor(ToolContext(store=ArtifactStore(s.artifacts_dir)))
    planner = DeterministicPlanner()
    state = {"run_id": "run-direct", "study_path": str(study), "omics_path": None, "patient": {}, "results": {}}
    for step in (planner.processing, planner.analysis, planner.explanation):
        state["results"].update({k: v.model_dump(mode="json") for k, v in step(ex, state).items()})
    ReportStore(s.reports_dir).save(compose(state, 1))
    return time.perf_counter() - t0, _tool_seconds(state["results"])


def graph(study: Path, root: Path) -> tuple[float, dict]:
    from cardiomics.agents.runs import Runs

    s = _settings(root)
    t0 = time.perf_counter()
    with Runs(s) as runs:
        st = runs.start(str(study))
        t_qc = time.perf_counter() - t0
        st = runs.decide(st.run_id, "bench", "approved")
        st = runs.decide(st.run_id, "bench", "approved")
        assert st.status == "approved", st
        wall = time.perf_counter() - t0
        values = runs.graph.get_state(runs._config(st.run_id)).values
    db = sqlite3.connect(s.checkpoint_db)
    blob = sum(len(v) for t in ("checkpoints", "writes") for row in db.execute(f"select * from {t}")
               for v in row if isinstance(v, (bytes, bytearray)))
    n_ckpt = db.execute("select count(*) from checkpoints").fetchone()[0]
    db.close()
    import json

    figures_json = len(json.dumps(values["results"].get("report_figures", {})))
    results_json = len(json.dumps(values["results"]))
    return wall, {"tool_s": round(_tool_seconds(values["results"]), 3), "to_qc_s": round(t_qc, 3),
                  "checkpoint_db_bytes": os.path.getsize(s.checkpoint_db), "checkpoint_blob_bytes": blob,
                  "checkpoints": n_ckpt, "state_results_json_bytes": results_json, "state_report_figures_json_bytes": figures_json}


def main() -> None:
    import torch
    from rich.console import Console

    from cardiomics.synthetic.phantom import PhantomSpec, make_phantom
    from cardiomics.tools.imaging._dicom import write_dicom_series

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="cardiomics-bench-orch-"))
    ph = make_phantom(PhantomSpec(n_frames=25, n_slices=10, seed=3))
    write_dicom_series(ph.images, ph.spacing_mm, tmp / "dicom", seed=3)
    # imports (langgraph, the checkpointer, matplotlib), segmenter weights: paid once per process, not per run
    direct(tmp / "dicom", tmp / "warmup-direct")
    graph(tmp / "dicom", tmp / "warmup-graph")
    d, g, d_rest, g_rest, info = [], [], [], [], {}
    for i in range(REPEATS):
        # interleaved, so a change in machine load hits both paths alike; which path runs first alternates,
        # since the second run of a pair found caches warmer or the machine busier (a bias either way)
        for path in ("direct", "graph") if i % 2 == 0 else ("graph", "direct"):
            if path == "direct":
                wall, tools = direct(tmp / "dicom", tmp / f"direct-{i}")
                d.append(wall)
                d_rest.append(wall - tools)
            else:
                wall, info = graph(tmp / "dicom", tmp / f"graph-{i}")
                g.append(wall)
                g_rest.append(wall - info["tool_s"])
    dm, gm = statistics.median(d), statistics.median(g)
    # the tools' own run-to-run spread (~0.5 s) swamps a small overhead in the wall times: the time outside
    # the tools (orchestration, audit, checkpoints, report store) compared path against path isolates it
    rest_pct = 100.0 * (statistics.median(g_rest) - statistics.median(d_rest)) / dm
    overhead_pct = 100.0 * (gm - dm) / dm
    overhead_min_pct = 100.0 * (min(g) - min(d)) / min(d)  # fastest of each: the least load noise
    paired_pct = 100.0 * statistics.median([x - y for x, y in zip(g, d, strict=True)]) / dm  # pair by pair: load drift cancels
    figures = {
        "direct_s": [round(x, 3) for x in d], "graph_s": [round(x, 3) for x in g],
        "direct_median_s": round(dm, 3), "graph_median_s": round(gm, 3), "graph_to_direct_ratio": round(gm / dm, 4),
        "overhead_pct": round(overhead_pct, 2), "overhead_of_fastest_pct": round(overhead_min_pct, 2),
        "overhead_paired_median_pct": round(paired_pct, 2),
        "outside_tools_s": {"direct": [round(x, 3) for x in d_rest], "graph": [round(x, 3) for x in g_rest]},
        "overhead_outside_tools_pct": round(rest_pct, 2), "per_run": info, "load_average": load_average(),
        "targets": {"graph_end_to_end_s": target(round(gm, 3), 15.0, "s"),
                    "orchestration_audit_overhead_pct": target(round(rest_pct, 2), 5.0, "%"),
                    "orchestration_audit_overhead_wall_pct": target(round(overhead_pct, 2), 5.0, "%")},
    }
    path = write("orchestration", figures)
    con = Console()
    con.print(f"direct {dm:.2f} s, graph {gm:.2f} s (medians of {REPEATS}; target 15 s), overhead {overhead_pct:+.1f} % "
              f"(fastest against fastest {overhead_min_pct:+.1f} %, pair by pair {paired_pct:+.1f} %); time outside the tools: graph "
              f"{statistics.median(g_rest):.3f} s, direct {statistics.median(d_rest):.3f} s: overhead {rest_pct:+.1f} % (target ≤ 5 %)",
              highlight=False)
    con.print(f"per run: {info}", highlight=False)
    con.print(f"written to {path}", highlight=False)


if __name__ == "__main__":
    main()
