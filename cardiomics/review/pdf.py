"""PDF of a signed report, with its signature block and the signed hash in the document metadata.

Why reportlab: it is pure Python from PyPI, so a reviewer's workstation needs no browser or
system library to export; the hash in the metadata (Subject/Keywords) lets anyone compare a
printed report with the audit trail's ``report_signed`` line.
"""

from __future__ import annotations

import base64
import io
import time
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

from cardiomics.errors import AuditError, PolicyError
from cardiomics.tools.report import Report


@lru_cache(maxsize=1)
def _fonts() -> tuple[str, str]:
    """DejaVu Sans (shipped inside matplotlib) so en dashes, ± and ≥ print; Helvetica otherwise."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    try:
        import matplotlib

        ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        pdfmetrics.registerFont(TTFont("DejaVuSans", str(ttf / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(ttf / "DejaVuSans-Bold.ttf")))
        return "DejaVuSans", "DejaVuSans-Bold"
    except Exception:  # noqa: BLE001 - fonts are cosmetic; the core fonts always work
        return "Helvetica", "Helvetica-Bold"


def render_pdf(report: Report) -> bytes:
    """The signed report as PDF; refuses a draft and a report whose signature does not match its content."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    sig = report.signature
    if sig is None:
        raise PolicyError("not-signed", f"report {report.run_id} v{report.version} is a draft; only a signed report prints as PDF",
                          hint="export the draft as HTML or JSON")
    if sig.report_sha256 != report.content_sha256():
        raise AuditError("signature-mismatch", f"report {report.run_id} v{report.version} does not match its signed hash",
                         hint="the stored report was altered after signing; check `cardiomics audit verify`")

    regular, bold = _fonts()
    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["BodyText"], fontName=regular, fontSize=9.5, leading=12.5)
    small = ParagraphStyle("small", parent=body, fontSize=7.5, leading=9.5, textColor=colors.HexColor("#555555"))
    h1 = ParagraphStyle("h1", parent=base["Heading1"], fontName=bold, fontSize=15, leading=18)
    h2 = ParagraphStyle("h2", parent=base["Heading2"], fontName=bold, fontSize=11.5, leading=14, spaceBefore=8)
    warn = ParagraphStyle("warn", parent=body, backColor=colors.HexColor("#fff4e5"), borderPadding=4)

    def p(text: str, style=body) -> Paragraph:
        return Paragraph(escape(text).replace("\n", "<br/>"), style)

    story: list = [p(f"Cardiac MRI report — study {report.study_key}", h1),
                   p(f"{report.status.upper()} · version {report.version} · run {report.run_id} · created {report.created_at}", small),
                   Spacer(1, 4 * mm)]

    grid = TableStyle([("FONT", (0, 0), (-1, -1), regular, 8.5), ("FONT", (0, 0), (-1, 0), bold, 8.5),
                       ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#cccccc")),
                       ("VALIGN", (0, 0), (-1, -1), "TOP")])
    sections: dict[str, list] = {}
    for f in report.findings:
        sections.setdefault(f.section, []).append(f)
    for section, items in sections.items():
        rows = [["Measure", "Value", "Interval", "Reference range", "Flag"]]
        for f in items:
            rows.append([p(f.label), f"{f.value:.1f} {f.unit}",
                         f"{f.interval.lower:.1f}–{f.interval.upper:.1f}" if f.interval else "—",
                         p(f"{f.reference.lower:g}–{f.reference.upper:g} {f.unit} ({f.reference.population})", small) if f.reference else "—",
                         f.flag])
        table = Table(rows, colWidths=[48 * mm, 26 * mm, 24 * mm, 62 * mm, 18 * mm], repeatRows=1)
        table.setStyle(grid)
        story += [p(section, h2), table]

    story.append(p(f"Quality control ({report.qc_verdict})", h2))
    qc = Table([["Stage", "Check", "Result", "Detail"]] +
               [[q.stage, p(q.check, small), "pass" if q.passed else "FAIL", p(q.detail, small)] for q in report.qc],
               colWidths=[28 * mm, 45 * mm, 14 * mm, 91 * mm], repeatRows=1)
    qc.setStyle(grid)
    story.append(qc)

    story.append(p("Summary", h2))
    if report.grounding_flags:
        story.append(p("Grounding check flagged this text: " + "; ".join(report.grounding_flags), warn))
    story.append(p(report.narrative))
    story.append(p("Limitations", h2))
    story += [p(f"• {line}") for line in report.limitations]

    for fig in report.figures:
        reader = ImageReader(io.BytesIO(base64.b64decode(fig.png_base64)))
        w, h = reader.getSize()
        width = min(170 * mm, w * 0.75)
        height = width * h / w
        if height > 190 * mm:
            height, width = 190 * mm, 190 * mm * w / h
        story.append(KeepTogether([p(fig.title, h2), Image(io.BytesIO(base64.b64decode(fig.png_base64)), width=width, height=height)]))

    story.append(p("Provenance", h2))
    for rid, prov in report.provenance.items():
        models = ", ".join(f"{m.id} {m.version} (weights {m.weights_sha256[:16]}…)" for m in prov.models) or "no model"
        story.append(p(f"{rid}: {prov.tool} {prov.tool_version}; {models}", small))
    refs = sorted({f.reference.source for f in report.findings if f.reference})
    if refs:
        story.append(p("Reference ranges: " + "; ".join(refs), small))

    sig_rows = [["Decision", sig.decision], ["Reviewer", sig.reviewer], ["Signed at", sig.at],
                ["Comment", p(sig.comment or "—")], ["Report SHA-256", p(sig.report_sha256, small)]]
    block = Table(sig_rows, colWidths=[32 * mm, 146 * mm])
    block.setStyle(TableStyle([("FONT", (0, 0), (-1, -1), regular, 9), ("FONT", (0, 0), (0, -1), bold, 9),
                               ("BOX", (0, 0), (-1, -1), 0.8, colors.black), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story.append(KeepTogether([p("Signature", h2), block]))

    def footer(canvas, doc) -> None:
        _stamp(canvas, sig.at)
        canvas.saveState()
        canvas.setFont(regular, 6.5)
        canvas.drawString(15 * mm, 9 * mm, f"{report.run_id} v{report.version} · {sig.decision} by {sig.reviewer} at {sig.at}")
        canvas.drawString(15 * mm, 6 * mm, f"report SHA-256 {sig.report_sha256}")
        canvas.drawRightString(195 * mm, 9 * mm, f"page {doc.page}")
        canvas.restoreState()

    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm, bottomMargin=15 * mm,
                            title=f"CMR report {report.study_key} v{report.version}", author=sig.reviewer,
                            subject=f"report_sha256={sig.report_sha256}",
                            keywords=[f"report_sha256={sig.report_sha256}", f"run_id={report.run_id}", f"version={report.version}"],
                            creator="cardiomics review", invariant=1)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buf.getvalue()


def _stamp(canvas, at: str) -> None:
    """Date the PDF at the signature time, so one signed report always gives the same bytes."""
    from datetime import datetime

    try:
        t = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        stamp = canvas._doc._timeStamp  # reportlab's TimeStamp (invariant mode: fixed, UTC)
        lt = time.gmtime(t)
        stamp.t, stamp.lt, stamp.YMDhms = t, lt, tuple(lt)[:6]
    except (AttributeError, ValueError):  # cosmetic: the invariant date stays
        pass
