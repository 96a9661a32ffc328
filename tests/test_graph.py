"""The spine end to end: a phantom DICOM study to a signed, audited report."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from cardiomics.audit import verify_dir
from cardiomics.errors import PolicyError

from conftest import FAKE_STRINGS, assert_no_identifiers


@pytest.fixture
def runs(settings):
    from cardiomics.agents.runs import Runs

    with Runs(settings) as r:
        yield r


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "cardiomics.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_phantom_run_to_signed_report(runs, settings, phantom_study, monkeypatch):
    folder, truth = phantom_study
    st = runs.start(str(folder), height_cm=170, weight_kg=70)
    assert st.status == "awaiting-qc" and st.waiting_for == "qc-approval"

    # accuracy against the phantom's ground truth
    func = runs.graph.get_state(runs._config(st.run_id)).values["results"]["cardiac_function"]
    assert abs(func["lv_ef_pct"]["value"] - truth["lv_ef_pct"]) <= 3.0
    assert abs(func["lv_edv_ml"]["value"] - truth["lv_edv_ml"]) <= 0.05 * truth["lv_edv_ml"]
    assert func["ed_frame"] == truth["ed_frame"]

    # QC approval from a second process, through the CLI
    env = {**os.environ, "CARDIOMICS_HOME": str(settings.home), "CARDIOMICS_AUDIT_DIR": str(settings.audit_dir)}
    res = _cli("approve", st.run_id, "--reviewer", "dr-qc", env=env)
    assert res.returncode == 0, res.stderr
    st = runs.status(st.run_id)
    assert st.status == "awaiting-signoff" and st.report_version == 1

    st = runs.decide(st.run_id, "dr-sign", "approved", "agree")
    assert st.status == "approved" and st.waiting_for is None
    signed = runs.services.reports.load(st.run_id)
    assert signed.status == "approved" and signed.signature.reviewer == "dr-sign"
    assert signed.signature.report_sha256 == signed.content_sha256()
    draft = runs.services.reports.load(st.run_id, 1)
    assert draft.status == "draft" and signed.version == 2

    # audit: complete, in order, once each, and verifies
    (result,) = verify_dir(settings.audit_dir, st.run_id)
    assert result.ok, result.reason
    events = [(r["event"], r.get("tool") or r.get("checkpoint")) for r in runs.services.audit(st.run_id).records()]
    assert events == [
        ("run_start", None), ("tool_call", "load_study"), ("tool_call", "segment"), ("tool_call", "cardiac_function"),
        ("tool_call", "regional_function"), ("approval", "qc"), ("tool_call", "fusion_project"), ("tool_call", "cohort_neighbours"),
        ("tool_call", "virtual_transcriptomics"), ("tool_call", "prediction_drivers"), ("tool_call", "latent_figure"),
        ("tool_call", "report_figures"), ("grounding_check", None), ("report_version", None), ("approval", "signoff"),
        ("report_signed", None), ("run_finished", None),
    ]
    signed_line = [r for r in runs.services.audit(st.run_id).records() if r["event"] == "report_signed"][0]
    assert signed_line["report_sha256"] == signed.signature.report_sha256

    # no identifier anywhere: audit logs, reports, checkpoint database
    for p in settings.audit_dir.glob("*.jsonl"):
        assert_no_identifiers(p.read_text(), p.name)
    for p in settings.reports_dir.rglob("*"):
        if p.is_file():
            assert_no_identifiers(p.read_text(errors="replace"), p.name)
    db = sqlite3.connect(settings.checkpoint_db)
    dump = "\n".join(db.iterdump())
    blobs = b"".join(bytes(v) for t in ("checkpoints", "writes") for row in db.execute(f"select * from {t}") for v in row if isinstance(v, bytes))
    for s in FAKE_STRINGS:
        assert s not in dump and s.encode() not in blobs


def test_decided_run_refuses_second_decision(runs, phantom_study):
    folder, _ = phantom_study
    st = runs.start(str(folder))
    runs.decide(st.run_id, "dr-a", "rejected", "motion artefact")
    assert runs.status(st.run_id).status == "rejected"
    with pytest.raises(PolicyError) as exc:
        runs.decide(st.run_id, "dr-b", "approved")
    assert exc.value.code == "not-waiting"
    assert verify_dir(runs.settings.audit_dir, st.run_id)[0].ok


def test_changes_requested_makes_new_draft(runs, phantom_study):
    folder, _ = phantom_study
    st = runs.start(str(folder))
    runs.decide(st.run_id, "dr-a", "approved", expect="qc-approval")
    with pytest.raises(PolicyError) as exc:  # a reviewer who saw the QC page after it moved on
        runs.decide(st.run_id, "dr-b", "approved", expect="qc-approval")
    assert exc.value.code == "moved-on"
    st = runs.decide(st.run_id, "dr-a", "changes-requested", "mention the RV")
    assert st.status == "awaiting-signoff" and st.report_version == 2
    assert "mention the RV" in runs.services.reports.load(st.run_id).narrative
    st = runs.decide(st.run_id, "dr-a", "approved")
    assert st.report_version == 3 and runs.services.reports.load(st.run_id).status == "approved"


def test_bad_study_fails_with_typed_error(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    st = runs.start(str(tmp_path / "empty"))
    assert st.status == "failed" and st.error["code"]
    assert verify_dir(runs.settings.audit_dir, st.run_id)[0].ok
