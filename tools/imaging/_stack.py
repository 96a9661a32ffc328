"""The one geometry-aware representation of a cine short-axis study, whatever it was read from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass
class CineStack:
    """A de-identified cine stack.

    ``images``: float32, shape (time, slice, row, column).
    ``spacing_mm``: (between-slice spacing, row spacing, column spacing), all in millimetres.
    ``orientation``: the six DICOM direction cosines (row direction, column direction).
    ``origin_mm``: patient-space position of voxel (slice 0, row 0, column 0).
    ``affine``: 4x4 voxel (column, row, slice) -> patient/scanner mm, as NIfTI expects for (x, y, z) arrays.
    ``study_key``: salted hash standing for the study; never the UID or a name.
    ``meta``: descriptive, non-identifying fields only (modality, manufacturer, field strength,
    series description as quoted data, number of files...).
    """

    images: np.ndarray
    spacing_mm: tuple[float, float, float]
    slice_thickness_mm: float
    orientation: tuple[float, ...]
    origin_mm: tuple[float, float, float]
    affine: np.ndarray
    trigger_times_ms: np.ndarray
    source: Literal["dicom", "nifti"]
    study_key: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.images.shape[1])

    @property
    def voxel_ml(self) -> float:
        s, r, c = self.spacing_mm
        return s * r * c / 1000.0
