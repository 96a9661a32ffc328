"""Imaging-omics fusion: a product-of-experts multimodal VAE and baselines behind one interface.

Public API::

    from cardiomics.models.fusion import load_reference, cohort_index
    ref = load_reference()                 # verified weights + regenerated synthetic reference cohort
    enc = ref.model.encode(data, ("imaging",))          # posterior mean and SD
    pred, lo, hi = ref.conformal.predict(data)          # virtual transcriptomics, 90 % intervals
    cohort_index(ref).query(enc.mean[0], k=5)           # nearest reference patients (chromadb)

Models (``fit``, ``encode``, ``predict_programmes``): :class:`MVAE`, :class:`CCABaseline`,
:class:`LateFusionBaseline`, :class:`Oracle`. Train the shipped model with
``python -m cardiomics.models.fusion.train``; compare all with ``python benchmarks/bench_fusion.py``.
"""

from .base import MODALITIES, Encoding, FusionModel
from .baselines import CCABaseline, LateFusionBaseline, Oracle
from .conformal import ConformalPredictor, conformal_quantile
from .features import IMAGING_FEATURES, IMAGING_GROUPS, FusionData, Preprocessor
from .index import CohortIndex, cohort_index
from .mvae import MVAE
from .reference import HELD_OUT, REFERENCE, Reference, load_reference

__all__ = [
    "CCABaseline", "CohortIndex", "ConformalPredictor", "Encoding", "FusionData", "FusionModel", "HELD_OUT",
    "IMAGING_FEATURES", "IMAGING_GROUPS", "LateFusionBaseline", "MODALITIES", "MVAE", "Oracle", "Preprocessor",
    "REFERENCE", "Reference", "cohort_index", "conformal_quantile", "load_reference",
]
