"""Calibration and power of ``association_scan`` on simulated cohorts with known truth.

200 replicates with planted effects (empirical FDR at q = 0.05, power per effect size) and 200
fully null replicates (genomic inflation lambda, false-positive rate), each scan run through the
registered tool with its defaults (Freedman-Lane permutation p-values, 1,000 permutations, for
FDR). BH on the asymptotic p-values of the same scans is reported beside it.

    python benchmarks/bench_stats.py [--replicates 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import structlog
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cardiomics.synthetic.assoc_sim import simulate_association_cohort
from cardiomics.tools import ArtifactStore, ToolContext, call_tool

log = structlog.get_logger("bench_stats")
EFFECTS = {("lvef_pct", "prog_00"): -0.4, ("lge_burden_pct", "prog_03"): 0.4,
           ("lv_mass_g", "prog_01"): 0.25, ("lvef_pct", "prog_04"): 0.25,
           ("wall_thickness_septal_mm", "prog_02"): 0.15, ("lv_mass_g", "prog_05"): 0.15}
N, K, Q, ALPHA = 300, 25, 0.05, 0.05
CHI2_MED = stats.chi2.ppf(0.5, 1)


def run(replicates: int, effects: dict, store: ArtifactStore, seed0: int) -> list[dict]:
    rows = []
    for r in range(replicates):
        c = simulate_association_cohort(n=N, n_programmes=K, effects=effects, seed=seed0 + r)
        out = call_tool("association_scan", {"columns": c.columns, "phenotypes": c.phenotypes, "programmes": ["prog_*"],
                                             "covariates": c.covariates, "control_rounds": 5},
                        ToolContext(store=store, seed=seed0 + r))
        truth = np.array([(t.phenotype, t.programme) in c.truth for t in out.tests])
        size = np.array([abs(c.truth.get((t.phenotype, t.programme), 0.0)) for t in out.tests])
        p_asym = np.array([t.p_asymptotic for t in out.tests])
        p_perm = np.array([t.p_permutation for t in out.tests])
        sig_perm = np.array([t.significant for t in out.tests])
        sig_asym = multipletests(p_asym, alpha=Q, method="fdr_bh")[0]
        rows.append({"truth": truth, "size": size, "p_asym": p_asym, "p_perm": p_perm, "sig_perm": sig_perm,
                     "sig_asym": sig_asym, "control_clean": out.negative_controls.all_clean,
                     "control_fraction": out.negative_controls.permuted_labels.observed_fraction})
    return rows


def fdr_power(rows: list[dict], key: str) -> dict:
    fdp = [float((r[key] & ~r["truth"]).sum() / max(r[key].sum(), 1)) for r in rows]
    power = {}
    for s in sorted({float(x) for r in rows for x in r["size"] if x > 0}):
        hits = [r[key][r["size"] == s] for r in rows]
        power[f"{s:g}"] = round(float(np.mean(np.concatenate(hits))), 4)
    return {"empirical_fdr": round(float(np.mean(fdp)), 4),
            "fdr_se": round(float(np.std(fdp, ddof=1) / np.sqrt(len(fdp))), 4), "power_by_effect": power}


def null_summary(rows: list[dict]) -> dict:
    p_asym = np.concatenate([r["p_asym"] for r in rows])
    p_perm = np.concatenate([r["p_perm"] for r in rows])
    per_rep = [np.median(stats.chi2.isf(r["p_asym"], 1)) / CHI2_MED for r in rows]
    return {"lambda_pooled": round(float(np.median(stats.chi2.isf(p_asym, 1)) / CHI2_MED), 4),
            "lambda_per_replicate_mean": round(float(np.mean(per_rep)), 4),
            "lambda_per_replicate_sd": round(float(np.std(per_rep, ddof=1)), 4),
            "false_positive_rate_asymptotic": round(float((p_asym < ALPHA).mean()), 4),
            "false_positive_rate_permutation": round(float((p_perm < ALPHA).mean()), 4),
            "replicates_with_any_bh_discovery_perm": round(float(np.mean([r["sig_perm"].any() for r in rows])), 4),
            "replicates_with_any_bh_discovery_asym": round(float(np.mean([r["sig_asym"].any() for r in rows])), 4),
            "negative_control_clean_rate": round(float(np.mean([r["control_clean"] for r in rows])), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=200)
    args = ap.parse_args()
    store = ArtifactStore(tempfile.mkdtemp(prefix="bench-stats-"))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # quiet per-scan logs
    t0 = time.perf_counter()
    planted = run(args.replicates, EFFECTS, store, 10_000)
    t1 = time.perf_counter()
    null = run(args.replicates, {}, store, 20_000)
    t2 = time.perf_counter()
    result = {
        "design": {"replicates": args.replicates, "n": N, "phenotypes": 4, "programmes": K, "tests_per_scan": 4 * K,
                   "planted_effects": {f"{p}~{g}": b for (p, g), b in EFFECTS.items()}, "q": Q,
                   "permutations": 1000, "covariates": ["age", "sex", "bsa_m2", "site"],
                   "effect_unit": "latent SD of phenotype per SD of programme, net of covariates"},
        "planted_permutation_bh": fdr_power(planted, "sig_perm"),
        "planted_asymptotic_bh": fdr_power(planted, "sig_asym"),
        "null": null_summary(null),
        "seconds_per_scan": round((t2 - t0) / (2 * args.replicates), 3),
        "seconds_planted": round(t1 - t0, 1), "seconds_null": round(t2 - t1, 1),
    }
    out = Path(__file__).parent / "results" / "bench_stats.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    log.info("bench_stats", **{k: v for k, v in result.items() if k != "design"}, written=str(out))


if __name__ == "__main__":
    main()
