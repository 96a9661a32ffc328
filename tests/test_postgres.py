"""The PostgreSQL checkpointer: a run paused in one process is resumed from another.

A throwaway PostgreSQL cluster is created in a temporary folder, listens on a loopback port and is
stopped afterwards. It runs as the ``postgres`` system user when the tests run as root (PostgreSQL
refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from cardiomics.review.server import free_port


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


@pytest.fixture(scope="module")
def pg_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: apt-get install -y postgresql")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="cardiomics-pg-"))
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' system user to run the server as")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root and no runuser to drop privileges for the PostgreSQL server")
        as_user = [runuser, "-u", "postgres", "--"]
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = root / "data", free_port()

    def run(*cmd: str) -> None:
        res = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120, cwd=root, check=False)
        assert res.returncode == 0, f"{cmd[0]} failed: {res.stdout}\n{res.stderr}"

    run(initdb, "-D", str(data), "-U", "cardiomics", "-A", "trust", "-E", "UTF8", "--no-sync")
    run(pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql://cardiomics@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _count_checkpoints(url: str, thread_id: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s", (thread_id,)).fetchone()[0]


# Orchestration only (no tool): a two-step graph with an interrupt, the smallest thing that pauses.
_TINY_GRAPH = textwrap.dedent('''
    import operator, sys
    from typing import Annotated, TypedDict
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt
    from cardiomics.agents.checkpointer import Checkpointer
    from cardiomics.config import Settings

    class S(TypedDict, total=False):
        log: Annotated[list, operator.add]

    def ask(state):
        return {"log": [f"decision={interrupt({'question': 'approve?'})}"]}

    def done(state):
        return {"log": ["done"]}

    g = StateGraph(S)
    g.add_node("start", lambda s: {"log": [f"start-{sys.argv[2]}"]})
    g.add_node("ask", ask)
    g.add_node("done", done)
    g.add_edge(START, "start"); g.add_edge("start", "ask"); g.add_edge("ask", "done"); g.add_edge("done", END)
    with Checkpointer(Settings.from_env()) as cp:
        graph = g.compile(checkpointer=cp.saver)
        cfg = {"configurable": {"thread_id": sys.argv[1]}}
        if sys.argv[2] == "start":
            out = graph.invoke({"log": []}, cfg)
            print("PAUSED" if "__interrupt__" in out else "NOT-PAUSED", cp.backend)
        else:
            out = graph.invoke(Command(resume="approved-by-other-process"), cfg)
            print("|".join(out["log"]), cp.backend)
''')


def _env(settings, url: str) -> dict:
    return {**os.environ, "CARDIOMICS_POSTGRES_URL": url, "CARDIOMICS_HOME": str(settings.home),
            "CARDIOMICS_AUDIT_DIR": str(settings.audit_dir)}


def test_interrupt_survives_process_boundary_in_postgres(pg_url, settings, tmp_path):
    """Orchestration only: pause in process A, resume in process B, both through CARDIOMICS_POSTGRES_URL."""
    script = tmp_path / "tiny_graph.py"
    script.write_text(_TINY_GRAPH)
    env = _env(settings, pg_url)
    a = subprocess.run([sys.executable, str(script), "t-tiny", "start"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert a.returncode == 0, a.stderr
    assert a.stdout.strip().splitlines()[-1].split() == ["PAUSED", "postgres"]
    assert _count_checkpoints(pg_url, "t-tiny") >= 2
    b = subprocess.run([sys.executable, str(script), "t-tiny", "resume"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert b.returncode == 0, b.stderr
    assert b.stdout.strip().splitlines()[-1].split() == ["start-start|decision=approved-by-other-process|done", "postgres"]
    assert not settings.checkpoint_db.exists(), "the SQLite file must not be used when PostgreSQL is configured"


def test_paused_cmr_run_resumed_from_another_process(pg_url, settings, phantom_study, monkeypatch):
    """The real graph and segmenter: paused at QC here, approved by `cardiomics approve` in a subprocess."""
    from cardiomics.agents.runs import Runs

    monkeypatch.setenv("CARDIOMICS_POSTGRES_URL", pg_url)
    folder, truth = phantom_study
    with Runs(settings) as runs:
        assert runs._checkpointer.backend == "postgres"
        st = runs.start(str(folder), height_cm=170, weight_kg=70)
        assert st.status == "awaiting-qc" and st.waiting_for == "qc-approval"
    assert _count_checkpoints(pg_url, st.run_id) >= 2
    assert not settings.checkpoint_db.exists()

    res = subprocess.run([sys.executable, "-m", "cardiomics.cli", "approve", st.run_id, "--reviewer", "dr-remote"],
                         capture_output=True, text=True, env=_env(settings, pg_url), timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert "awaiting-signoff" in res.stdout

    with Runs(settings) as runs:  # a fresh reader sees the state the other process wrote
        st2 = runs.status(st.run_id)
        assert st2.status == "awaiting-signoff" and st2.waiting_for == "sign-off" and st2.report_version == 1
        values = runs.graph.get_state(runs._config(st.run_id)).values
        assert values["decisions"][0]["reviewer"] == "dr-remote"
        # persistence is under test here; accuracy is asserted on larger phantoms in test_graph / test_cli
        assert abs(values["results"]["cardiac_function"]["lv_ef_pct"]["value"] - truth["lv_ef_pct"]) <= 5.0
        st3 = runs.decide(st.run_id, "dr-sign", "approved", "agree")
        assert st3.status == "approved"


def test_unreachable_postgres_is_a_typed_error(settings, monkeypatch):
    from cardiomics.agents.checkpointer import Checkpointer
    from cardiomics.errors import InputError

    monkeypatch.setenv("CARDIOMICS_POSTGRES_URL", f"postgresql://nobody:secret@127.0.0.1:{free_port()}/x")
    with pytest.raises(InputError) as info:
        Checkpointer(settings)
    assert info.value.code == "postgres-unreachable"
    assert "secret" not in info.value.message and "***" in info.value.message
