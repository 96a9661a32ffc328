"""Imaging-omics fusion tools: project a patient into the shared latent space of a synthetic
reference cohort, find its nearest reference patients, predict transcriptomic programme scores
from imaging with calibrated intervals (virtual transcriptomics), explain the prediction and draw
the latent map.

Tools (role "analysis"): ``fusion_project`` -> ``cohort_neighbours``, ``virtual_transcriptomics``,
``prediction_drivers``, ``latent_figure``. Projections travel as ``fus-…`` ids.
"""

from ._patient import ImagingPhenotypes
from .figure import LatentFigure, latent_figure
from .neighbours import CohortNeighbours, cohort_neighbours
from .project import FusionProjectInput, FusionProjection, fusion_project
from .virtual import PredictionDrivers, VirtualTranscriptomics, prediction_drivers, virtual_transcriptomics

__all__ = [
    "CohortNeighbours", "FusionProjectInput", "FusionProjection", "ImagingPhenotypes", "LatentFigure", "PredictionDrivers",
    "VirtualTranscriptomics", "cohort_neighbours", "fusion_project", "latent_figure", "prediction_drivers",
    "virtual_transcriptomics",
]
