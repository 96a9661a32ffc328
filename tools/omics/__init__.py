"""Omics encoders: AnnData loading and validation, QC, programme scores, spatial analysis, embedding.

Tools (registered): ``load_omics`` -> ``omics_qc`` -> ``score_programmes``, ``deconvolve_spots``,
``spatial_domains``, ``omics_embedding``. Datasets travel as ``omx-…`` ids; arrays and figures
stay in the artefact store. Gene sets shipped with citations: ``programme_sets()``,
``celltype_markers()``.
"""

from ._genesets import GeneSet, all_sets, celltype_markers, programme_sets
from .embedding import omics_embedding
from .load import load_omics
from .programmes import score_programmes
from .qc import omics_qc
from .spatial import deconvolve_spots, spatial_domains

__all__ = [
    "GeneSet", "all_sets", "celltype_markers", "deconvolve_spots", "load_omics", "omics_embedding",
    "omics_qc", "programme_sets", "score_programmes", "spatial_domains",
]
