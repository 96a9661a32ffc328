"""Crash and resume (ORCHESTRATION ONLY: the segmenter is tests/orchestration_fakes.py's stand-in,
because what is checked is checkpoints and audit, not segmentation).

A run is SIGKILLed while the segment tool runs, right after a QC approval is written, and inside the
final signing step; each time it resumes from its checkpoint to the same signed report, with every
audit event present exactly once. A write cut short in the audit log leaves a verifiable prefix,
`cardiomics audit verify` says so, and the next append records the recovery in the chain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cardiomics.audit import verify_dir, verify_file
from cardiomics.audit_reports import verify_reports

import orchestration_fakes

LAUNCHER = str(Path(orchestration_fakes.__file__))


@pytest.fixture
def env(settings):
    return {**os.environ, "CARDIOMICS_HOME": str(settings.home), "CARDIOMICS_AUDIT_DIR": str(settings.audit_dir)}


def _events(settings, run_id: str) -> list[tuple]:
    lines = [json.loads(x) for x in (settings.audit_dir / f"{run_id}.jsonl").read_text().splitlines()]
    return [(r["event"], r.get("tool") or r.get("checkpoint")) for r in lines]


def _kill_when(proc: subprocess.Popen, settings, predicate, timeout: float = 120) -> str:
    """SIGKILL ``proc`` as soon as a run trail satisfies ``predicate``; return the run id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for trail in settings.audit_dir.glob("run-*.jsonl"):
            if predicate(_events(settings, trail.stem)):
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                return trail.stem
        if proc.poll() is not None:
            raise AssertionError(f"process ended before the kill point: {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("kill point never reached")


def _launch(env, *args, **extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, LAUNCHER, *args], env={**env, **extra},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_tool_mid_approval_mid_signing(settings, env, phantom_study, monkeypatch):
    from cardiomics.agents.runs import Runs

    folder, _ = phantom_study
    # 1. killed while `segment` runs (the fake sleeps there; load_study is already in the trail)
    proc = _launch(env, "analyse", str(folder), "--height", "170", "--weight", "70", CARDIOMICS_TEST_SEGMENT_DELAY_S="120")
    run_id = _kill_when(proc, settings, lambda ev: ("tool_call", "load_study") in ev)
    time.sleep(0.2)
    assert _events(settings, run_id) == [("run_start", None), ("tool_call", "load_study")]

    orchestration_fakes.install(monkeypatch)
    with Runs(settings) as runs:
        assert runs.status(run_id).status == "interrupted"
        st = runs.resume(run_id)
        assert st.status == "awaiting-qc" and st.waiting_for == "qc-approval"

    # 2. killed right after the QC approval line is written, before the graph moved on
    proc = _launch(env, "approve", run_id, "--reviewer", "dr-qc", CARDIOMICS_TEST_STALL_AFTER_EVENT="approval")
    _kill_when(proc, settings, lambda ev: ("approval", "qc") in ev)
    with Runs(settings) as runs:
        st = runs.status(run_id)
        assert st.waiting_for == "qc-approval"  # the checkpoint did not move: the decision is re-issued
        st = runs.decide(run_id, "dr-qc", "approved", expect="qc-approval")
        assert st.status == "awaiting-signoff" and st.report_version == 1

    # 3. killed inside the final step, after the signed version and its audit line were written
    proc = _launch(env, "approve", run_id, "--reviewer", "dr-sign", "--comment", "agree",
                   CARDIOMICS_TEST_STALL_AFTER_EVENT="report_signed")
    _kill_when(proc, settings, lambda ev: ("report_signed", None) in ev)
    with Runs(settings) as runs:
        assert runs.status(run_id).status == "interrupted"
        st = runs.resume(run_id)
        assert st.status == "approved" and st.waiting_for is None and st.report_version == 2
        signed = runs.services.reports.load(run_id)

    events = _events(settings, run_id)
    core = [("run_start", None), ("tool_call", "load_study"), ("run_resumed", None), ("tool_call", "segment"),
            ("tool_call", "cardiac_function"), ("approval", "qc"), ("tool_call", "report_figures"), ("report_version", None),
            ("approval", "signoff"), ("report_signed", None), ("run_resumed", None), ("run_finished", None)]
    it = iter(events)
    assert all(step in it for step in core), events  # every step, in order
    assert events.count(("run_resumed", None)) == 2 and events[-1] == ("run_finished", None)
    records = [json.loads(x) for x in (settings.audit_dir / f"{run_id}.jsonl").read_text().splitlines()]
    keys = [r["once_key"] for r in records if "once_key" in r]
    assert len(keys) == len(set(keys)), "an event was logged twice"
    calls = [(r["tool"], r["args_sha256"]) for r in records if r["event"] == "tool_call"]
    assert len(calls) == len(set(calls)), "a tool call was logged twice"
    assert all(e != ("tool_error", None) and e[0] != "run_failed" for e in events)
    (chain,) = verify_dir(settings.audit_dir, run_id)
    assert chain.ok, chain.reason
    assert signed.status == "approved" and signed.signature.reviewer == "dr-sign" and signed.signature.comment == "agree"
    assert [(c.version, c.ok) for c in verify_reports(settings, run_id)] == [(1, True), (2, True)]


def test_resume_refuses_runs_that_wait_or_ended(settings, phantom_study, monkeypatch):
    from cardiomics.agents.runs import Runs
    from cardiomics.errors import PolicyError

    orchestration_fakes.install(monkeypatch)
    with Runs(settings) as runs:
        st = runs.start(str(phantom_study[0]))
        with pytest.raises(PolicyError) as exc:
            runs.resume(st.run_id)
        assert exc.value.code == "waiting-for-decision"
        runs.decide(st.run_id, "dr-qc", "rejected")
        with pytest.raises(PolicyError) as exc:
            runs.resume(st.run_id)
        assert exc.value.code == "not-interrupted"


def test_torn_audit_line_is_detected_then_recovered(settings, env, phantom_study, monkeypatch):
    from cardiomics.agents.runs import Runs

    orchestration_fakes.install(monkeypatch)
    with Runs(settings) as runs:
        st = runs.start(str(phantom_study[0]))
        trail = settings.audit_dir / f"{st.run_id}.jsonl"
        intact = trail.read_bytes()
        torn = b'{"actor":"dr-qc","event":"approval","checkpoint":"qc","seq":'
        with open(trail, "ab") as fh:  # a crash in the middle of a write
            fh.write(torn)

        res = verify_file(trail)
        assert not res.ok and res.torn_tail and res.first_bad_line == len(intact.splitlines()) + 1
        cli = subprocess.run([sys.executable, "-m", "cardiomics.cli", "audit", "verify", st.run_id],
                             capture_output=True, text=True, env=env, timeout=60)
        assert cli.returncode == 1 and "cut short" in cli.stdout

        st = runs.decide(st.run_id, "dr-qc", "approved")
        assert st.status == "awaiting-signoff"
    data = trail.read_bytes()
    assert data.startswith(intact) and torn not in data  # the verifiable prefix is kept, the torn bytes are gone
    records = [json.loads(x) for x in data.splitlines()]
    recovered = [r for r in records if r["event"] == "audit_recovered"]
    assert len(recovered) == 1 and recovered[0]["discarded_bytes"] == len(torn)
    assert records[len(intact.splitlines())]["event"] == "audit_recovered"
    assert verify_file(trail).ok
