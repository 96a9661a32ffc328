"""The bad-input corpus (tests/badinputs) through the MCP server and through the graph.

For every case: a typed error with a bounded, printable message, or the documented acceptance
(hostile text comes back quoted and truncated); the MCP server still answers list_tools; a run
fails with a typed error rather than raising; the input files are byte-for-byte unchanged; and a
header that promises an enormous array is refused without allocating it.
Every case must be handled: there are no known defects left to tolerate.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tracemalloc
import unicodedata
from pathlib import Path

import fastmcp
import pytest
import structlog
from fastmcp.exceptions import ToolError

import badinputs

TYPED = {"StudyError", "InputError", "ModelError", "NotFoundError", "PolicyError"}  # ToolFailure = unforeseen
PEAK_LIMIT_MB = 400
def _digest_tree(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _printable(text: str) -> bool:
    return not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return badinputs.generate(tmp_path_factory.mktemp("badinputs"))


@pytest.fixture(scope="module", autouse=True)
def quiet_logs():
    """Tool failures log a traceback; rendered with locals it takes seconds per case. Keep it plain and off-screen."""
    structlog.configure(processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
                        logger_factory=structlog.PrintLoggerFactory(file=io.StringIO()))
    yield
    structlog.reset_defaults()


def test_corpus_size(corpus):
    assert len(corpus) >= 30
    assert len({c.id for c in corpus}) == len(corpus)
    kinds = {c.id.split("-")[0] for c in corpus}
    assert kinds == {"dicom", "nifti", "h5ad", "study"}


def _check_outcome(case, outcome: dict) -> list[str]:
    """Problems with one outcome (empty: handled as promised)."""
    problems = []
    if outcome["kind"] == "crash":
        return [f"untyped failure {outcome['body']}"]
    text = json.dumps(outcome["body"], ensure_ascii=False)
    for bad in case.hostile:
        if bad in text:
            problems.append(f"hostile text came back verbatim ({bad[:30]!r}…)")
    if outcome["kind"] == "error":
        err = outcome["body"]
        if err.get("error") not in TYPED:
            problems.append(f"error kind {err.get('error')} is not a foreseen, typed refusal: {err.get('message', '')[:200]}")
        elif case.expect == "accept":
            problems.append(f"refused a documented acceptance: {err['code']}")
        elif case.codes and err["code"] not in case.codes:
            problems.append(f"code {err['code']} not in {sorted(case.codes)}")
        if len(err.get("message", "")) > 2000 or not _printable(err.get("message", "")):
            problems.append("error message unbounded or holds control characters")
    else:
        body = outcome["body"]
        if case.expect == "refuse":
            problems.append("accepted an input that must be refused")
        for key, value in (body.get("description") or {}).items():
            if isinstance(value, str) and (len(value) > 256 or not _printable(value)):
                problems.append(f"description.{key} is not quoted/truncated")
        if case.qc_fail and body.get("qc_verdict") != "fail":
            problems.append(f"QC verdict {body.get('qc_verdict')} where 'fail' is documented")
        if len(text) > 200_000:
            problems.append(f"response of {len(text)} characters")
    if case.huge and outcome["peak_mb"] > PEAK_LIMIT_MB:
        problems.append(f"allocated {outcome['peak_mb']:.0f} MB for a header-only lie")
    if not case.huge and outcome["peak_mb"] > PEAK_LIMIT_MB:
        problems.append(f"peak memory {outcome['peak_mb']:.0f} MB for a tiny file")
    return problems


async def _run_corpus(server, corpus) -> dict[str, dict]:
    outcomes = {}
    async with fastmcp.Client(server) as client:
        for case in corpus:
            tracemalloc.start()
            try:
                res = await client.call_tool(case.tool, {"path": str(case.path)})
                outcome = {"kind": "ok", "body": res.structured_content}
            except ToolError as exc:
                try:
                    outcome = {"kind": "error", "body": json.loads(str(exc))}
                except json.JSONDecodeError:
                    outcome = {"kind": "crash", "body": str(exc)[:300]}
            except Exception as exc:  # noqa: BLE001 - anything else is a crash of the adapter
                outcome = {"kind": "crash", "body": f"{type(exc).__name__}: {str(exc)[:300]}"}
            outcome["peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
            outcome["alive"] = len(await client.list_tools()) > 0  # the server still answers
            outcomes[case.id] = outcome
    return outcomes


@pytest.fixture(scope="module")
def mcp_outcomes(corpus, tmp_path_factory):
    from cardiomics.config import Settings
    from cardiomics.mcp_server import build_server

    base = tmp_path_factory.mktemp("badinputs-home")
    settings = Settings(home=base / "home", audit_dir=base / "audit").ensure()
    before = {c.id: _digest_tree(c.path) for c in corpus}
    outcomes = asyncio.run(_run_corpus(build_server(settings), corpus))
    after = {c.id: _digest_tree(c.path) for c in corpus}
    return outcomes, before, after, settings


def test_every_case_through_mcp(corpus, mcp_outcomes):
    outcomes, before, after, settings = mcp_outcomes
    handled, unexpected = [], {}
    for case in corpus:
        out = outcomes[case.id]
        assert out["alive"], f"{case.id}: the MCP server stopped answering"
        assert before[case.id] == after[case.id], f"{case.id}: the input was modified"
        problems = _check_outcome(case, out)
        if not problems:
            handled.append(case.id)
        else:
            unexpected[case.id] = problems
    assert not unexpected, json.dumps(unexpected, indent=1)
    assert len(handled) == len(corpus)
    # every call is in the trail once, and the trail verifies
    from cardiomics.audit import verify_file

    (trail,) = settings.audit_dir.glob("mcp-*.jsonl")
    assert verify_file(trail).ok
    events = [json.loads(line)["event"] for line in trail.read_text().splitlines()]
    assert len(events) == len(corpus) and set(events) <= {"tool_call", "tool_error"}
    print(f"\nbad-input corpus: {len(corpus)} cases, {len(handled)} handled as promised, 0 crashes, 0 inputs modified")


def test_every_study_case_through_the_graph(corpus, tmp_path_factory):
    """Runs.start never raises on a bad study: it returns a failed run with a typed error (or a run that
    waits at QC, for documented acceptances), and the run's trail verifies."""
    from cardiomics.agents.runs import Runs
    from cardiomics.audit import verify_dir
    from cardiomics.config import Settings

    base = tmp_path_factory.mktemp("badinputs-graph")
    settings = Settings(home=base / "home", audit_dir=base / "audit").ensure()
    studies = [c for c in corpus if c.tool == "load_study"]
    before = {c.id: _digest_tree(c.path) for c in studies}
    with Runs(settings) as runs:
        for case in studies:
            st = runs.start(str(case.path))
            if case.expect == "refuse":
                assert st.status == "failed", case.id
            if st.status == "failed":
                assert st.error["error"] in TYPED, (case.id, st.error)
                assert _printable(st.error["message"]) and len(st.error["message"]) <= 2000, case.id
                for bad in case.hostile:
                    assert bad not in json.dumps(st.error, ensure_ascii=False), case.id
            else:
                assert st.status == "awaiting-qc", (case.id, st.status)
    assert all(r.ok for r in verify_dir(settings.audit_dir))
    assert before == {c.id: _digest_tree(c.path) for c in studies}
