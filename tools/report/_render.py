"""render_report: a Report to self-contained HTML (figures inline)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from cardiomics.hashing import sha256_text

from .._registry import ToolContext, tool
from ..contract import ToolOutput
from ._model import Report


@lru_cache(maxsize=1)
def _template():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=select_autoescape(["html", "j2"]))
    return env.get_template("report.html.j2")


def render_html(report: Report) -> str:
    sections: dict[str, list] = {}
    for f in report.findings:
        sections.setdefault(f.section, []).append(f)
    references = sorted({f.reference.source for f in report.findings if f.reference})
    return _template().render(r=report, sections=list(sections.items()), references=references)


class RenderReportInput(BaseModel):
    report: Report = Field(description="The structured report to render.")


class RenderedReport(ToolOutput):
    html: str = Field(description="Self-contained HTML (figures inline).")
    html_sha256: str
    report_sha256: str = Field(description="Hash of the report content without its signature.")


def _example(ctx: ToolContext) -> dict:
    return {"report": Report(run_id="example", study_key="study-" + "0" * 24, created_at="2026-01-01T00:00:00Z",
                             narrative="Example.").model_dump(mode="json")}


@tool(role="explanation", example=_example)
def render_report(inp: RenderReportInput, ctx: ToolContext) -> RenderedReport:
    """Render a structured report (findings, QC, figures, narrative, limitations, provenance, signature) to HTML.

    Use last, on a complete `Report`. Free text is escaped; nothing is recomputed.
    """
    html = render_html(inp.report)
    return RenderedReport(html=html, html_sha256=sha256_text(html), report_sha256=inp.report.content_sha256())
