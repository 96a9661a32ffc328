"""`cardiomics batch` on a small generated cohort: killed midway and resumed, a corrupt study reported and skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cardiomics.batch import (
    MANIFEST,
    REPORT_JSON,
    SUMMARY,
    TABLE,
    discover,
    verify_study,
)
from cardiomics.synthetic.cohort_dicom import TRUTH_FILE, write_cohort

N_STUDIES, CORRUPT = 4, 2


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    # small studies keep the test short: 10 frames x 6 slices x 112^2 (still passes image QC)
    return write_cohort(tmp_path_factory.mktemp("cohort") / "studies", N_STUDIES, seed=5, n_frames=10, n_slices=6, size=112,
                        corrupt=[CORRUPT])


@pytest.fixture(scope="module")
def knowledge_dir(tmp_path_factory) -> Path:
    """One knowledge index for the module's batch runs (the planner retrieves literature; building it is the slow part)."""
    return tmp_path_factory.mktemp("knowledge")


def _env(tmp: Path, knowledge: Path) -> dict:
    return {**os.environ, "CARDIOMICS_HOME": str(tmp / "home"), "CARDIOMICS_AUDIT_DIR": str(tmp / "audit"),
            "CARDIOMICS_KNOWLEDGE_DIR": str(knowledge), "COLUMNS": "200"}


def _batch(cohort: Path, out: Path, env: dict, workers: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cardiomics.cli", "batch", str(cohort), "--out", str(out), "--workers", str(workers)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)


def _manifests(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "studies").glob(f"*/{MANIFEST}")}


def test_discover_takes_subfolders_and_nifti_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "_scratch").mkdir()
    (tmp_path / "b.nii.gz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "frame.nii.gz").write_bytes(b"")
    found = {s.name: s.path for s in discover(tmp_path)}
    assert found == {"a": tmp_path / "a", "b": tmp_path / "b.nii.gz", "c": tmp_path / "c" / "frame.nii.gz"}


def test_killed_batch_resumes_the_remainder_and_reports_the_corrupt_study(cohort, knowledge_dir, tmp_path, monkeypatch):
    """Uses the real segmenter. Run 1 is killed (SIGKILL, whole process group) once a study is done;
    run 2 analyses only the rest; the truncated study fails with a typed error and never stops the batch;
    a tampered output is found and redone by run 3."""
    import pandas as pd

    out, env = tmp_path / "out", _env(tmp_path, knowledge_dir)
    cmd = [sys.executable, "-m", "cardiomics.cli", "batch", str(cohort), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while len(_manifests(out)) < 1:
            assert proc.poll() is None, "the batch ended before it could be killed"
            assert time.monotonic() < deadline, "no study done within 300 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    first = _manifests(out)
    assert 1 <= len(first) < N_STUDIES - 1 and not (out / SUMMARY).exists()

    res = _batch(cohort, out, env, workers=2)
    assert res.returncode == 1, res.stderr  # 1: some study failed (the batch itself completed)
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["n_studies"] == N_STUDIES
    assert summary["skipped"] == len(first)
    assert summary["done"] == N_STUDIES - 1 - len(first)
    assert summary["failed"] == 1
    (failure,) = summary["failures"]
    assert failure["study"] == f"study-{CORRUPT:04d}"
    assert failure["error"]["error"] == "StudyError" and failure["error"]["code"] == "unreadable-file"
    assert "truncated" in failure["error"]["message"]
    assert f"study-{CORRUPT:04d}" in res.stdout and "unreadable-file" in res.stdout

    # the studies done before the kill were not redone: same run ids
    after = _manifests(out)
    for name, manifest in first.items():
        assert after[name]["run_id"] == manifest["run_id"]
    assert set(after) == {f"study-{i:04d}" for i in range(N_STUDIES) if i != CORRUPT}

    # one table, one row per analysed study, numbers close to the phantoms' truth
    table = pd.read_parquet(out / TABLE)
    truth = json.loads((cohort / TRUTH_FILE).read_text())
    assert sorted(table["study"]) == sorted(after)
    assert list(table.columns[:3]) == ["study", "run_id", "study_key"]
    for _, row in table.iterrows():
        t = truth[row["study"]]
        assert abs(row["lv_ef_pct"] - t["lv_ef_pct"]) <= 8.0, (row["study"], row["lv_ef_pct"], t["lv_ef_pct"])
        assert abs(row["lv_edv_ml"] - t["lv_edv_ml"]) <= 0.15 * t["lv_edv_ml"]
        assert row["report_status"] == "draft" and row["approvals"] == "not-given"
    assert table["aha01_ed_wall_thickness_mm"].notna().all()

    # each study: a verified audit trail recording that no approval was given, and a draft report
    for name, manifest in after.items():
        d = out / "studies" / name
        assert verify_study(d)
        events = [json.loads(line) for line in (d / manifest["audit"]).read_text().splitlines()]
        assert [e["checkpoint"] for e in events if e["event"] == "approval_not_given"] == ["qc", "signoff"]
        assert not any(e["event"] == "approval" for e in events)
        report = json.loads((d / REPORT_JSON).read_text())
        assert report["status"] == "draft" and report["signature"] is None
        for f in ("report_draft.html", REPORT_JSON, "phenotypes.json", manifest["audit"]):  # the DICOM identifiers never leak
            text = (d / f).read_text()
            assert "SYNTHETIC^" not in text and "SYN-00" not in text, f

    # an output that no longer matches its manifest does not verify: the next run analyses that study again
    from cardiomics.batch import run_batch

    target = out / "studies" / "study-0001" / "phenotypes.json"
    target.write_text(target.read_text().replace('"draft"', '"approved"'))
    assert not verify_study(target.parent)
    for k in ("CARDIOMICS_HOME", "CARDIOMICS_AUDIT_DIR", "CARDIOMICS_KNOWLEDGE_DIR"):
        monkeypatch.setenv(k, env[k])
    third = run_batch(cohort, out, workers=1)
    assert (third.done, third.skipped, third.failed) == (1, N_STUDIES - 2, 1)
    assert verify_study(target.parent) and '"approved"' not in target.read_text()
