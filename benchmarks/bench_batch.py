"""`cardiomics batch` throughput on a generated cohort: studies per minute with 1 and 2 workers
(scaling ratio), and a run killed midway then resumed (only the remainder is analysed).

Studies are small (12 frames x 8 slices x 128^2, ``cardiomics.synthetic.cohort_dicom``); the cohort
is cached in ``$CARDIOMICS_BENCH_COHORT`` (default: a temp folder) so reruns skip generation.
Each worker count writes to a fresh output folder, so nothing is skipped. One study (the middle one)
is a truncated DICOM file: it must be reported in the summary as failed, and the batch go on. Set the
size with ``--n`` or ``$CARDIOMICS_BENCH_BATCH_N`` (default 200).

Run: python benchmarks/bench_batch.py [--n 200]   (writes benchmarks/results/batch.json)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write
from _measure import load_average


def _cli_batch(cohort: Path, out: Path, workers: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cardiomics.cli", "batch", str(cohort), "--out", str(out), "--workers", str(workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def _done(out: Path) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["run_id"] for p in (out / "studies").glob("*/manifest.json")}


def main() -> None:
    from rich.console import Console

    from cardiomics.synthetic.cohort_dicom import write_cohort

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=int(os.environ.get("CARDIOMICS_BENCH_BATCH_N", "200")))
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    args = ap.parse_args()
    con = Console()
    tmp = Path(tempfile.mkdtemp(prefix="cardiomics-bench-batch-"))
    root = Path(os.environ.get("CARDIOMICS_BENCH_COHORT", tmp / "cohort"))
    t0 = time.perf_counter()
    corrupt = args.n // 2
    write_cohort(root / "studies", args.n, seed=0, corrupt=[corrupt])
    gen_s = time.perf_counter() - t0
    cohort = tmp / "cohort-n"
    cohort.mkdir()
    for i in range(args.n):
        (cohort / f"study-{i:04d}").symlink_to(root / "studies" / f"study-{i:04d}", target_is_directory=True)
    env = {**os.environ, "CARDIOMICS_HOME": str(tmp / "home"), "CARDIOMICS_AUDIT_DIR": str(tmp / "audit")}
    runs = {}
    for w in args.workers:
        out = tmp / f"out-{w}"
        t = time.perf_counter()
        rc = _cli_batch(cohort, out, w, env).wait()
        wall = time.perf_counter() - t
        summary = json.loads((out / "batch_summary.json").read_text())
        runs[str(w)] = {"rc": rc, "wall_s": round(wall, 1), "done": summary["done"], "failed": summary["failed"],
                        "studies_per_min": round((summary["done"] + summary["failed"]) / wall * 60, 2),
                        "batch_reported_per_min": summary["studies_per_min"],
                        "failures": [{"study": f["study"], "code": (f.get("error") or {}).get("code")} for f in summary["failures"]],
                        "corrupt_study_reported": [f["study"] for f in summary["failures"]] == [f"study-{corrupt:04d}"]}
        con.print(f"{w} worker(s): {summary['done']} done, {summary['failed']} failed in {wall:.1f} s "
                  f"= {runs[str(w)]['studies_per_min']} studies/min", highlight=False)
        shutil.rmtree(out / "studies", ignore_errors=True)
    scaling = None
    if "1" in runs and "2" in runs and runs["1"]["studies_per_min"]:
        scaling = round(runs["2"]["studies_per_min"] / runs["1"]["studies_per_min"], 3)

    # killed midway, then rerun: only the remainder is analysed
    sub = tmp / "cohort-quarter"
    sub.mkdir()
    n_sub = min(args.n, max(4, args.n // 4))
    for i in range(min(n_sub, args.n)):
        (sub / f"study-{i:04d}").symlink_to(root / "studies" / f"study-{i:04d}", target_is_directory=True)
    out = tmp / "out-resume"
    proc = _cli_batch(sub, out, 2, env)
    while len(_done(out)) < n_sub // 2 and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _done(out)
    rc = _cli_batch(sub, out, 2, env).wait()
    summary = json.loads((out / "batch_summary.json").read_text())
    after = _done(out)
    resume = {"studies": n_sub, "done_before_kill": len(before), "rerun_skipped": summary["skipped"], "rerun_done": summary["done"],
              "rerun_failed": summary["failed"], "rc": rc,
              "earlier_results_kept": all(after.get(k) == v for k, v in before.items()),
              "only_remainder_analysed": summary["skipped"] == len(before) and summary["done"] == n_sub - len(before)}
    con.print(f"resume: killed after {len(before)}/{n_sub}; rerun skipped {summary['skipped']}, analysed {summary['done']}", highlight=False)
    figures = {"n_studies": args.n, "corrupt_study": f"study-{corrupt:04d}", "study_shape": "12 frames x 8 slices x 128^2",
               "cohort_generation_s": round(gen_s, 1),
               "cpus": os.cpu_count(), "runs_by_workers": runs, "scaling_2_over_1": scaling, "resume": resume,
               "load_average": load_average()}
    path = write("batch", figures)
    con.print(f"scaling 2 workers / 1 worker: {scaling}; written to {path}", highlight=False)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
