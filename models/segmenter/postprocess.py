"""Post-processing of short-axis label volumes (ACDC values: 0 bg, 1 RV, 2 myo, 3 LV cavity).

Per volume (S, R, C), in order:

1. Largest connected component per structure in 3D (in-plane 8-connectivity, through-plane face
   neighbours). Other components are kept only if they hold at least ``keep_frac`` (25 %) of the largest
   one's voxels (breath-hold shifts can split a structure between slices).
2. Per-slice small-island removal: 2D components under ``min_area_mm2`` (20 mm^2) are dropped.
3. Hole filling per slice: holes in the LV cavity and background enclosed by the LV cavity + myocardium
   become LV cavity; holes in the RV become RV.
4. Slice consistency: an LV cavity in a slice with no myocardium at all is implausible and is
   relabelled background (the cavity is always surrounded by myocardium in short axis).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

RV, MYO, LV = 1, 2, 3

_STRUCT_3D = np.zeros((3, 3, 3), dtype=bool)
_STRUCT_3D[1] = True  # 8-connectivity in-plane
_STRUCT_3D[0, 1, 1] = _STRUCT_3D[2, 1, 1] = True  # face neighbours through-plane


def _largest_components(mask: np.ndarray, keep_frac: float) -> np.ndarray:
    lab, n = ndi.label(mask, structure=_STRUCT_3D)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= keep_frac * sizes.max()) + 1
    return np.isin(lab, keep)


def postprocess_volume(
    labels: np.ndarray,
    pixel_spacing_mm: tuple[float, float] = (1.5, 1.5),
    *,
    keep_frac: float = 0.25,
    min_area_mm2: float = 20.0,
) -> np.ndarray:
    """Clean one (S, R, C) label volume; returns a new uint8 array."""
    out = np.asarray(labels, dtype=np.uint8).copy()
    if out.ndim == 2:
        return postprocess_volume(
            out[None], pixel_spacing_mm, keep_frac=keep_frac, min_area_mm2=min_area_mm2
        )[0]
    box = _foreground_box(out)
    if box is None:
        return out
    # all steps are local to the labelled voxels: work inside their bounding box (plus a 1-pixel background
    # ring, so "touches the border" in hole filling means the same as on the whole image)
    out[box] = _clean(out[box], pixel_spacing_mm, keep_frac, min_area_mm2)
    return out


def _foreground_box(labels: np.ndarray) -> tuple[slice, slice, slice] | None:
    rows = np.flatnonzero(labels.any(axis=(0, 2)))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(labels.any(axis=(0, 1)))
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, labels.shape[1])
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, labels.shape[2])
    return (slice(None), slice(r0, r1), slice(c0, c1))


def _clean(out: np.ndarray, pixel_spacing_mm: tuple[float, float], keep_frac: float, min_area_mm2: float) -> np.ndarray:
    out = out.copy()
    min_px = max(1, round(min_area_mm2 / (pixel_spacing_mm[0] * pixel_spacing_mm[1])))
    for c in (LV, MYO, RV):
        m = out == c
        if not m.any():
            continue
        keep = _largest_components(m, keep_frac)
        out[m & ~keep] = 0
    for s in range(out.shape[0]):
        sl = out[s]
        for c in (LV, MYO, RV):
            m = sl == c
            if not m.any():
                continue
            lab, n = ndi.label(m, structure=np.ones((3, 3), bool))
            if n:
                sizes = np.bincount(lab.ravel())
                small = np.flatnonzero(sizes < min_px)
                small = small[small > 0]
                if small.size:
                    sl[np.isin(lab, small)] = 0
        lv = sl == LV
        if lv.any():
            sl[ndi.binary_fill_holes(lv) & (sl == 0)] = LV
        heart = (sl == LV) | (sl == MYO)
        if heart.any():
            sl[ndi.binary_fill_holes(heart) & (sl == 0)] = LV
        rv = sl == RV
        if rv.any():
            sl[ndi.binary_fill_holes(rv) & (sl == 0)] = RV
        if (sl == LV).any() and not (sl == MYO).any():
            sl[sl == LV] = 0
        out[s] = sl
    return out


def postprocess_stack(
    labels: np.ndarray, n_slices: int | None, pixel_spacing_mm: tuple[float, float]
) -> np.ndarray:
    """Post-process an (N, R, C) stack as N / n_slices consecutive volumes (one volume if None)."""
    n = labels.shape[0]
    if not n_slices or n % n_slices:
        n_slices = n
    out = np.empty_like(labels, dtype=np.uint8)
    for v in range(0, n, n_slices):
        out[v : v + n_slices] = postprocess_volume(
            labels[v : v + n_slices], pixel_spacing_mm
        )
    return out
