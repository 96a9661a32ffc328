"""Tamper evidence (ORCHESTRATION ONLY: the stand-in segmenter of tests/orchestration_fakes.py is used,
since the subject is the audit chain and the signed report, not the segmentation).

Any edit, deletion, insertion or reordering of audit lines, and any change to a report version on
disk, is detected by the hash chain (`cardiomics audit verify`) or by `audit_reports.verify_reports`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from cardiomics.audit import line_hash, verify_file
from cardiomics.audit_reports import verify_reports
from cardiomics.config import Settings

import orchestration_fakes


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory, phantom_study):
    from cardiomics.agents.runs import Runs

    base = tmp_path_factory.mktemp("tamper")
    settings = Settings(home=base / "home", audit_dir=base / "audit").ensure()
    with pytest.MonkeyPatch.context() as mp, Runs(settings) as runs:
        orchestration_fakes.install(mp)
        st = runs.start(str(phantom_study[0]))
        runs.decide(st.run_id, "dr-qc", "approved")
        st = runs.decide(st.run_id, "dr-sign", "approved", "agree")
    assert st.status == "approved"
    return settings, st.run_id


@pytest.fixture
def copy(signed_run, tmp_path):
    settings, run_id = signed_run
    new = Settings(home=tmp_path / "home", audit_dir=tmp_path / "audit")
    shutil.copytree(settings.home, new.home)
    shutil.copytree(settings.audit_dir, new.audit_dir)
    for p in new.reports_dir.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return new, run_id


def _lines(settings, run_id):
    return (settings.audit_dir / f"{run_id}.jsonl").read_text().splitlines(keepends=True)


def _write(settings, run_id, lines):
    (settings.audit_dir / f"{run_id}.jsonl").write_text("".join(lines))


def test_untouched_run_verifies(copy):
    settings, run_id = copy
    assert verify_file(settings.audit_dir / f"{run_id}.jsonl").ok
    checks = verify_reports(settings, run_id)
    assert [c.version for c in checks] == [1, 2] and all(c.ok for c in checks)


def _edit_value(lines):
    rec = json.loads(lines[2])
    rec["duration_s"] = 0.001
    return lines[:2] + [json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"] + lines[3:], 3


def _edit_and_rehash(lines):
    """An editor who recomputes the line's own hash still breaks the next line's prev_hash."""
    rec = json.loads(lines[3])
    rec["actor"] = "someone-else"
    rec["hash"] = line_hash(rec)
    return lines[:3] + [json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"] + lines[4:], 5


MUTATIONS = {
    "edit-field": _edit_value,
    "edit-and-rehash": _edit_and_rehash,
    "delete-line": lambda ls: (ls[:4] + ls[5:], 5),
    "delete-last-line": lambda ls: (ls[:-1], None),
    "insert-copy": lambda ls: (ls[:4] + [ls[3]] + ls[4:], 5),
    "swap-lines": lambda ls: (ls[:3] + [ls[4], ls[3]] + ls[5:], 4),
    "truncate-to-prefix-and-append-forged": lambda ls: (ls[:2] + [ls[-1]], 3),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_audit_mutations_detected(copy, name):
    settings, run_id = copy
    lines = _lines(settings, run_id)
    mutated, first_bad = MUTATIONS[name](lines)
    _write(settings, run_id, mutated)
    res = verify_file(settings.audit_dir / f"{run_id}.jsonl")
    if name == "delete-last-line":
        # removing the tail leaves a valid chain; the signed report's cross-check catches it
        assert res.ok
        assert any(not c.ok and "lines removed from its end" in c.reason for c in verify_reports(settings, run_id))
        return
    assert not res.ok and res.first_bad_line == first_bad, (res.first_bad_line, res.reason)
    env = {**os.environ, "CARDIOMICS_HOME": str(settings.home), "CARDIOMICS_AUDIT_DIR": str(settings.audit_dir)}
    cli = subprocess.run([sys.executable, "-m", "cardiomics.cli", "audit", "verify", run_id],
                         capture_output=True, text=True, env=env, timeout=60)
    assert cli.returncode == 1 and f"line {first_bad}" in cli.stdout


def _report_path(settings, run_id, v):
    return settings.reports_dir / run_id / f"v{v}.json"


def _mutate_report(settings, run_id, v, fn):
    p = _report_path(settings, run_id, v)
    body = json.loads(p.read_text())
    fn(body)
    p.write_text(json.dumps(body, indent=2))


REPORT_MUTATIONS = {
    "signed-number": (2, lambda b: b.__setitem__("narrative", b["narrative"] + " LVEF 70 %.")),
    "signed-reviewer": (2, lambda b: b["signature"].__setitem__("reviewer", "dr-forger")),
    "signed-decision": (2, lambda b: (b["signature"].__setitem__("decision", "rejected"), b.__setitem__("status", "rejected"))),
    "signed-extra-field": (2, lambda b: b.__setitem__("hidden_note", "unsigned text")),
    "draft-edit": (1, lambda b: b.__setitem__("narrative", "rewritten")),
}


@pytest.mark.parametrize("name", sorted(REPORT_MUTATIONS))
def test_report_mutations_detected(copy, name):
    settings, run_id = copy
    version, fn = REPORT_MUTATIONS[name]
    _mutate_report(settings, run_id, version, fn)
    bad = [c for c in verify_reports(settings, run_id) if not c.ok]
    assert [c.version for c in bad] == [version], bad
    assert verify_file(settings.audit_dir / f"{run_id}.jsonl").ok  # the trail alone cannot see it: hence this check


def test_report_deleted_or_inserted(copy):
    settings, run_id = copy
    _report_path(settings, run_id, 2).unlink()
    shutil.copy(_report_path(settings, run_id, 1), _report_path(settings, run_id, 3))
    reasons = {c.version: c.reason for c in verify_reports(settings, run_id) if not c.ok}
    assert set(reasons) == {2, 3} and "missing" in reasons[2] and "no line" in reasons[3]
