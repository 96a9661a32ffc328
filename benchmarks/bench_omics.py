"""Benchmark: programme scoring of 50,000 cells x 2,000 genes (time, peak memory), and planted-truth figures.

Run: ``python benchmarks/bench_omics.py``. Writes ``benchmarks/results/bench_omics.json``.
Peak memory is the process's peak resident set size (ru_maxrss) and the peak of Python
allocations (tracemalloc) during the scoring call.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import structlog

from cardiomics.synthetic import omics_sim
from cardiomics.tools import ArtifactStore, ToolContext, call_tool
from cardiomics.tools.omics import celltype_markers, programme_sets

log = structlog.get_logger("bench_omics")
OUT = Path(__file__).resolve().parent / "results" / "bench_omics.json"


def _single_cell(path: Path, n_cells: int, n_genes: int) -> None:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    markers = {k: list(v.genes) for k, v in celltype_markers().items()}
    extra = [g for s in programme_sets().values() for g in s.genes]
    prof = omics_sim.celltype_profiles(markers, n_genes, extra, seed=0)
    rng = np.random.default_rng(0)
    blocks = []
    for a in range(0, n_cells, 5000):  # built in blocks to bound memory
        lab = rng.integers(0, len(prof.cell_types), min(5000, n_cells - a))
        mu = rng.lognormal(np.log(2000), 0.4, len(lab))[:, None] * prof.profiles[lab]
        blocks.append(sp.csr_matrix(rng.poisson(rng.gamma(5.0, mu / 5.0)).astype(np.float32)))
    x = sp.vstack(blocks, format="csr")
    adata = ad.AnnData(X=x, var=pd.DataFrame(index=prof.genes))
    adata.layers["counts"] = x
    adata.uns["omics_kind"] = "single_cell"
    omics_sim.write(adata, path)


def planted_figures(root: Path) -> dict:
    from sklearn.metrics import roc_auc_score

    markers = {k: list(v.genes) for k, v in celltype_markers().items()}
    fib = list(programme_sets()["fibrosis_ecm"].genes)
    prof = omics_sim.celltype_profiles(markers, 1500, fib, seed=3)
    spots = omics_sim.simulate_spatial(n_side=24, seed=3, profiles=prof, programme_genes=fib,
                                       programme_fraction=0.2, programme_fold=2.5)
    ref = omics_sim.simulate_reference(prof, n_per_type=80, seed=4)
    ctx = ToolContext(store=ArtifactStore(root / "store"), seed=0)
    sid = call_tool("load_omics", {"path": str(omics_sim.write(spots, root / "s.h5ad"))}, ctx).omics_id
    rid = call_tool("load_omics", {"path": str(omics_sim.write(ref, root / "r.h5ad"))}, ctx).omics_id
    dec = call_tool("deconvolve_spots", {"omics_id": sid, "reference_id": rid}, ctx)
    props = ctx.store.arrays(dec.proportions_id)["proportions"]
    order = [prof.cell_types.index(c.cell_type) for c in dec.cell_types]
    mae = float(np.abs(props - spots.obsm["proportions_true"][:, order]).mean())
    sc = call_tool("score_programmes", {"omics_id": sid, "names": ["fibrosis_ecm"], "n_null": 100}, ctx)
    arr = ctx.store.arrays(sc.scores_id)
    truth = spots.obs["programme_active"].to_numpy()
    rng = np.random.default_rng(11)
    fillers = [g for g in prof.genes if g.startswith("SIMG")]
    custom = {f"random{i}": list(rng.choice(fillers, 15, replace=False)) for i in range(4)}
    rnd = call_tool("score_programmes", {"omics_id": sid, "names": [], "custom_sets": custom, "n_null": 100}, ctx)
    p_rnd = ctx.store.arrays(rnd.scores_id)["p"]
    return {"deconvolution_mae": round(mae, 4), "max_abs_sum_error": dec.max_abs_sum_error,
            "planted_auroc_z": round(float(roc_auc_score(truth, arr["z"][:, 0])), 4),
            "planted_fraction_active": sc.programmes[0].fraction_active,
            "fpr_inactive_spots_alpha05": round(float((arr["p"][~truth, 0] < 0.05).mean()), 4),
            "fpr_random_sets_alpha05": round(float((p_rnd < 0.05).mean()), 4)}


def main(n_cells: int = 50_000, n_genes: int = 2_000, n_null: int = 100) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        _single_cell(root / "sc.h5ad", n_cells, n_genes)
        build_s = time.perf_counter() - t0
        ctx = ToolContext(store=ArtifactStore(root / "store"), seed=0)
        t0 = time.perf_counter()
        oid = call_tool("load_omics", {"path": str(root / "sc.h5ad")}, ctx).omics_id
        load_s = time.perf_counter() - t0
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        t0 = time.perf_counter()
        out = call_tool("score_programmes", {"omics_id": oid, "collection": "all", "n_null": n_null}, ctx)
        score_s = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        n_sets = sum(p.scored for p in out.programmes)
        result = {
            "n_cells": n_cells, "n_genes": n_genes, "n_sets_scored": n_sets, "n_null_per_set": n_null,
            "build_file_s": round(build_s, 2), "load_validate_s": round(load_s, 2), "score_s": round(score_s, 2),
            "cells_per_s": round(n_cells / score_s), "peak_python_alloc_mib": round(peak / 2**20, 1),
            "peak_rss_mib_before": round(rss0 / 1024, 1), "peak_rss_mib_after": round(rss1 / 1024, 1),
            "planted": planted_figures(root / "planted"),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    log.info("bench_omics", **{k: v for k, v in result.items() if k != "planted"})
    log.info("bench_omics.planted", **result["planted"])
    return result


if __name__ == "__main__":
    main()
