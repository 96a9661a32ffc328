"""Reports checked against the audit trail: a changed, deleted or slipped-in report version is found.

The hash chain proves the trail itself is intact; this module proves the report files on disk are
the ones the trail recorded. Each ``report_version`` line names a draft's content hash and each
``report_signed`` line a signed version's hash, reviewer and decision. A file verifies when it
parses as a Report with no extra fields, its content hash equals the trail's, and (signed) its
signature agrees with the trail line. A report file with no line in the trail, a line whose
file is gone, or a signed version whose trail stops before ``run_finished`` (its tail cut off) fails too.
A hash chain alone cannot see lines removed from its end; these cross-checks can, for a signed run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from cardiomics.audit import AuditTrail
from cardiomics.config import Settings

_VERSION = re.compile(r"^v(\d+)\.json$")


@dataclass
class ReportCheck:
    run_id: str
    version: int
    ok: bool
    reason: str = ""


def _check_file(path: Path, line: dict) -> str:
    """Empty when the file matches its trail line, else why not."""
    from pydantic import ValidationError

    from cardiomics.tools.report import Report

    if not path.is_file():
        return "report file is missing (deleted)"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        report = Report.model_validate(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
        return f"report file does not parse ({type(exc).__name__})"
    if raw != json.loads(report.model_dump_json()):
        return "report file holds fields the report model does not (edited)"
    digest = report.content_sha256()
    if digest != line.get("report_sha256"):
        return "content hash differs from the trail (report edited)"
    if line["event"] == "report_signed":
        sig = report.signature
        if sig is None:
            return "signed version has no signature"
        if sig.report_sha256 != digest:
            return "signature does not sign this content"
        if sig.reviewer != line.get("actor") or sig.decision != line.get("decision") or report.status != sig.decision:
            return "signature (reviewer or decision) differs from the trail"
    return ""


def verify_reports(settings: Settings, run_id: str | None = None) -> list[ReportCheck]:
    """Check every report version of one run (or of every run) against its audit trail."""
    runs = [run_id] if run_id else sorted({p.stem for p in settings.audit_dir.glob("run-*.jsonl")}
                                          | {p.name for p in settings.reports_dir.glob("run-*") if p.is_dir()})
    checks: list[ReportCheck] = []
    for rid in runs:
        trail_path = settings.audit_dir / f"{rid}.jsonl"
        lines = AuditTrail(settings.audit_dir, rid).records() if trail_path.exists() else []
        recorded = {int(r["version"]): r for r in lines if r.get("event") in ("report_version", "report_signed")}
        folder = settings.reports_dir / rid
        on_disk = {int(m.group(1)) for p in folder.glob("v*.json") if (m := _VERSION.match(p.name))} if folder.is_dir() else set()
        for version in sorted(recorded.keys() | on_disk):
            if version not in recorded:
                checks.append(ReportCheck(rid, version, False, "report file has no line in the audit trail (inserted)"))
                continue
            reason = _check_file(folder / f"v{version}.json", recorded[version])
            if not reason and recorded[version]["event"] == "report_signed" and not any(
                    r.get("event") == "run_finished" and r["seq"] > recorded[version]["seq"] for r in lines):
                reason = "the trail ends before the run finished after signing (lines removed from its end)"
            checks.append(ReportCheck(rid, version, not reason, reason))
    return checks


def print_checks(console, settings: Settings, run_id: str | None = None) -> int:
    """Print one line per report version (for ``cardiomics audit verify``); returns the number that fail."""
    bad = 0
    for c in verify_reports(settings, run_id):
        if c.ok:
            console.print(f"[green]ok[/]   {c.run_id} report v{c.version}: matches the trail", highlight=False)
        else:
            bad += 1
            console.print(f"[bold red]FAIL[/] {c.run_id} report v{c.version}: {c.reason}", highlight=False)
    return bad
