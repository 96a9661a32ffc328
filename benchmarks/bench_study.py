"""Per-study CMR analysis on 2 cores: a 25-frame, 10-slice phantom through every imaging step.

Steps: load (DICOM -> de-identified stack), segment (all frames, with the default test-time
augmentation), indices (cardiac_function), regional (AHA 16 segments), report (figures, report
composition and HTML). Wall time and peak resident memory per step; target: the study analysed
in at most 10 s (segmenter loading reported apart: it happens once per process).

Also one 10-slice frame written as NIfTI through ``segment_file`` (what ``cardiomics segment`` runs):
median of 5 warm calls, target under 1 s; and the whole ``cardiomics segment`` command in a fresh
process (Python start and the torch import included, reported, no target).

Run: python benchmarks/bench_study.py   (writes benchmarks/results/study.json)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write
from _measure import Steps, load_average, target

TARGET_S = 10.0
FRAME_TARGET_S = 1.0
THREADS = 2


def _frame(ph, tmp: Path, ctx) -> dict:
    """One 10-slice frame: warm ``segment_file`` calls in process, then the CLI command cold."""
    import os
    import statistics
    import subprocess

    import nibabel as nib
    import numpy as np

    from cardiomics.tools import call_tool

    sp = ph.spacing_mm  # (slice, row, col)
    vol = np.transpose(ph.images[0], (1, 2, 0)).astype(np.float32)  # ACDC layout: (x, y, z)
    affine = np.diag([sp[1], sp[2], sp[0], 1.0])
    nii = tmp / "frame.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(nii))
    walls = []
    for i in range(6):
        t0 = time.perf_counter()
        call_tool("segment_file", {"path": str(nii), "out_path": str(tmp / f"lab{i}.nii.gz")}, ctx)
        walls.append(time.perf_counter() - t0)
    warm = statistics.median(walls[1:])
    env = dict(os.environ, CARDIOMICS_HOME=str(tmp / "cli-home"))
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "cardiomics.cli", "segment", str(nii), "--out", str(tmp / "cli.nii.gz")],
                        capture_output=True, env=env).returncode
    cli = time.perf_counter() - t0
    return {"slices": int(vol.shape[2]), "rows": int(vol.shape[0]), "cols": int(vol.shape[1]),
            "segment_file_warm_s": [round(w, 3) for w in walls[1:]], "segment_file_warm_median_s": round(warm, 3),
            "cli_cold_wall_s": round(cli, 3), "cli_rc": rc}


def main() -> None:
    import torch
    from rich.console import Console

    from cardiomics.agents.compose import compose
    from cardiomics.synthetic.phantom import PhantomSpec, make_phantom
    from cardiomics.tools import ArtifactStore, ToolContext, call_tool, registry
    from cardiomics.tools.imaging._dicom import write_dicom_series
    from cardiomics.tools.report import render_html

    torch.set_num_threads(THREADS)
    registry()
    tmp = Path(tempfile.mkdtemp(prefix="cardiomics-bench-study-"))
    ph = make_phantom(PhantomSpec(n_frames=25, n_slices=10, seed=3))
    write_dicom_series(ph.images, ph.spacing_mm, tmp / "dicom", seed=3)
    ctx = ToolContext(store=ArtifactStore(tmp / "store"))
    steps = Steps()
    t0 = time.perf_counter()
    from cardiomics.models.segmenter import load_segmenter

    seg_model = load_segmenter()
    model_load_s = time.perf_counter() - t0

    with steps.step("load"):
        study = call_tool("load_study", {"path": str(tmp / "dicom")}, ctx)
    with steps.step("segment"):
        seg = call_tool("segment", {"study_id": study.study_id}, ctx)
    with steps.step("indices"):
        func = call_tool("cardiac_function", {"segmentation_id": seg.segmentation_id}, ctx)
    with steps.step("regional"):
        call_tool("regional_function", {"segmentation_id": seg.segmentation_id}, ctx)
    with steps.step("report"):
        figs = call_tool("report_figures", {"study_id": study.study_id, "segmentation_id": seg.segmentation_id}, ctx)
        results = {k: v.model_dump(mode="json") for k, v in
                   (("load_study", study), ("segment", seg), ("cardiac_function", func), ("report_figures", figs))}
        html = render_html(compose({"run_id": "run-bench", "results": results}, 1))
    total = steps.total_s()
    frame = _frame(ph, tmp, ctx)
    figures = {
        "study": {"frames": 25, "slices": 10, "rows": 192, "cols": 192, "torch_threads": THREADS},
        "segmenter": getattr(seg_model, "ref", {}),
        "segmenter_load_s": round(model_load_s, 3),
        "steps": steps.figures,
        "total_s": total,
        "report_html_bytes": len(html.encode()),
        "lv_ef_pct": {"measured": func.lv_ef_pct.value, "truth": round(ph.truth["lv_ef_pct"], 1)},
        "frame": frame,
        "load_average": load_average(),
        "targets": {"study_25x10_analysed_s": target(total, TARGET_S, "s"),
                    "frame_10_slices_segmented_s": target(frame["segment_file_warm_median_s"], FRAME_TARGET_S, "s")},
    }
    path = write("study", figures)
    con = Console()
    for name, f in steps.figures.items():
        con.print(f"{name:>10}: {f['wall_s']:7.3f} s   peak RSS {f['peak_rss_mb']:7.1f} MB (+{f['rss_growth_mb']:.1f})", highlight=False)
    con.print(f"{'total':>10}: {total:7.3f} s   target {TARGET_S} s   ratio {total / TARGET_S:.2f}   "
              f"(segmenter load {model_load_s:.2f} s; load average {figures['load_average']})", highlight=False)
    con.print(f"{'frame':>10}: {frame['segment_file_warm_median_s']:7.3f} s   one 10-slice frame (segment_file, warm), "
              f"target {FRAME_TARGET_S} s; `cardiomics segment` cold {frame['cli_cold_wall_s']:.2f} s (rc {frame['cli_rc']})",
              highlight=False)
    con.print(f"written to {path}", highlight=False)


if __name__ == "__main__":
    main()
