"""The README's flow through the real command line: demo -> approve -> approve -> audit verify."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest


def cli(*args, cwd, check=True, knowledge_dir=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDIOMICS_")}
    if knowledge_dir is not None:  # share the session's knowledge index instead of embedding the corpus again
        env["CARDIOMICS_KNOWLEDGE_DIR"] = str(knowledge_dir)
    env["COLUMNS"] = "200"
    res = subprocess.run([sys.executable, "-m", "cardiomics.cli", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.mark.slow
def test_demo_to_signed_report_and_tamper_detection(tmp_path, knowledge_dir):
    res = cli("demo", cwd=tmp_path)
    run_id = re.search(r"run (run-[\w-]+)", res.stdout).group(1)
    assert "waiting for QC approval" in res.stdout
    truth = json.loads((tmp_path / ".cardiomics" / "sample" / "truth.json").read_text())["truth"]
    assert f"{truth['lv_ef_pct']:.1f}" in res.stdout  # the ground truth is shown beside the measurement

    res = cli("approve", run_id, "--reviewer", "dr-qc", cwd=tmp_path, knowledge_dir=knowledge_dir)
    assert "waiting for sign-off" in res.stdout
    res = cli("approve", run_id, "--reviewer", "dr-sign", "--comment", "ok", cwd=tmp_path)
    assert "status: approved" in res.stdout

    res = cli("report", run_id, "--format", "json", cwd=tmp_path)
    report = json.loads(open(res.stdout.strip()).read())
    assert report["status"] == "approved" and report["signature"]["reviewer"] == "dr-sign"
    assert any(f["section"] == "Molecular context (measured)" for f in report["findings"])

    res = cli("audit", "verify", cwd=tmp_path)
    assert f"ok   {run_id}" in res.stdout

    # editing any one line makes verification fail, naming that line
    trail = tmp_path / "audit_logs" / f"{run_id}.jsonl"
    lines = trail.read_text().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if '"dr-qc"' in line)
    lines[n] = lines[n].replace('"dr-qc"', '"dr-forged"')
    trail.write_text("".join(lines))
    res = cli("audit", "verify", run_id, cwd=tmp_path, check=False)
    assert res.returncode == 1 and f"line {n + 1}:" in res.stdout

    res = cli("approve", run_id, "--reviewer", "dr-late", cwd=tmp_path, check=False)
    assert res.returncode == 2 and "not-waiting" in res.stderr and "Traceback" not in res.stderr


def test_bad_study_path_is_a_clean_error(tmp_path):
    res = cli("analyse", str(tmp_path / "missing"), cwd=tmp_path, check=False)
    assert res.returncode == 2 and "InputError[not-found]" in res.stderr and "Traceback" not in res.stderr


def test_help_lists_the_commands(tmp_path):
    res = cli("--help", cwd=tmp_path)
    for command in ("demo", "analyse", "approve", "runs", "report", "audit", "mcp", "segment"):
        assert command in res.stdout
