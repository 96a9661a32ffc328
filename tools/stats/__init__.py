"""Statistics tools: radiogenomic association scans with negative controls, prediction metrics, plots.

- ``association_scan``: phenotype ~ programme + covariates, permutation p-values, BH FDR, controls.
- ``prediction_metrics``: AUROC (DeLong / bootstrap CI), calibration, Brier, net benefit, subgroups.
- ``association_plots``: volcano and forest plots of a stored scan.
"""

from ._table import store_table
from .association import association_scan
from .plots import association_plots
from .prediction import prediction_metrics

__all__ = ["association_plots", "association_scan", "prediction_metrics", "store_table"]
