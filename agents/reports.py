"""Report versions on disk: every version kept, a signed version never rewritten."""

from __future__ import annotations

import json
from pathlib import Path

from cardiomics.atomicfile import write_atomic
from cardiomics.errors import NotFoundError, PolicyError
from cardiomics.tools.report import Report, render_html


class ReportStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _dir(self, run_id: str) -> Path:
        return self.root / run_id

    def save(self, report: Report) -> Path:
        """Write ``v<N>.json`` and ``v<N>.html``; an existing version is never overwritten.

        Both are fsynced before they are named (a signature in the audit trail must not point at a
        version lost in a crash). The HTML goes first; the JSON, which makes the version exist, is
        linked into place, so of two writers of one version only one succeeds.
        """
        d = self._dir(report.run_id)
        html, path = d / f"v{report.version}.html", d / f"v{report.version}.json"
        lost_race = False
        if not path.exists():
            write_atomic(html, render_html(report), mode=0o444)  # read-only once written
            try:
                return write_atomic(path, report.model_dump_json(indent=2), mode=0o444, replace=False)
            except FileExistsError:
                lost_race = True  # another writer of this version came first
        existing = Report.model_validate_json(path.read_text())
        if lost_race:
            write_atomic(html, render_html(existing), mode=0o444)  # ours may have replaced the winner's page
        if existing.content_sha256() == report.content_sha256() and existing.signature == report.signature:
            return path  # the same version written again by a resumed node
        raise PolicyError("version-exists", f"report {report.run_id} v{report.version} already exists and is immutable",
                          hint="save changes as a new version")

    def versions(self, run_id: str) -> list[int]:
        return sorted(int(p.stem[1:]) for p in self._dir(run_id).glob("v*.json"))

    def load(self, run_id: str, version: int | None = None) -> Report:
        versions = self.versions(run_id)
        if not versions:
            raise NotFoundError("no-report", f"run {run_id} has no report yet",
                                hint="a report is drafted after QC approval; see `cardiomics runs`")
        v = versions[-1] if version is None else version
        path = self._dir(run_id) / f"v{v}.json"
        if not path.exists():
            raise NotFoundError("no-version", f"run {run_id} has no report version {v}", hint=f"versions: {versions}")
        return Report.model_validate(json.loads(path.read_text()))

    def path(self, run_id: str, version: int, suffix: str) -> Path:
        return self._dir(run_id) / f"v{version}{suffix}"
