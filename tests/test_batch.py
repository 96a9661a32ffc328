"""`cardiomics batch` on a small generated cohort: killed midway and resumed, a corrupt study reported and skipped;
per-study covariates index the volumes, a changed covariate re-runs its study, bad covariate files are refused."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cardiomics.batch import (
    MANIFEST,
    REPORT_JSON,
    SUMMARY,
    TABLE,
    BatchSummary,
    covariates_sha256,
    discover,
    run_batch,
    study_status,
    verify_study,
)
from cardiomics.errors import InputError
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


def _batch(cohort: Path, out: Path, env: dict, workers: int = 1, *extra: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cardiomics.cli", "batch", str(cohort), "--out", str(out), "--workers", str(workers),
                           *extra], capture_output=True, text=True, env=env, timeout=600, check=False, cwd=cwd)


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
    (tmp_path / "d").mkdir()  # a NIfTI beside a DICOM file: the folder, which the loader refuses as ambiguous
    (tmp_path / "d" / "mask.nii.gz").write_bytes(b"")
    (tmp_path / "d" / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (tmp_path / "e").mkdir()  # a NIfTI with its text sidecars is still that NIfTI
    (tmp_path / "e" / "scan.nii.gz").write_bytes(b"")
    (tmp_path / "e" / "Info.cfg").write_text("ED: 1\nES: 12\n")
    found = {s.name: s.path for s in discover(tmp_path)}
    assert found == {"a": tmp_path / "a", "b": tmp_path / "b.nii.gz", "c": tmp_path / "c" / "frame.nii.gz",
                     "d": tmp_path / "d", "e": tmp_path / "e" / "scan.nii.gz"}


def test_discover_refuses_two_entries_of_one_name_and_skips_the_output_folder(tmp_path):
    (tmp_path / "Scan.NII.GZ").write_bytes(b"")  # the extension in capitals is still an extension
    (tmp_path / "out").mkdir()
    found = {s.name: s.path for s in discover(tmp_path, exclude=tmp_path / "out")}
    assert found == {"Scan": tmp_path / "Scan.NII.GZ"}
    assert "out" in {s.name for s in discover(tmp_path)}  # only the output folder given is left out

    for first, second in (("a", "a.nii.gz"), ("b.nii", "b.nii.gz")):
        folder = tmp_path / f"case-{first}"
        folder.mkdir()
        for entry in (first, second):
            (folder / entry).mkdir() if "." not in entry else (folder / entry).write_bytes(b"")
        with pytest.raises(InputError) as exc:
            discover(folder)
        assert exc.value.code == "duplicate-study-names"
        assert first in exc.value.message and second in exc.value.message and "rename" in exc.value.hint


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
    assert 1 <= len(first) < N_STUDIES - 1
    assert json.loads((out / SUMMARY).read_text())["status"] == "running"  # what a killed batch leaves: not a finished summary

    res = _batch(cohort, out, env, workers=2)
    assert res.returncode == 1, res.stderr  # 1: some study failed (the batch itself completed)
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["n_studies"] == N_STUDIES and summary["status"] == "finished"
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
    # the LV's maximal wall thickness, at least every basal/mid segment's mean, and where it lies
    basal_mid_means = table[[f"aha{k:02d}_ed_wall_thickness_mm" for k in range(1, 13)]].max(axis=1)
    assert (table["max_ed_wall_thickness_mm"] >= basal_mid_means).all()
    assert table["max_ed_wall_thickness_segment"].between(1, 12).all()
    assert table["rv_ed_frame"].notna().all() and table["rv_es_frame"].notna().all()  # each ventricle's own frames

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
    target = out / "studies" / "study-0001" / "phenotypes.json"
    target.write_text(target.read_text().replace('"draft"', '"approved"'))
    assert not verify_study(target.parent)
    for k in ("CARDIOMICS_HOME", "CARDIOMICS_AUDIT_DIR", "CARDIOMICS_KNOWLEDGE_DIR"):
        monkeypatch.setenv(k, env[k])
    third = run_batch(cohort, out, workers=1)
    assert (third.done, third.skipped, third.failed) == (1, N_STUDIES - 2, 1)
    # the rate of studies done leaves the failed one out
    assert third.done_per_min == pytest.approx(third.studies_per_min / 2, rel=0.02)
    assert verify_study(target.parent) and '"approved"' not in target.read_text()


# ---------------------------------------------------------------------------------------------
# covariates: height, weight and sex per study

HEIGHT, WEIGHT = 180.0, 81.0  # study-0000 only; study-0001 has no row


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("pair") / "studies", 2, seed=11, n_frames=10, n_slices=6, size=112)


@pytest.fixture(scope="module")
def indexed(pair, knowledge_dir, tmp_path_factory) -> tuple[Path, dict]:
    """One CLI batch of the pair with a covariates file naming study-0000 only (sex in another case than the tool's)."""
    tmp = tmp_path_factory.mktemp("indexed")
    csv = tmp / "covariates.csv"
    csv.write_text(f"study,height_cm,weight_kg,sex\nstudy-0000,{HEIGHT},{WEIGHT}, Male \n")
    out, env = tmp / "out", _env(tmp, knowledge_dir)
    res = _batch(pair, out, env, 1, "--covariates", str(csv))
    assert res.returncode == 0, res.stdout + res.stderr
    return out, env


def _bsa(height_cm: float, weight_kg: float) -> float:
    return math.sqrt(height_cm * weight_kg / 3600.0)  # Mosteller, computed here independently of the tool


def test_covariates_index_the_row_of_their_study_only(indexed):
    import pandas as pd

    out, _ = indexed
    summary = json.loads((out / SUMMARY).read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 0, 0)
    assert summary["covariates"].endswith("covariates.csv")
    rows = pd.read_parquet(out / TABLE).set_index("study")

    with_cov = rows.loc["study-0000"]
    assert (with_cov["height_cm"], with_cov["weight_kg"], with_cov["sex"]) == (HEIGHT, WEIGHT, "male")
    bsa = _bsa(HEIGHT, WEIGHT)
    assert with_cov["bsa_m2"] == pytest.approx(bsa, abs=1e-3)
    assert with_cov["lv_edv_ml"] > 20
    # both values are rounded to 0.1: the index may differ from EDV / BSA by under 0.05 / BSA + 0.05
    assert with_cov["lv_edv_index_ml_m2"] == pytest.approx(with_cov["lv_edv_ml"] / bsa, abs=0.1)
    assert with_cov["lv_mass_index_g_m2"] == pytest.approx(with_cov["lv_mass_g"] / bsa, abs=0.1)
    assert with_cov["lv_edv_index_ml_m2_flag"] in {"low", "normal", "high"}

    without = rows.loc["study-0001"]
    assert without["lv_edv_ml"] > 20
    for col in ("lv_edv_index_ml_m2", "lv_mass_index_g_m2", "bsa_m2", "height_cm", "weight_kg", "sex"):
        assert pd.isna(without[col]), col

    # the manifest records what each study was analysed with; the sex reached the tool's reference ranges
    manifests = _manifests(out)
    assert manifests["study-0000"]["covariates_sha256"] == covariates_sha256({"height_cm": HEIGHT, "weight_kg": WEIGHT, "sex": "male"})
    assert manifests["study-0001"]["covariates_sha256"] == covariates_sha256({})
    report = json.loads((out / "studies" / "study-0000" / REPORT_JSON).read_text())
    assert "adult men" in json.dumps(report)
    unknown_sex = json.loads((out / "studies" / "study-0001" / REPORT_JSON).read_text())
    assert "adult men" not in json.dumps(unknown_sex) and "sex not given" in json.dumps(unknown_sex)


def _copy_of(indexed: tuple[Path, dict], tmp_path: Path, monkeypatch) -> tuple[Path, dict[str, dict]]:
    """A copy of the indexed batch's outputs to run again, in its environment, and its manifests."""
    src, env = indexed
    out = tmp_path / "out"
    shutil.copytree(src, out)
    for k in ("CARDIOMICS_HOME", "CARDIOMICS_AUDIT_DIR", "CARDIOMICS_KNOWLEDGE_DIR"):
        monkeypatch.setenv(k, env[k])
    return out, _manifests(out)


def test_changed_covariates_rerun_only_that_study(indexed, tmp_path, monkeypatch):
    import pandas as pd

    src, env = indexed
    out, before = _copy_of(indexed, tmp_path, monkeypatch)
    # a manifest written before covariates were recorded counts as "analysed with none"
    legacy = out / "studies" / "study-0001" / MANIFEST
    legacy.write_text(json.dumps({k: v for k, v in before["study-0001"].items() if k != "covariates_sha256"}))

    csv = tmp_path / "covariates.csv"
    csv.write_text(f"study,weight_kg,height_cm,sex\nstudy-0000,90,{HEIGHT},male\nstudy-0001,,,\n")
    studies_dir = json.loads((src / SUMMARY).read_text())["studies_dir"]
    second = run_batch(studies_dir, out, workers=1, covariates=csv)
    assert (second.done, second.skipped, second.failed) == (1, 1, 0)
    after = _manifests(out)
    assert after["study-0000"]["run_id"] != before["study-0000"]["run_id"]
    assert after["study-0001"]["run_id"] == before["study-0001"]["run_id"]
    row = pd.read_parquet(out / TABLE).set_index("study").loc["study-0000"]
    assert row["weight_kg"] == 90.0 and row["run_id"] == after["study-0000"]["run_id"]
    assert row["lv_edv_index_ml_m2"] == pytest.approx(row["lv_edv_ml"] / _bsa(HEIGHT, 90.0), abs=0.1)

    # unchanged covariates: nothing to do
    third = run_batch(studies_dir, out, workers=1, covariates=csv)
    assert (third.done, third.skipped, third.failed) == (0, 2, 0)
    # a rerun without the CSV resumes: the indexed study is kept, not re-analysed without covariates
    fourth = run_batch(studies_dir, out, workers=1)
    assert (fourth.done, fourth.skipped, fourth.failed) == (0, 2, 0)
    assert pd.read_parquet(out / TABLE).set_index("study").loc["study-0000", "weight_kg"] == 90.0


def test_a_rerun_analyses_what_changed_and_refuses_what_would_mix(indexed, pair, tmp_path, monkeypatch):
    """A rerun is keyed to the study's input and the cardiomics version, not only to its outputs; the table holds the
    cohort's studies only; outputs keyed with another salt and a second batch on one folder are refused; Ctrl-C
    leaves an ``interrupted`` summary and the table of the studies done."""
    import fcntl

    import pandas as pd

    from cardiomics import batch

    src, env = indexed
    out, before = _copy_of(indexed, tmp_path, monkeypatch)
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copytree(pair / "study-0000", studies / "study-0000")  # a copy that keeps modification times: the same input

    # the table is the cohort's: study-0001 is not in this studies folder, so it has no row (its files stay)
    only = run_batch(studies, out, workers=1)
    assert (only.done, only.skipped, only.failed, only.analysed_again) == (0, 1, 0, {})
    assert list(pd.read_parquet(out / TABLE)["study"]) == ["study-0000"]
    assert (out / "studies" / "study-0001" / MANIFEST).exists()

    shutil.copytree(pair / "study-0001", studies / "study-0001")
    # another cardiomics version made it: not current
    manifest = out / "studies" / "study-0001" / MANIFEST
    manifest.write_text(json.dumps({**before["study-0001"], "cardiomics_version": "0.0.9"}))
    assert study_status(manifest.parent, source=studies / "study-0001") == "analysed by cardiomics 0.0.9"
    manifest.write_text(json.dumps(before["study-0001"]))
    assert study_status(manifest.parent, source=studies / "study-0001") is None
    # a file of the study re-exported since: its input no longer matches
    dicom = sorted(p for p in (studies / "study-0001").rglob("*") if p.is_file())[0]
    os.utime(dicom, ns=(time.time_ns(), time.time_ns()))
    assert study_status(manifest.parent, source=studies / "study-0001") == "input changed since it was analysed"

    # outputs keyed with another deployment's salt are not mixed with this one's
    monkeypatch.setenv("CARDIOMICS_HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(InputError) as exc:
        run_batch(studies, out, workers=1)
    assert exc.value.code == "other-salt" and "CARDIOMICS_HOME" in exc.value.hint
    monkeypatch.setenv("CARDIOMICS_HOME", env["CARDIOMICS_HOME"])

    # one batch at a time on a folder
    with open(out / batch.LOCK, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on elsewhere")
        held.flush()
        with pytest.raises(InputError) as exc:
            run_batch(studies, out, workers=1)
        assert exc.value.code == "batch-already-running" and "pid 4242" in exc.value.message
    assert json.loads((out / SUMMARY).read_text())["status"] == "finished"  # refusals change nothing

    # Ctrl-C once the cluster is up: the summary says so, and the table holds the studies done
    def interrupted(todo, *args, on_ready, **kwargs):
        assert [s.name for s in todo] == ["study-0001"]
        on_ready()
        assert json.loads((out / SUMMARY).read_text())["status"] == "running"
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(batch, "_analyse", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_batch(studies, out, workers=1)
    summary = json.loads((out / SUMMARY).read_text())
    assert (summary["status"], summary["skipped"], summary["done"]) == ("interrupted", 1, 0)
    assert list(pd.read_parquet(out / TABLE)["study"]) == ["study-0000"]

    rerun = run_batch(studies, out, workers=1, keep_artifacts=True)
    assert (rerun.done, rerun.skipped, rerun.failed) == (1, 1, 0), rerun.model_dump()
    # kept artefacts stay, the study-key salt does not: it would sit beside the keys it makes
    assert any((out / "studies" / "study-0001" / "artifacts").iterdir()) and not list(out.rglob(".salt"))
    assert rerun.analysed_again == {"input changed since it was analysed": 1}
    after = _manifests(out)
    assert after["study-0001"]["run_id"] != before["study-0001"]["run_id"]
    assert after["study-0000"]["run_id"] == before["study-0000"]["run_id"]
    assert sorted(pd.read_parquet(out / TABLE)["study"]) == ["study-0000", "study-0001"]


def test_ctrl_c_stops_the_cli_with_130_and_an_interrupted_summary(pair, knowledge_dir, tmp_path):
    out, env = tmp_path / "out", _env(tmp_path, knowledge_dir)
    # SIGINT as at a terminal: a test run started in the background (`cmd &` without job control) ignores SIGINT,
    # its children inherit that, and Python then raises no KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "cardiomics.cli", "batch", str(pair), "--out", str(out), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    try:
        while not (out / SUMMARY).exists():  # written once the cluster is up, before any study is submitted
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the batch never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # to the command alone, as a terminal's Ctrl-C reaches its foreground process
        _, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "run the same command again" in stderr
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["status"] == "interrupted" and summary["done"] + summary["failed"] < 2


@pytest.mark.parametrize(("text", "code", "words"), [
    ("study,sex\nstudy-a,male\nstudy-c,female\n", "covariates-unknown-study", ["'study-c'"]),
    ("study,sex\nstudy-a,male\nstudy-b,M\n", "covariates-bad-sex", ["row 3", "'study-b'", "sex", "'M'"]),
    ("study,height_cm\nstudy-a,1.72m\n", "covariates-not-a-number", ["row 2", "'study-a'", "height_cm", "'1.72m'"]),
    ("study,height_cm\nstudy-a,1.72\n", "covariates-out-of-range", ["row 2", "height_cm", "above 50", "below 250"]),
    ("study,weight_kg\nstudy-a,70\nstudy-b,\nstudy-a,71\n", "covariates-duplicate-study", ["row 4", "'study-a'", "row 2"]),
    ("study,age\nstudy-a,50\n", "covariates-unknown-column", ["'age'"]),
    ("name,sex\nstudy-a,male\n", "covariates-no-study-column", ["'study'"]),
])
def test_bad_covariates_are_refused_before_any_work(tmp_path, monkeypatch, text, code, words):
    from cardiomics import batch

    studies = tmp_path / "studies"
    for name in ("study-a", "study-b"):
        (studies / name).mkdir(parents=True)
    csv = tmp_path / "cov.csv"
    csv.write_text(text)
    monkeypatch.setattr(batch, "_client", lambda *a, **k: pytest.fail("a cluster was started"))
    out = tmp_path / "out"
    with pytest.raises(InputError) as exc:
        run_batch(studies, out, covariates=csv)
    assert exc.value.code == code
    assert str(csv) in exc.value.message and exc.value.hint
    for w in words:
        assert w in exc.value.message, (w, exc.value.message)
    assert not out.exists()


def test_cli_refuses_an_unknown_study_name(tmp_path):
    (tmp_path / "studies" / "study-a").mkdir(parents=True)
    csv = tmp_path / "cov.csv"
    csv.write_text("study,sex\nstudy-A,female\n")
    res = _batch(tmp_path / "studies", tmp_path / "out", {**_env(tmp_path, tmp_path / "knowledge"), "COLUMNS": "400"}, 1, "--covariates", str(csv))
    assert res.returncode == 2
    assert "InputError[covariates-unknown-study]" in res.stderr and "'study-A'" in res.stderr
    assert not (tmp_path / "out").exists()


def test_studies_with_half_the_body_size_are_named(tmp_path):
    from cardiomics.batch import load_covariates, not_indexable

    csv = tmp_path / "cov.csv"
    csv.write_text("study,height_cm,weight_kg,sex\nstudy-a,172,,male\nstudy-b,,80,\nstudy-c,170,70,\nstudy-d,,,female\n")
    given = load_covariates(csv, ["study-a", "study-b", "study-c", "study-d"])
    assert given["study-d"] == {"sex": "female"} and given["study-c"] == {"height_cm": 170.0, "weight_kg": 70.0}
    assert not_indexable(given) == ["study-a", "study-b"]


# ---------------------------------------------------------------------------------------------
# an existing Dask scheduler (--address)


@pytest.mark.parametrize(("address", "code"), [
    ("bogus", "bad-address"),
    ("tcp://127.0.0.1", "bad-address"),  # no port
    ("http://127.0.0.1:8786", "bad-address"),
    ("ray://head:10001", "ray-not-installed"),
])
def test_bad_scheduler_addresses_are_refused_before_any_work(tmp_path, monkeypatch, address, code):
    from cardiomics import batch

    (tmp_path / "studies" / "study-a").mkdir(parents=True)
    monkeypatch.setattr(batch, "_client", lambda *a, **k: pytest.fail("a connection was attempted"))
    with pytest.raises(InputError) as exc:
        run_batch(tmp_path / "studies", tmp_path / "out", address=address)
    assert exc.value.code == code and exc.value.hint
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler_fails_fast_and_builds_nothing(tmp_path, monkeypatch):
    from cardiomics import batch
    from cardiomics.review.server import free_port

    (tmp_path / "studies" / "study-a").mkdir(parents=True)
    knowledge = tmp_path / "knowledge"
    for k, v in _env(tmp_path, knowledge).items():
        if k.startswith("CARDIOMICS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setattr(batch, "SCHEDULER_TIMEOUT_S", 2.0)
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(InputError) as exc:
        run_batch(tmp_path / "studies", tmp_path / "out", address=address)
    assert exc.value.code == "scheduler-unreachable" and address in exc.value.message and "2 s" in exc.value.message
    assert time.monotonic() - t0 < 30
    # the knowledge index is built only once a cluster is there to use it
    assert not knowledge.exists() or not any(knowledge.iterdir())


def test_worker_checks_name_what_is_wrong(tmp_path):
    from cardiomics import __version__
    from cardiomics.batch import check_workers

    ok = {"version": __version__, "sees_studies": True, "sees_out": True}
    studies, out = tmp_path / "studies", tmp_path / "out"
    check_workers({"tcp://a:1": ok, "tcp://b:1": ok}, studies, out)
    cases = [
        ({"version": "0.0.1"}, "worker-version-mismatch", ["1 of 2 workers", "tcp://b:1", "0.0.1", __version__]),
        ({"sees_studies": False}, "workers-cannot-see-files", ["1 of 2 workers", "tcp://b:1", "the studies in", str(studies)]),
        ({"sees_out": False}, "workers-cannot-see-files", ["output folder", str(out)]),
    ]
    for change, code, words in cases:
        with pytest.raises(InputError) as exc:
            check_workers({"tcp://a:1": ok, "tcp://b:1": {**ok, **change}}, studies, out)
        assert exc.value.code == code and exc.value.hint
        for w in words:
            assert w in exc.value.message, (w, exc.value.message)


def _start(args: list[str], env: dict, log: Path, *, flags: tuple[str, ...] = (), cwd: Path | None = None,
           prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, *flags, "-m", *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True, cwd=cwd)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@contextlib.contextmanager
def _scheduler(tmp_path: Path, env: dict) -> Iterator[str]:
    """A `dask scheduler` process started apart from cardiomics; yields its address."""
    sched_file = tmp_path / "scheduler.json"
    scheduler = _start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(sched_file)], env, tmp_path / "scheduler.log")
    try:
        deadline = time.monotonic() + 120
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert scheduler.poll() is None, (tmp_path / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start within 120 s"
            time.sleep(0.2)
        yield json.loads(sched_file.read_text())["address"]
    finally:
        _stop(scheduler)


def _wait_for_workers(address: str, n: int, worker: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Until the scheduler counts exactly ``n`` workers (a stopped worker leaves, a started one joins)."""
    from dask.distributed import Client

    with Client(address, timeout=30) as client:
        deadline = time.monotonic() + 120
        while len(client.scheduler_info(n_workers=-1)["workers"]) != n:
            assert worker is None or worker.poll() is None, log.read_text()[-3000:] if log else "the worker exited"
            assert time.monotonic() < deadline, f"the scheduler did not reach {n} workers within 120 s"
            time.sleep(0.2)


def _cardiomics_env(tmp_path: Path, knowledge_dir: Path, monkeypatch) -> dict:
    env = _env(tmp_path, knowledge_dir)
    for k, v in env.items():
        if k.startswith("CARDIOMICS_"):
            monkeypatch.setenv(k, v)
    return env


def _worker(address: str, env: dict, log: Path, **how) -> subprocess.Popen:
    """One single-task `dask worker` process (``how``: flags, cwd, prefix) for the scheduler at ``address``."""
    return _start(["distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"], env, log, **how)


def _without_cardiomics(env: dict, tmp_path: Path) -> tuple[dict, dict]:
    """A worker environment whose Python has Dask but no cardiomics, and how to start it."""
    # -S skips the site-packages .pth files, and with them the line that makes cardiomics importable;
    # the folders themselves stay on the path, so Dask and everything else import as usual
    site_dirs = os.pathsep.join(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    return {**env, "PYTHONPATH": site_dirs}, {"flags": ("-S",), "cwd": tmp_path}


def _other_version(env: dict, tmp_path: Path) -> tuple[dict, dict]:
    """A worker environment that imports another cardiomics installation: a copy of the package whose version says 0.0.9."""
    import cardiomics

    other = tmp_path / "other-install"
    if not other.exists():
        shutil.copytree(Path(cardiomics.__file__).parent, other / "cardiomics", ignore=shutil.ignore_patterns("__pycache__"))
        init = other / "cardiomics" / "__init__.py"
        line = f'__version__ = "{cardiomics.__version__}"'
        assert line in init.read_text()
        init.write_text(init.read_text().replace(line, '__version__ = "0.0.9"'))
    return {**env, "PYTHONPATH": str(other)}, {"cwd": tmp_path}


def _hide(folder: Path) -> tuple[str, ...]:
    """A command prefix that runs a process in its own mount namespace with an empty file system over ``folder``:
    the process sees an empty folder at the same path, as a worker on a machine without the share would."""
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs hidden "$1" && shift && exec "$@"', "sh", str(folder))


@pytest.fixture(scope="module")
def mount_namespaces(tmp_path_factory) -> None:
    """A worker on another file system needs a mount namespace of its own (root or CAP_SYS_ADMIN)."""
    folder = tmp_path_factory.mktemp("hidden")
    (folder / "seen").touch()
    try:
        res = subprocess.run([*_hide(folder), "ls", "-A", str(folder)], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        pytest.skip(f"cannot start a process in its own mount namespace: {exc}")
    if res.returncode != 0 or res.stdout.strip():
        pytest.skip(f"cannot start a process in its own mount namespace (needs root or CAP_SYS_ADMIN): {res.stderr.strip()[:200]}")
    assert (folder / "seen").exists()  # hidden from that process only


def _other_file_system(folder: Path) -> Callable[[dict, Path], tuple[dict, dict]]:
    """A worker environment like this one, on a machine where ``folder`` is an empty folder."""
    def how(env: dict, tmp_path: Path) -> tuple[dict, dict]:
        return env, {"prefix": _hide(folder)}
    return how


def _refusal_with_one_worker(address: str, cohort: Path, out: Path, env: dict, log: Path, **how) -> InputError:
    """Start one worker (``how``: flags, cwd, prefix), let `run_batch` meet it, stop it; the refusal, once nothing was written."""
    worker = _worker(address, env, log, **how)
    try:
        _wait_for_workers(address, 1, worker, log)
        with pytest.raises(InputError) as exc:
            run_batch(cohort, out, address=address)
        assert not list(out.glob(".worker-probe-*")) and not any((out / "studies").iterdir()) and not (out / SUMMARY).exists()
    finally:
        _stop(worker)
    _wait_for_workers(address, 0)
    return exc.value


def test_existing_scheduler_refuses_workers_that_cannot_run_this_cardiomics(pair, knowledge_dir, tmp_path, monkeypatch):
    """Real workers the checks must catch: one whose Python has Dask but no cardiomics, one that imports another
    cardiomics version. Each is refused with its own code before any study runs, and the probe file is removed."""
    from cardiomics import __version__

    env = _cardiomics_env(tmp_path, knowledge_dir, monkeypatch)
    with _scheduler(tmp_path, env) as address:
        worker_env, how = _without_cardiomics(env, tmp_path)
        err = _refusal_with_one_worker(address, pair, tmp_path / "out-without", worker_env, tmp_path / "worker-without.log", **how)
        assert err.code == "workers-cannot-run-cardiomics", err.to_dict()
        assert address in err.message and "No module named 'cardiomics'" in err.message and "install cardiomics" in err.hint

        worker_env, how = _other_version(env, tmp_path)
        err = _refusal_with_one_worker(address, pair, tmp_path / "out-other", worker_env, tmp_path / "worker-other.log", **how)
        assert err.code == "worker-version-mismatch", err.to_dict()
        for word in ("1 of 1 workers", "0.0.9", f"this client {__version__}"):
            assert word in err.message, (word, err.message)


def _late_join(address: str, cohort: Path, out: Path, env: dict, tmp_path: Path, label: str,
               unfit: Callable[[dict, Path], tuple[dict, dict]], monkeypatch) -> tuple[BatchSummary, list[subprocess.Popen]]:
    """`run_batch` on a cluster that passes its checks with a good worker; then, before any study is submitted,
    an ``unfit`` worker joins and the good one leaves. The summary, and the two workers (stopped)."""
    from cardiomics import batch

    warm = batch._warm_shared_stores
    late_env, how = unfit(env, tmp_path)
    good = _worker(address, env, tmp_path / f"good-{label}.log")
    workers = [good]

    def swap() -> None:
        # called by run_batch after the cluster passed its checks and before the studies are submitted
        workers.append(_worker(address, late_env, tmp_path / f"late-{label}.log", **how))
        _wait_for_workers(address, 2, workers[-1], tmp_path / f"late-{label}.log")
        _stop(good)
        _wait_for_workers(address, 1)
        warm()

    monkeypatch.setattr(batch, "_warm_shared_stores", swap)
    try:
        _wait_for_workers(address, 1, good, tmp_path / f"good-{label}.log")
        summary = run_batch(cohort, out, address=address)
    finally:
        for w in workers:
            _stop(w)
        monkeypatch.setattr(batch, "_warm_shared_stores", warm)
    _wait_for_workers(address, 0)
    assert len(workers) == 2, "the late worker never joined"
    # every study failed with a typed error, nothing was written by the unfit worker, and the batch still ended
    assert (summary.done, summary.failed) == (0, 2), summary.model_dump()
    assert summary.done_per_min == 0 and summary.studies_per_min > 0
    assert all(f.error["hint"] for f in summary.failures)
    assert json.loads((out / SUMMARY).read_text())["failed"] == 2
    assert not any((out / "studies").iterdir())
    return summary, workers


def test_workers_that_join_after_the_checks_fail_their_studies_not_the_batch(pair, knowledge_dir, tmp_path, monkeypatch):
    """The checks pass with a good worker; then, before any study is submitted, a worker with another version (or
    without cardiomics) joins and the good one leaves. Every study fails with a code that names the cause, none is
    written by the wrong version, and the batch still finishes with its summary.

    A worker without cardiomics cannot read its first task and leaves the cluster (Dask then waits for a worker
    forever): the studies fail with ``no-workers`` once the cluster has had none for ``WORKERS_TIMEOUT_S``."""
    from cardiomics import batch

    env = _cardiomics_env(tmp_path, knowledge_dir, monkeypatch)
    monkeypatch.setattr(batch, "WORKERS_TIMEOUT_S", 3.0)
    with _scheduler(tmp_path, env) as address:
        summary, workers = _late_join(address, pair, tmp_path / "out-late-other", env, tmp_path, "other", _other_version, monkeypatch)
        assert {f.error["code"] for f in summary.failures} == {"worker-version-mismatch"}, [f.error for f in summary.failures]
        assert {f.worker.rsplit(":", 1)[1] for f in summary.failures} == {str(workers[1].pid)}
        assert "0.0.9" in summary.failures[0].error["message"]

        summary, _ = _late_join(address, pair, tmp_path / "out-late-without", env, tmp_path, "without", _without_cardiomics, monkeypatch)
        assert {f.error["code"] for f in summary.failures} == {"no-workers"}, [f.error for f in summary.failures]
        assert address in summary.failures[0].error["message"] and "3 s" in summary.failures[0].error["message"]
        assert "No module named 'cardiomics'" in (tmp_path / "late-without.log").read_text()


def test_workers_on_another_file_system_are_refused_or_fail_their_studies(pair, knowledge_dir, tmp_path, monkeypatch, mount_namespaces):
    """Real workers that see an empty folder where the studies (or the output) are, as on a machine without the
    share: at the start they are refused, naming the folder; joining after the checks, each study fails with
    ``not-found`` naming its path, before its folder is written, and the batch ends with its summary."""
    env = _cardiomics_env(tmp_path, knowledge_dir, monkeypatch)
    with _scheduler(tmp_path, env) as address:
        worker_env, how = _other_file_system(pair)(env, tmp_path)
        # the folder is there on that worker, only empty: the probe looks for studies in it, not just the folder
        err = _refusal_with_one_worker(address, pair, tmp_path / "out-no-studies", worker_env, tmp_path / "worker-no-studies.log", **how)
        assert err.code == "workers-cannot-see-files", err.to_dict()
        assert f"cannot see the studies in {pair}" in err.message and "mounts at the same path" in err.hint

        out = tmp_path / "out-no-out"
        out.mkdir()  # the worker's empty file system is mounted over it
        worker_env, how = _other_file_system(out)(env, tmp_path)
        err = _refusal_with_one_worker(address, pair, out, worker_env, tmp_path / "worker-no-out.log", **how)
        assert err.code == "workers-cannot-see-files", err.to_dict()
        assert f"cannot see the output folder {out}" in err.message

        summary, workers = _late_join(address, pair, tmp_path / "out-late-blind", env, tmp_path, "blind", _other_file_system(pair),
                                      monkeypatch)
        assert {f.error["code"] for f in summary.failures} == {"not-found"}, [f.error for f in summary.failures]
        assert {f.worker.rsplit(":", 1)[1] for f in summary.failures} == {str(workers[1].pid)}
        for f in summary.failures:
            assert f"cannot see the study {pair / f.study}, which was there when the batch started" in f.error["message"], f.error


def test_existing_scheduler_runs_the_batch_on_its_own_workers(pair, knowledge_dir, tmp_path, monkeypatch):
    """`dask scheduler` and `dask worker` started apart from cardiomics: without a worker the batch is refused
    with a typed error; with one, every study runs on that worker process and the outputs verify."""
    import pandas as pd

    from cardiomics import batch

    env = _cardiomics_env(tmp_path, knowledge_dir, monkeypatch)
    worker = None
    with contextlib.ExitStack() as stack:
        address = stack.enter_context(_scheduler(tmp_path, env))
        stack.callback(lambda: worker is not None and _stop(worker))
        monkeypatch.setattr(batch, "WORKERS_TIMEOUT_S", 2.0)
        with pytest.raises(InputError) as exc:
            run_batch(pair, tmp_path / "refused", address=address)
        assert exc.value.code == "no-workers" and address in exc.value.message
        assert not list((tmp_path / "refused").glob(".worker-probe-*"))

        # --no-nanny: the worker is this process itself, so the studies' worker field names its pid
        worker = _start(["distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                         "--local-directory", str(tmp_path / "dask-worker")], env, tmp_path / "worker.log")
        out = tmp_path / "out"
        # a relative studies folder, from a working directory the worker does not share
        res = _batch(Path(pair.name), out, env, 1, "--address", address, cwd=pair.parent)
        assert res.returncode == 0, res.stdout + res.stderr + (tmp_path / "worker.log").read_text()[-3000:]
        summary = json.loads((out / SUMMARY).read_text())
        assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 0, 0)
        assert summary["engine"] == f"dask:{address}" and summary["workers"] is None
        assert address in res.stdout
        manifests = _manifests(out)
        assert set(manifests) == {"study-0000", "study-0001"}
        for name in manifests:
            assert verify_study(out / "studies" / name)
        assert sorted(pd.read_parquet(out / TABLE)["study"]) == ["study-0000", "study-0001"]
        assert not list(out.glob(".worker-probe-*"))
        ran_on = {m["worker"].rsplit(":", 1)[1] for m in manifests.values()}
        assert ran_on == {str(worker.pid)}


def test_a_task_that_raised_is_typed_by_its_cause():
    from types import SimpleNamespace

    from distributed import KilledWorker

    from cardiomics.batch import task_error

    lost = task_error(KilledWorker("study-x", SimpleNamespace(address="tcp://10.0.0.5:4000"), 3))
    assert lost["code"] == "worker-lost" and "memory" in lost["hint"] and "tcp://10.0.0.5:4000" in lost["message"]
    other = task_error(RuntimeError("serialisation failed"))
    assert other["code"] == "worker-failed" and other["error"] == "RuntimeError" and other["message"] == "serialisation failed"


def test_torch_threads_share_each_machine_among_its_workers():
    from cardiomics.batch import _threads_here, torch_threads_per_worker

    report = {  # four workers on a 16-core machine (one runs 2 tasks at once), one alone on 8 cores
        "tcp://a:1": {"host": "a", "cores": 16, "nthreads": 1}, "tcp://a:2": {"host": "a", "cores": 16, "nthreads": 1},
        "tcp://a:3": {"host": "a", "cores": 16, "nthreads": 2}, "tcp://b:1": {"host": "b", "cores": 8, "nthreads": 1},
        "tcp://c:1": {"host": "c", "cores": 2, "nthreads": 4},
    }
    assert torch_threads_per_worker(report) == {"tcp://a:1": 4, "tcp://a:2": 4, "tcp://a:3": 4, "tcp://b:1": 8, "tcp://c:1": 1}
    assert _threads_here({"tcp://a:1": 4}) is None  # outside a Dask worker the plan does not apply


def test_a_study_still_being_analysed_is_not_written_by_a_second_task(tmp_path):
    """A worker of a stopped batch may still run a study (Dask cannot interrupt it); a rerun's task for the
    same study fails as study-in-progress and leaves that study's files alone."""
    import fcntl

    from cardiomics.batch import analyse_study

    study = tmp_path / "cohort" / "s1"
    study.mkdir(parents=True)
    (study / "IM0001").write_bytes(b"x")
    out = tmp_path / "out"
    study_out = out / "studies" / "s1"
    study_out.mkdir(parents=True)
    (study_out / "manifest.json").write_text('{"study": "s1"}')
    with open(study_out / ".study.lock", "a+") as held:  # the task still running
        fcntl.flock(held, fcntl.LOCK_EX)
        outcome = analyse_study("s1", str(study), str(out), b"s" * 32)
    assert outcome["status"] == "failed" and outcome["error"]["code"] == "study-in-progress"
    assert "rerun" in outcome["error"]["hint"]
    assert (study_out / "manifest.json").read_text() == '{"study": "s1"}'
    assert not list((study_out / "audit").iterdir())
    # once the other task has finished, the study is analysed (here it fails as unreadable, but it is tried)
    outcome = analyse_study("s1", str(study), str(out), b"s" * 32)
    assert outcome["error"]["code"] != "study-in-progress" and not (study_out / "manifest.json").exists()
