"""The one interface every fusion model follows, so benchmarks and tools treat them alike.

``fit(data)`` learns from partially paired patients; ``encode(data, modalities)`` maps whichever
modalities are named (others are ignored even if present) to a shared latent space with a per-
dimension SD (0 where a method has no notion of uncertainty); ``predict_programmes(data)`` is
virtual transcriptomics: imaging alone -> the standardised programme scores of the omics space.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from .features import FusionData

MODALITIES = ("imaging", "omics")


class Encoding(NamedTuple):
    mean: np.ndarray  # (n, d)
    sd: np.ndarray  # (n, d)


@runtime_checkable
class FusionModel(Protocol):
    name: str

    def fit(self, data: FusionData) -> FusionModel: ...

    def encode(self, data: FusionData, modalities: tuple[str, ...] = MODALITIES) -> Encoding: ...

    def predict_programmes(self, data: FusionData) -> np.ndarray: ...

