"""Per-slice segmentation overlays for the QC page, drawn with numpy + Pillow.

Why not matplotlib: a QC page shows every slice at ED and ES (tens of images); drawing each with
numpy edges takes about a millisecond, so the page appears at once and nothing is stored.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

from cardiomics.tools import ArtifactStore
from cardiomics.tools.imaging import load_stack

# ACDC label values, the colours of the report's overlay figure: RV blue, myocardium green, LV red
COLOURS = {1: (31, 119, 180), 2: (44, 160, 44), 3: (214, 39, 40)}
SCALE = 2


@lru_cache(maxsize=4)
def _volumes(root: str, study_id: str, segmentation_id: str) -> tuple[np.ndarray, np.ndarray]:
    store = ArtifactStore(root)
    images = np.asarray(load_stack(store, study_id).images, dtype=np.float32)
    labels = np.asarray(store.arrays(segmentation_id)["labels"])
    return images, labels


def shape(store: ArtifactStore, study_id: str, segmentation_id: str) -> tuple[int, int]:
    """(frames, slices) of the stored study."""
    images, _ = _volumes(str(store.root), study_id, segmentation_id)
    return int(images.shape[0]), int(images.shape[1])


def _edges(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _thick(edge: np.ndarray) -> np.ndarray:
    """Edges two pixels wide, so a contour stays visible when the image is shown small."""
    out = edge.copy()
    out[1:, :] |= edge[:-1, :]
    out[:, 1:] |= edge[:, :-1]
    return out


# palette: 252 grey levels, then the three label colours (one byte per pixel: PNGs encode ~3x faster)
GREYS = 252
PALETTE = [round(i * 255 / (GREYS - 1)) for i in range(GREYS) for _ in range(3)] + [c for rgb in COLOURS.values() for c in rgb]


def slice_png(store: ArtifactStore, study_id: str, segmentation_id: str, frame: int, slice_: int) -> bytes:
    """One slice of one frame, windowed to its 1st–99.5th percentile, with label contours (cached: ids are content hashes)."""
    return _slice_png(str(store.root), study_id, segmentation_id, int(frame), int(slice_))


@lru_cache(maxsize=512)
def _slice_png(root: str, study_id: str, segmentation_id: str, frame: int, slice_: int) -> bytes:
    images, labels = _volumes(root, study_id, segmentation_id)
    if not (0 <= frame < images.shape[0] and 0 <= slice_ < images.shape[1]):
        raise IndexError(f"frame {frame} slice {slice_} outside {images.shape[:2]}")
    img = images[frame, slice_]
    lo, hi = np.percentile(img, (1, 99.5))
    index = np.clip((img - lo) / max(hi - lo, 1e-6) * (GREYS - 1), 0, GREYS - 1).astype(np.uint8)
    index = index.repeat(SCALE, 0).repeat(SCALE, 1)
    lab = labels[frame, slice_].repeat(SCALE, 0).repeat(SCALE, 1)
    for i, value in enumerate(COLOURS):
        index[_thick(_edges(lab == value))] = GREYS + i
    im = Image.fromarray(index, "P")
    im.putpalette(PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
