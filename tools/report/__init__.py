"""The structured report: model, figures and HTML rendering."""

from ._figures import ReportFigures, report_figures
from ._model import Figure, Finding, QcItem, Report, Signature
from ._render import RenderedReport, render_html, render_report

__all__ = ["Figure", "Finding", "QcItem", "RenderedReport", "Report", "ReportFigures", "Signature",
           "render_html", "render_report", "report_figures"]
