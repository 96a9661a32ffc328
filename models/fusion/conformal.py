"""Split-conformal intervals for virtual transcriptomics (Vovk et al. 2005; Lei et al. 2018).

Why: a predicted programme score without a calibrated interval invites over-reading. On a held-out
calibration set the absolute residual |measured - predicted| of each programme gives the
ceil((n + 1)(1 - alpha)) / n quantile q; [pred - q, pred + q] then covers a new exchangeable
patient's measured score with probability >= 1 - alpha. The quantile depends on which imaging
features the patient has (a cine-only study predicts worse than one with mapping), so it is
computed per observed-feature pattern by re-encoding the calibration set with the same pattern.
"""

from __future__ import annotations

import math

import numpy as np

from .features import FusionData


def conformal_quantile(residuals: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """Per-column split-conformal quantile of absolute residuals (n, P) -> (P,)."""
    r = np.abs(np.asarray(residuals, np.float64))
    n = r.shape[0]
    level = min(1.0, math.ceil((n + 1) * (1.0 - alpha)) / n)
    return np.quantile(r, level, axis=0, method="higher")


class ConformalPredictor:
    """Wraps any fusion model's ``predict_programmes`` with pattern-specific 90 % intervals."""

    def __init__(self, model, calibration: FusionData, n_programmes: int, alpha: float = 0.1) -> None:
        keep = calibration.has_imaging & calibration.has_omics
        self.model, self.cal, self.alpha, self.P = model, calibration.subset(np.flatnonzero(keep)), alpha, n_programmes
        self._cache: dict[tuple[bool, ...], np.ndarray] = {}

    def quantile(self, pattern: np.ndarray, site_known: bool = True) -> np.ndarray:
        key = (*(bool(v) for v in pattern), bool(site_known))
        if key not in self._cache:
            cal = self.cal
            img = cal.imaging.copy()
            img[:, ~np.asarray(pattern, bool)] = np.nan
            rows = ~np.isnan(img).all(1)
            site = cal.site if site_known else np.full_like(cal.site, -1)
            masked = FusionData(cal.ids, img, cal.omics, site, cal.truth, cal.targets_true).subset(np.flatnonzero(rows))
            pred = self.model.predict_programmes(masked)
            self._cache[key] = conformal_quantile(masked.omics[:, : self.P] - pred, self.alpha)
        return self._cache[key]

    def predict(self, data: FusionData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction, lower, upper), each (n, P); each row uses its own feature pattern's quantile."""
        pred = self.model.predict_programmes(data)
        q = np.vstack([self.quantile(~np.isnan(row), bool(s >= 0)) for row, s in zip(data.imaging, data.site)])
        return pred, pred - q, pred + q
