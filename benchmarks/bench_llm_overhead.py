"""Orchestration overhead per LLM step: graph, audit, redaction, guard and validation, not the model.

A scripted model (answers instantly) drives processing and explanation of a phantom study whose
segmenter returns the phantom's labels, so what remains of the wall time, after subtracting the
tool durations the executor records, is what the orchestration costs per model request.
Run: python benchmarks/bench_llm_overhead.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    os.environ.update(CARDIOMICS_HOME=str(tmp / "home"), CARDIOMICS_AUDIT_DIR=str(tmp / "audit"))

    import cardiomics.models.segmenter as segmod
    from cardiomics.agents.llm import LLMPlanner
    from cardiomics.agents.llm.scripted import ScriptedChatModel
    from cardiomics.agents.runs import Runs
    from cardiomics.config import Settings
    from cardiomics.synthetic.phantom import PhantomSpec, make_phantom
    from cardiomics.tools.imaging._dicom import write_dicom_series

    from llm_helpers import PhantomLabels, analysis_and_explanation, narrative_reply, standard_processing

    ph = make_phantom(PhantomSpec(n_frames=16, n_slices=8, rows=160, cols=160, seed=11))
    write_dicom_series(ph.images, ph.spacing_mm, tmp / "study", seed=11)
    segmod.load_segmenter = lambda *a, **k: PhantomLabels(ph.labels)
    per_step, steps_total = [], 0
    for i in range(args.runs):
        model = ScriptedChatModel(standard_processing() + analysis_and_explanation() + [narrative_reply()])
        with Runs(Settings.from_env(), planner=LLMPlanner(model)) as runs:
            t0 = time.perf_counter()
            st = runs.start(str(tmp / "study"))
            runs.decide(st.run_id, "bench", "approved")
            wall = time.perf_counter() - t0
            recs = runs.services.audit(st.run_id).records()
        tool_s = sum(r.get("duration_s", 0.0) for r in recs if r["event"] == "tool_call")
        model_s = sum(r.get("model_s", 0.0) for r in recs if r["event"] == "llm_response")
        steps = sum(r["event"] == "llm_request" for r in recs)
        steps_total += steps
        if i > 0 or args.runs == 1:  # the first run warms imports and caches
            per_step.append((wall - tool_s - model_s) / steps)
    per_step.sort()
    figures = {"llm_steps_per_run": steps_total // args.runs, "overhead_per_step_ms_median": round(1000 * per_step[len(per_step) // 2], 1),
               "overhead_per_step_ms_max": round(1000 * per_step[-1], 1), "runs": args.runs,
               "note": "wall time of start+QC approval minus tool durations minus model time, per model request "
                       "(graph, checkpoints, audit, redaction, guard, validation)"}
    print(figures)
    write("llm_overhead", figures)


if __name__ == "__main__":
    main()
