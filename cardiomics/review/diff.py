"""Differences between two report versions: the narrative word by word, findings row by row."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from cardiomics.tools.report import Report


@dataclass
class FindingChange:
    key: str
    label: str
    old: str
    new: str
    changed: bool


@dataclass
class ReportDiff:
    a: int
    b: int
    narrative: list[tuple[str, str]] = field(default_factory=list)  # (op, text): op in equal|insert|delete
    unified: str = ""
    findings: list[FindingChange] = field(default_factory=list)
    other: list[tuple[str, str, str]] = field(default_factory=list)  # (what, old, new)

    @property
    def narrative_changed(self) -> bool:
        return any(op != "equal" for op, _ in self.narrative)


def _finding_text(f) -> str:
    iv = f" [{f.interval.lower:.1f}–{f.interval.upper:.1f}]" if f.interval else ""
    return f"{f.value:.1f} {f.unit}{iv} ({f.flag})"


def _words(a: str, b: str) -> list[tuple[str, str]]:
    """Word-level opcodes; whitespace runs are tokens too, so joining the pieces gives the texts back."""
    wa, wb = re.findall(r"\S+|\s+", a), re.findall(r"\S+|\s+", b)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("equal", "".join(wa[i1:i2])))
        else:
            if i2 > i1:
                out.append(("delete", "".join(wa[i1:i2])))
            if j2 > j1:
                out.append(("insert", "".join(wb[j1:j2])))
    return out


def diff(a: Report, b: Report) -> ReportDiff:
    d = ReportDiff(a=a.version, b=b.version, narrative=_words(a.narrative, b.narrative))
    d.unified = "\n".join(difflib.unified_diff(a.narrative.splitlines(), b.narrative.splitlines(),
                                               f"v{a.version}", f"v{b.version}", lineterm=""))
    fa, fb = {f.key: f for f in a.findings}, {f.key: f for f in b.findings}
    for key in list(fa) + [k for k in fb if k not in fa]:
        old = _finding_text(fa[key]) if key in fa else "—"
        new = _finding_text(fb[key]) if key in fb else "—"
        label = (fb.get(key) or fa[key]).label
        d.findings.append(FindingChange(key, label, old, new, old != new))
    for what, old, new in (("status", a.status, b.status), ("QC verdict", a.qc_verdict, b.qc_verdict),
                           ("grounding flags", "; ".join(a.grounding_flags) or "none", "; ".join(b.grounding_flags) or "none"),
                           ("figures", ", ".join(f.id for f in a.figures), ", ".join(f.id for f in b.figures))):
        if old != new:
            d.other.append((what, old, new))
    return d
