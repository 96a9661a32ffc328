"""Benchmark: imaging-omics fusion on a held-out synthetic cohort, MVAE beside its baselines and an oracle.

Run: ``python benchmarks/bench_fusion.py [--retrain]``. Uses the shipped MVAE weights (``--retrain``
trains a fresh one on the reference split, timing it on one thread); the CCA and late-fusion
baselines are fitted on the same reference training split, and the oracle sees the true factors.
Figures on the held-out cohort (``HELD_OUT``, same world, other patients): virtual-transcriptomics
R² against the true programme activities, 90 % conformal coverage, FOSCTTM, kNN site entropy
(latent vs raw inputs), factor-probe |r|, the relative loss of encoding from imaging alone, and
the latency of projecting one patient through the ``fusion_project`` tool. Writes
``benchmarks/results/bench_fusion.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import structlog
from rich.console import Console
from rich.table import Table

from _common import write  # type: ignore[import-not-found]

log = structlog.get_logger("bench_fusion")

ROWS = [("vt_r2_true", "VT R² vs true activity"), ("vt_r2_measured", "VT R² vs measured score"),
        ("coverage_90", "90 % interval coverage"), ("interval_halfwidth_sd", "interval half-width (SD)"),
        ("foscttm", "FOSCTTM imaging vs omics"), ("factor_r_min", "min |r| factor probe"),
        ("probe_r2_all", "probe R² all modalities"), ("probe_r2_imaging_only", "probe R² imaging only"),
        ("imaging_only_relative_loss", "relative loss, imaging only"), ("site_entropy_latent", "kNN site entropy, latent"),
        ("site_entropy_raw_inputs", "kNN site entropy, raw inputs"), ("encode_one_ms", "encode one patient (ms)")]


def _tool_latency(tmp: Path) -> dict:
    """Project the demo-style phantom study through the tools and time one projection."""
    import json

    from cardiomics.tools import ArtifactStore, ToolContext, call_tool
    from cardiomics.tools.imaging._regional import example_segmentation

    ctx = ToolContext(store=ArtifactStore(tmp / "store"))
    seg = example_segmentation(ctx)
    func = call_tool("cardiac_function", {"segmentation_id": seg}, ctx)
    reg = call_tool("regional_function", {"segmentation_id": seg}, ctx)
    args = {"cardiac_function": func.model_dump(mode="json"), "regional_function": reg.model_dump(mode="json")}
    call_tool("fusion_project", args, ctx)  # warm: reference + index
    t0 = time.perf_counter()
    n = 20
    for _ in range(n):
        proj = call_tool("fusion_project", args, ctx)
    ms = (time.perf_counter() - t0) / n * 1000
    t0 = time.perf_counter()
    call_tool("cohort_neighbours", {"projection_id": proj.projection_id, "k": 5}, ctx)  # builds the index
    build_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    nb = call_tool("cohort_neighbours", {"projection_id": proj.projection_id, "k": 5}, ctx)
    nb_ms = (time.perf_counter() - t0) * 1000
    truth = json.loads((ctx.store.root / "sample" / "truth.json").read_text())
    return {"project_one_patient_ms": ms, "neighbours_first_call_with_index_build_ms": build_ms, "neighbours_ms": nb_ms,
            "demo_neighbours": [n.patient_id for n in nb.neighbours],
            "demo_neighbour_distances": [n.distance for n in nb.neighbours],
            "demo_truth_lv_edv_ml": truth["truth"]["lv_edv_ml"], "demo_mean_posterior_sd": proj.mean_posterior_sd}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--retrain", action="store_true", help="train a fresh MVAE instead of loading the shipped weights")
    args = ap.parse_args()
    from cardiomics.models.fusion import MVAE, CCABaseline, LateFusionBaseline, Oracle, load_reference
    from cardiomics.models.fusion.evaluate import evaluate_model
    from cardiomics.models.fusion.reference import HELD_OUT, split
    from cardiomics.synthetic.cohort import simulate_cohort

    ref = load_reference()
    pre, data = ref.pre, ref.data
    tr_rows, cal_rows = split(len(data))
    train, cal = data.subset(tr_rows), data.subset(cal_rows)
    test = pre.transform_cohort(simulate_cohort(HELD_OUT))
    P = len(pre.programmes)
    models, fit_s = {}, {}
    t0 = time.perf_counter()
    models["mvae"] = MVAE(P, pre.n_sites, epochs=300).fit(train) if args.retrain else ref.model
    fit_s["mvae"] = time.perf_counter() - t0 if args.retrain else float(ref.card.training.wall_time_s)
    for cls in (CCABaseline, LateFusionBaseline, Oracle):
        t0 = time.perf_counter()
        m = cls(P).fit(train)
        fit_s[m.name] = time.perf_counter() - t0
        models[m.name] = m
    results = {name: evaluate_model(m, train, cal, test, P) for name, m in models.items()}
    for name in results:
        results[name]["fit_s"] = fit_s[name]
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["CARDIOMICS_COHORT_DIR"] = str(Path(tmp) / "cohort")
        tools = _tool_latency(Path(tmp))
    table = Table(title=f"Fusion on held-out synthetic cohort (seed {HELD_OUT.seed}, n={HELD_OUT.n_patients})")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    for key, label in ROWS + [("fit_s", "fit time (s)")]:
        table.add_row(label, *[f"{results[n][key]:.3f}" if key in results[n] else "–" for n in results])
    console = Console()
    console.print(table)
    mv, orc = results["mvae"], results["oracle"]
    best = max(results["cca"]["vt_r2_true"], results["late_fusion"]["vt_r2_true"])
    summary = {
        "vt_r2_ratio_to_oracle": mv["vt_r2_true"] / orc["vt_r2_true"], "vt_r2_minus_best_baseline": mv["vt_r2_true"] - best,
        "coverage_90": mv["coverage_90"], "imaging_only_relative_loss": mv["imaging_only_relative_loss"],
        "foscttm": mv["foscttm"], "factor_r": mv["factor_r"], "site_entropy_latent": mv["site_entropy_latent"],
        "site_entropy_raw_inputs": mv["site_entropy_raw_inputs"], "train_s": fit_s["mvae"], **tools,
    }
    console.print(summary)
    path = write("bench_fusion", {"results": results, "summary": summary})
    log.info("bench_fusion_written", path=str(path))


if __name__ == "__main__":
    main()
