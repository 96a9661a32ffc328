"""Train the shipped fusion model on the reference cohort and write ``weights.pt`` + ``card.json``.

Run: ``cardiomics train-fusion [--out DIR] [--epochs N]`` (or ``python -m cardiomics.models.fusion.train``
with the same options). Deterministic for the
same seeds on CPU (one thread). The card's metrics come from the same evaluation protocol as
``benchmarks/bench_fusion.py`` on a held-out cohort (``HELD_OUT``) drawn from the same world.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog
import torch

from cardiomics.errors import InputError
from cardiomics.hashing import sha256_file
from cardiomics.models.card import DataSource, InputSpec, Licence, MetricRecord, Metrics, ModelCard, Split, Target, Training, TrainingData, write_card
from cardiomics.synthetic.cohort import simulate_cohort

from .baselines import CCABaseline, LateFusionBaseline, Oracle
from .evaluate import evaluate_model
from .features import IMAGING_FEATURES
from .mvae import MVAE
from .reference import HELD_OUT, MODEL_DIR, REFERENCE, fit_preprocessor, save_weights, split

log = structlog.get_logger("cardiomics.models.fusion")
EPOCHS = 300


def build_all(epochs: int = EPOCHS):
    """Fit the preprocessor, the MVAE and the baselines on the reference training split."""
    ref = simulate_cohort(REFERENCE)
    tr_rows, cal_rows = split(REFERENCE.n_patients)
    pre = fit_preprocessor(ref, tr_rows)
    data = pre.transform_cohort(ref)
    train, cal = data.subset(tr_rows), data.subset(cal_rows)
    test = pre.transform_cohort(simulate_cohort(HELD_OUT))
    P = len(pre.programmes)
    started = time.perf_counter()
    mvae = MVAE(P, REFERENCE.n_sites, epochs=epochs).fit(train)
    train_s = time.perf_counter() - started
    models = {"mvae": mvae, "cca": CCABaseline(P).fit(train), "late_fusion": LateFusionBaseline(P).fit(train),
              "oracle": Oracle(P).fit(train)}
    return pre, models, train, cal, test, train_s


def _records(res: dict) -> list[MetricRecord]:
    keys = ("vt_r2_true", "vt_r2_measured", "coverage_90", "interval_halfwidth_sd", "foscttm", "factor_r_min",
            "probe_r2_all", "probe_r2_imaging_only", "imaging_only_relative_loss", "site_entropy_latent",
            "site_entropy_raw_inputs", "encode_one_ms")
    return [MetricRecord(name=k, value=round(float(res[k]), 4), unit="ms" if k.endswith("_ms") else "")
            for k in keys if k in res]


def make_card(weights: Path, results: dict[str, dict], train_s: float, epochs: int, n_params: int, model_hp: dict) -> ModelCard:
    mv, orc = results["mvae"], results["oracle"]
    best_base = max(results["cca"]["vt_r2_true"], results["late_fusion"]["vt_r2_true"])
    targets = [
        Target(name="vt_r2_vs_oracle", description="virtual-transcriptomics R² (vs true activity) / oracle R²",
               threshold=0.9, comparison=">=", achieved=round(mv["vt_r2_true"] / orc["vt_r2_true"], 4),
               met=mv["vt_r2_true"] >= 0.9 * orc["vt_r2_true"]),
        Target(name="vt_r2_minus_best_baseline", description="MVAE R² minus the better of CCA and late fusion",
               threshold=0.0, comparison=">=", achieved=round(mv["vt_r2_true"] - best_base, 4), met=mv["vt_r2_true"] > best_base),
        Target(name="coverage_90_low", description="90 % conformal interval coverage", threshold=0.85, comparison=">=",
               achieved=round(mv["coverage_90"], 4), met=0.85 <= mv["coverage_90"] <= 0.95),
        Target(name="coverage_90_high", description="90 % conformal interval coverage", threshold=0.95, comparison="<=",
               achieved=round(mv["coverage_90"], 4), met=0.85 <= mv["coverage_90"] <= 0.95),
        Target(name="imaging_only_relative_loss", description="relative loss of factor-probe R², imaging only vs all",
               threshold=0.10, comparison="<=", achieved=round(mv["imaging_only_relative_loss"], 4),
               met=mv["imaging_only_relative_loss"] <= 0.10),
        Target(name="foscttm", description="FOSCTTM of paired imaging-only vs omics-only embeddings", threshold=0.10,
               comparison="<=", achieved=round(mv["foscttm"], 4), met=mv["foscttm"] <= 0.10),
        Target(name="factor_r_min", description="smallest |r| of a linear probe latent -> planted factor", threshold=0.9,
               comparison=">=", achieved=round(mv["factor_r_min"], 4), met=mv["factor_r_min"] >= 0.9),
    ]
    metrics = [Metrics(dataset=f"held-out synthetic cohort seed={HELD_OUT.seed} n={HELD_OUT.n_patients}: {name}",
                       split="paired patients", n_cases=HELD_OUT.n_patients, records=_records(res),
                       targets=targets if name == "mvae" else [], notes=[f"model: {name}"])
               for name, res in results.items() if not name.startswith("_")]
    train_ids = f"rows of split(seed=0, fraction=0.8) of the reference cohort seed={REFERENCE.seed} n={REFERENCE.n_patients}"
    return ModelCard(
        id="fusion-mvae", version="1.0.0", task="imaging-omics shared latent space and virtual transcriptomics",
        weights_file=weights.name, weights_sha256=sha256_file(weights), weights_bytes=weights.stat().st_size,
        architecture="multimodal VAE, product-of-experts posterior (Wu & Goodman 2018), site-conditional MLP encoders/decoders",
        architecture_config={"latent": model_hp["latent"], "hidden": model_hp["hidden"], "beta": model_hp["beta"],
                             "selection": "latent 4/6/8/12 compared on the calibration split (R² vs true activity); largest kept",
                             "imaging_features": list(IMAGING_FEATURES),
                             "omics_features": "7 programme scores + 6 panel PCs (standardised)", "n_sites": REFERENCE.n_sites},
        parameters=n_params,
        labels={str(i): p for i, p in enumerate(results["_programmes"])},  # output programmes, in order
        input=InputSpec(modality="CMR phenotypes (cine function, wall thickness, LGE burden, T1/T2/ECV mapping, age, sex) and/or bulk programme scores",
                        array="per patient: 15 imaging features and/or 13 omics features, any subset (NaN = missing)",
                        spacing="not applicable (tabular phenotypes)",
                        preprocessing=["log of volumes and mass, log1p of LGE burden", "z-score with reference training statistics",
                                       "omics: log-CPM over the panel, gene z-scores, signed mean per programme, PCA"]),
        training_data=TrainingData(
            sources=[DataSource(name="cardiomics synthetic cohort", n_cases=REFERENCE.n_patients,
                                description=f"cardiomics.synthetic.cohort.simulate_cohort(CohortSpec(n_patients={REFERENCE.n_patients}, "
                                            f"seed={REFERENCE.seed}, world_seed={REFERENCE.world_seed})); regenerated at load time",
                                licence="synthetic, no patient data")],
            split=Split(method="random 80/20 train/calibration", seed=0, train=[train_ids], validation=["the other 20 % (conformal calibration)"],
                        test=[f"separate cohort seed={HELD_OUT.seed} n={HELD_OUT.n_patients}"]),
            seed=0, notes=["partially paired: 15 % imaging-only, 15 % omics-only, 10 % of imaged patients without mapping",
                           "three sites (1.5 T / 3 T) with contour, LGE-threshold and omics batch effects"]),
        training=Training(command=f"cardiomics train-fusion --epochs {epochs}", epochs=epochs, iterations=epochs * -(-int(results['_n_train']) // 256),
                          batch_size=256, optimiser="Adam, one-cycle lr 2e-3",
                          loss="PoE ELBO (beta=0.5 on the KL): joint + each single-modality posterior reconstructing all observed modalities",
                          augmentation=["random drop of imaging feature groups and omics PCs (p=0.15)", "site code dropout (p=0.2)"],
                          wall_time_s=round(train_s, 1), hardware=f"CPU, 1 thread ({platform.machine()})", torch_version=torch.__version__),
        intended_use="Research only: trained on SYNTHETIC data; demonstrates imaging-omics fusion, cohort neighbours and "
                     "virtual transcriptomics with calibrated intervals. NOT for clinical use.",
        out_of_scope=["clinical diagnosis or treatment decisions", "real patient cohorts without retraining and revalidation",
                      "predicting individual genes (only programme scores)",
                      "sites/scanners outside the reference sites (site code 'unknown' widens intervals only approximately)"],
        metrics=metrics,
        known_failure_modes=["programme predictions from cine-only studies are weak for inflammation (needs T2/T1 mapping)",
                             "synthetic world: real imaging-omics relations are weaker and nonlinear in other ways"],
        inference={"encode_one_patient_ms": round(results["mvae"]["encode_one_ms"], 2)},
        licence=Licence(code="Apache-2.0", weights="Apache-2.0",
                        citations=["Wu M, Goodman N. Multimodal Generative Models for Scalable Weakly-Supervised Learning. NeurIPS 2018.",
                                   "Lei J, et al. Distribution-Free Predictive Inference for Regression. JASA 2018."]),
        created=datetime.now(UTC).strftime("%Y-%m-%d"),
    )


def train(out: Path = MODEL_DIR, epochs: int = EPOCHS) -> dict:
    """Fit, evaluate on the held-out cohort and write ``weights.pt`` + ``card.json`` to ``out``; returns the headline figures."""
    if epochs < 1:
        raise InputError("bad-epochs", f"epochs must be at least 1, got {epochs}", hint=f"the shipped model used {EPOCHS}")
    pre, models, train_set, cal, test, train_s = build_all(epochs)
    P = len(pre.programmes)
    results = {name: evaluate_model(m, train_set, cal, test, P) for name, m in models.items()}
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "weights.pt"
    save_weights(models["mvae"], pre, weights, {"train_seconds": train_s})
    n_params = sum(p.numel() for p in models["mvae"].net.parameters())
    card = make_card(weights, {**results, "_programmes": pre.programmes, "_n_train": len(train_set)}, train_s, epochs, n_params, models["mvae"].hp)
    write_card(card, out)
    log.info("fusion_model_written", out=str(out), train_s=round(train_s, 1),
             vt_r2=round(results["mvae"]["vt_r2_true"], 3), oracle=round(results["oracle"]["vt_r2_true"], 3))
    return {"out": str(out), "epochs": epochs, "train_wall_s": round(train_s, 1), "parameters": n_params,
            "weights_sha256": sha256_file(weights), "vt_r2_true": round(results["mvae"]["vt_r2_true"], 4),
            "oracle_vt_r2_true": round(results["oracle"]["vt_r2_true"], 4), "coverage_90": round(results["mvae"]["coverage_90"], 4)}


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=MODEL_DIR)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    args = ap.parse_args(argv)
    train(args.out, args.epochs)
    return args.out


if __name__ == "__main__":
    main()
