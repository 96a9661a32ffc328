"""Intervals from test-time augmentation: the spread of a few segmentations of the same images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from ..contract import Interval

LEVEL = 0.95


def tta_interval(point: float, members: Sequence[float], *, lower_bound: float | None = None,
                 upper_bound: float | None = None, ndigits: int = 1) -> Interval | None:
    """95 % interval about ``point`` from its spread over the prediction and the augmentation ``members``.

    Half-width t(0.975, n - 1) x SD of the n values: with n = 5 (a prediction and four augmentations)
    the normal quantile 1.96 would be far too narrow. The bounds are clipped to the quantity's
    physical range (``lower_bound`` / ``upper_bound``, e.g. 0 for a volume, 0-100 for an ejection
    fraction). None with fewer than two members or a non-finite value.
    """
    values = np.asarray([point, *members], dtype=float)
    if len(members) < 2 or not np.isfinite(values).all():
        return None
    n = values.size
    half = float(stats.t.ppf(0.5 + LEVEL / 2.0, n - 1)) * float(values.std(ddof=1))
    lo, hi = point - half, point + half
    clipped = []
    if lower_bound is not None and lo < lower_bound:
        lo = lower_bound
        clipped.append(f"≥ {lower_bound:g}")
    if upper_bound is not None and hi > upper_bound:
        hi = upper_bound
        clipped.append(f"≤ {upper_bound:g}")
    method = (f"prediction ± t(0.975, {n - 1} df) × SD over the prediction and {len(members)} test-time augmentations "
              "(segmentation uncertainty only)")
    if clipped:
        method += f"; clipped to the physical range ({', '.join(clipped)})"
    return Interval(lower=round(lo, ndigits), upper=round(hi, ndigits), level=LEVEL, method=method)

