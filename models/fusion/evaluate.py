"""One evaluation protocol for every fusion model, so the figures sit side by side.

``evaluate_model`` scores a fitted model on held-out patients: virtual transcriptomics (R² against
the true activities and the measured scores, conformal coverage from the calibration set), the
shared space (FOSCTTM of paired imaging-only vs omics-only embeddings, site mixing, factor probes)
and the cost of encoding from imaging alone (mean factor-probe R², imaging only vs all modalities).
"""

from __future__ import annotations

import time

import numpy as np

from . import metrics as M
from .conformal import ConformalPredictor
from .features import FusionData

N_FACTORS = 4


def evaluate_model(model, train: FusionData, calibration: FusionData, test: FusionData, n_programmes: int) -> dict:
    P = n_programmes
    out: dict = {"model": model.name}
    paired = test.subset(np.flatnonzero(test.has_imaging & test.has_omics))
    conf = ConformalPredictor(model, calibration, P, alpha=0.1)
    pred, lo, hi = conf.predict(paired)
    r2t = M.r2_true(pred, paired.targets_true)
    out["vt_r2_true"] = float(r2t.mean())
    out["vt_r2_true_per_programme"] = [round(float(v), 4) for v in r2t]
    out["vt_r2_measured"] = float(M.r2_measured(pred, paired.omics[:, :P]).mean())
    cov = M.coverage(lo, hi, paired.omics[:, :P])
    out["coverage_90"] = float(cov.mean())
    out["coverage_90_range"] = [float(cov.min()), float(cov.max())]
    out["interval_halfwidth_sd"] = float(np.mean((hi - lo) / 2))
    if model.name == "oracle":
        return out
    e_i = model.encode(paired, ("imaging",)).mean
    e_o = model.encode(paired, ("omics",)).mean
    out["foscttm"] = M.foscttm(e_i, e_o)
    tr_pair = train.subset(np.flatnonzero(train.has_imaging & train.has_omics))
    joint_tr = model.encode(tr_pair).mean
    joint_te = model.encode(paired).mean
    r, r2_all = M.factor_probe(joint_tr, tr_pair.truth[:, :N_FACTORS], joint_te, paired.truth[:, :N_FACTORS])
    out["factor_r"] = [round(float(v), 4) for v in r]
    out["factor_r_min"] = float(np.abs(r).min())
    _, r2_img = M.factor_probe(model.encode(tr_pair, ("imaging",)).mean, tr_pair.truth[:, :N_FACTORS], e_i, paired.truth[:, :N_FACTORS])
    out["probe_r2_all"] = float(r2_all.mean())
    out["probe_r2_imaging_only"] = float(r2_img.mean())
    out["imaging_only_relative_loss"] = float((r2_all.mean() - r2_img.mean()) / r2_all.mean())
    out["site_entropy_latent"] = M.site_entropy(joint_te, paired.site)
    raw = np.nan_to_num(np.column_stack([paired.imaging, paired.omics]))
    out["site_entropy_raw_inputs"] = M.site_entropy(raw, paired.site)
    one = paired.subset([0])
    t0 = time.perf_counter()
    for _ in range(20):
        model.encode(one.only(("imaging",)), ("imaging",))
    out["encode_one_ms"] = (time.perf_counter() - t0) / 20 * 1000
    return out
