"""MCP over HTTP, as a remote agent meets it: bearer tokens, audit of every call and refusal,
path confinement, resources and the health route; and the stdio server as a desktop client runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import fastmcp
import pytest
from fastmcp.exceptions import ToolError
from mcp.shared.exceptions import MCPError

from cardiomics.audit import verify_file
from cardiomics.review.server import free_port
from cardiomics.tools import registry


def _cli(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cardiomics.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def _wait_ready(port: int, proc: subprocess.Popen, token: str | None) -> None:
    """/health answers first; then list_tools (Client.ping is not served) proves the MCP endpoint is up."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    asyncio.run(_list(port, token))


async def _list(port: int, token: str | None):
    async with fastmcp.Client(f"http://127.0.0.1:{port}/mcp", auth=token) as c:
        return await c.list_tools()


@pytest.fixture
def env(settings, tmp_path):
    root = tmp_path / "mcp-root"
    root.mkdir()
    return {**os.environ, "CARDIOMICS_HOME": str(settings.home), "CARDIOMICS_AUDIT_DIR": str(settings.audit_dir),
            "CARDIOMICS_MCP_ROOT": str(root)}


@pytest.fixture
def server(env, settings):
    """A token-protected HTTP server in its own process (the real `cardiomics mcp --http` command)."""
    created = _cli("mcp", "token", "create", "alice", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cardiomics.cli", "mcp", "--http", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(port, proc, token)
        yield port, token
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _trail(settings) -> list[dict]:
    lines = []
    for p in sorted(settings.audit_dir.glob("mcp-*.jsonl")):
        assert verify_file(p).ok, verify_file(p).reason
        lines += [json.loads(line) for line in p.read_text().splitlines()]
    return lines


def test_token_file_keeps_only_hashes(env, settings):
    token = _cli("mcp", "token", "create", "ci-agent", env=env).stdout.strip()
    assert token.startswith("cmx_") and len(token) >= 40
    stored = (settings.home / "mcp_tokens.json").read_text()
    assert token not in stored and token[4:] not in stored
    entry = json.loads(stored)["tokens"][0]
    assert entry["name"] == "ci-agent" and len(entry["sha256"]) == 64 and entry["created_at"]
    assert oct((settings.home / "mcp_tokens.json").stat().st_mode)[-3:] == "600"
    assert "ci-agent" in _cli("mcp", "token", "list", env=env).stdout
    again = _cli("mcp", "token", "create", "ci-agent", env=env)
    assert again.returncode == 2 and "PolicyError" in again.stderr and "exists" in again.stderr
    assert _cli("mcp", "token", "revoke", "ci-agent", env=env).returncode == 0
    assert json.loads((settings.home / "mcp_tokens.json").read_text())["tokens"] == []


def test_refuses_unsafe_starts(env):
    open_bind = _cli("mcp", "--http", "--no-auth", "--host", "0.0.0.0", "--port", str(free_port()), env=env)
    assert open_bind.returncode == 2 and "loopback only" in open_bind.stderr
    no_tokens = _cli("mcp", "--http", "--port", str(free_port()), env=env)
    assert no_tokens.returncode == 2 and "no MCP tokens" in no_tokens.stderr


def test_auth_audit_confinement_and_resources(server, env, settings, phantom_study):
    port, token = server
    url = f"http://127.0.0.1:{port}/mcp"
    root = Path(env["CARDIOMICS_MCP_ROOT"])
    shutil.copytree(phantom_study[0], root / "study")
    (root / "escape").symlink_to(phantom_study[0])  # a link out of the root must not let a caller out

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        health = json.loads(r.read())
    assert health["status"] == "ok" and health["tools"] == len(registry()) and health["version"]

    async def attempt(auth):
        async with fastmcp.Client(url, auth=auth) as c:
            return await c.list_tools()

    for bad in (None, "cmx_not-a-token", token + "x"):
        with pytest.raises(Exception) as exc:
            asyncio.run(attempt(bad))
        assert "401" in str(exc.value) or "Unauthorized" in str(exc.value) or "error" in str(exc.value).lower()

    async def session():
        async with fastmcp.Client(url, auth=token) as c:
            tools = {t.name: t for t in await c.list_tools()}
            ok = await c.call_tool("load_study", {"path": "study"})  # relative to the root
            refused = []
            for path in ("/etc", "../", "escape", str(phantom_study[0])):
                with pytest.raises(ToolError) as exc:
                    await c.call_tool("load_study", {"path": path})
                refused.append(json.loads(str(exc.value)))
            with pytest.raises(ToolError) as exc:
                await c.call_tool("segment_file", {"path": "study", "out_path": "/tmp/cardiomics-out.nii.gz"})
            refused.append(json.loads(str(exc.value)))
            models = json.loads((await c.read_resource("cardiomics://models"))[0].text)
            reports = json.loads((await c.read_resource("cardiomics://reports/signed"))[0].text)
            return tools, ok.structured_content, refused, models, reports

    tools, body, refused, models, reports = asyncio.run(session())
    assert set(tools) == set(registry())
    assert tools["segment_file"].annotations.read_only_hint is False
    assert tools["load_study"].annotations.read_only_hint is True and tools["load_study"].annotations.idempotent_hint is True
    assert body["n_frames"] == 16 and body["n_slices"] == 8 and body["study_key"].startswith("study-")
    assert all(r["error"] == "PolicyError" and r["code"] == "path-outside-root" for r in refused)
    assert isinstance(models, list) and isinstance(reports, list)

    # revocation takes effect on the next request, without a restart
    assert _cli("mcp", "token", "revoke", "alice", env=env).returncode == 0
    with pytest.raises(MCPError):
        asyncio.run(attempt(token))

    trail = _trail(settings)
    refusals = [r for r in trail if r["event"] == "auth_refused"]
    assert {r["reason"] for r in refusals} == {"no bearer token", "unknown or revoked token"}
    assert all(r["actor"] == "unauthenticated" and r["status"] == 401 for r in refusals)
    calls = [r for r in trail if r["event"] == "tool_call"]
    assert [(r["tool"], r["actor"]) for r in calls] == [("load_study", "token:alice")]
    assert calls[0]["result_id"] == body["provenance"]["result_id"] and calls[0]["transport"] == "http"
    confined = [r for r in trail if r["event"] == "tool_refused"]
    assert len(confined) == 5 and all(r["code"] == "path-outside-root" and r["actor"] == "token:alice" for r in confined)
    assert {r["uri"] for r in trail if r["event"] == "resource_read"} == {"cardiomics://models", "cardiomics://reports/signed"}
    # the plaintext token is nowhere on disk
    for p in [*settings.audit_dir.rglob("*"), *settings.home.rglob("*.json")]:
        if p.is_file():
            assert token not in p.read_text(errors="replace"), p
    assert not Path("/tmp/cardiomics-out.nii.gz").exists()


def test_stdio_server_serves_every_tool(env):
    """What Claude Desktop or an IDE runs: `cardiomics mcp` over stdio (stdout carries only the protocol)."""
    from fastmcp.client.transports import StdioTransport

    transport = StdioTransport(command=sys.executable, args=["-m", "cardiomics.cli", "mcp"], env=env)

    async def main():
        async with fastmcp.Client(transport) as c:
            tools = await c.list_tools()
            with pytest.raises(ToolError) as exc:
                await c.call_tool("segment", {"study_id": "study-" + "0" * 24})
            return tools, json.loads(str(exc.value))

    tools, err = asyncio.run(main())
    assert {t.name for t in tools} == set(registry())
    assert err["error"] == "NotFoundError" and err["code"] == "unknown-artefact"
    trail = [json.loads(line) for p in Path(env["CARDIOMICS_AUDIT_DIR"]).glob("mcp-*.jsonl") for line in p.read_text().splitlines()]
    assert [(r["event"], r["actor"], r["transport"]) for r in trail] == [("tool_error", "mcp-stdio", "stdio")]


class _Seconds:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}


def _refuse(client, n: int, token: str = "cmx_not-a-token") -> None:
    for _ in range(n):
        r = client.post("/mcp", json=INIT, headers={"accept": "application/json, text/event-stream",
                                                    "authorization": f"Bearer {token}"})
        assert r.status_code == 401


def _refusals(settings) -> list[dict]:
    return [r for r in _trail(settings) if r["event"].startswith("auth_refused")]


def test_refusal_lines_are_capped_per_client_and_the_rest_counted(settings, monkeypatch):
    from starlette.testclient import TestClient

    from cardiomics.audit import AuditTrail, verify_dir
    from cardiomics.mcp_auth import REFUSAL_LINES_PER_CLIENT, REFUSAL_WINDOW_S, RefusalLimiter
    from cardiomics.mcp_server import http_app

    on_loop = []
    append = AuditTrail.append

    def recording_append(self, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a worker thread: no event loop runs here
            on_loop.append(False)
        return append(self, *args, **kwargs)

    monkeypatch.setattr(AuditTrail, "append", recording_append)
    clock = _Seconds()
    app = http_app(settings, refusal_limiter=RefusalLimiter(clock=clock))
    extra = 15
    with TestClient(app, base_url="http://127.0.0.1", client=("203.0.113.7", 40000)) as flood, \
            TestClient(app, base_url="http://127.0.0.1", client=("198.51.100.2", 40000)) as other:
        _refuse(flood, REFUSAL_LINES_PER_CLIENT + extra)
        assert len(_refusals(settings)) == REFUSAL_LINES_PER_CLIENT
        _refuse(other, 2, token="")  # another address is not silenced by the flood
        clock.now += REFUSAL_WINDOW_S
        _refuse(flood, 1, token="cmx_later")
        refusals = _refusals(settings)

    assert [r["client"] for r in refusals] == ["203.0.113.7"] * REFUSAL_LINES_PER_CLIENT + ["198.51.100.2"] * 2 + ["203.0.113.7"]
    assert all(r["event"] == "auth_refused" and r["status"] == 401 for r in refusals)
    assert [r.get("suppressed_since_last") for r in refusals] == [None] * (REFUSAL_LINES_PER_CLIENT + 2) + [extra]
    assert refusals[-1]["reason"] == "unknown or revoked token" and refusals[-2]["reason"] == "no bearer token"
    assert len(_refusals(settings)) == len(refusals)  # nothing left to count when the server stopped
    assert all(r.ok for r in verify_dir(settings.audit_dir))
    assert on_loop and not any(on_loop)  # every line was written in a worker thread, off the event loop


def test_refusals_still_counted_when_the_server_stops_are_written_then(settings):
    from starlette.testclient import TestClient

    from cardiomics.audit import verify_dir
    from cardiomics.mcp_auth import REFUSAL_LINES_PER_CLIENT, RefusalLimiter
    from cardiomics.mcp_server import http_app

    app = http_app(settings, refusal_limiter=RefusalLimiter(clock=_Seconds()))
    with TestClient(app, base_url="http://127.0.0.1", client=("203.0.113.7", 40000)) as client:
        _refuse(client, REFUSAL_LINES_PER_CLIENT + 4)
    *lines, closing = _refusals(settings)
    assert len(lines) == REFUSAL_LINES_PER_CLIENT and {r["event"] for r in lines} == {"auth_refused"}
    assert closing["event"] == "auth_refused_suppressed" and closing["actor"] == "unauthenticated"
    assert closing["suppressed"] == 4 and closing["by_client"] == {"203.0.113.7": 4}
    assert all(r.ok for r in verify_dir(settings.audit_dir))


def test_refusal_limiter_caps_all_clients_and_the_addresses_it_tracks():
    from cardiomics.mcp_auth import RefusalLimiter

    clock = _Seconds()
    limiter = RefusalLimiter(per_client=2, total=5, window_s=60, max_clients=3, clock=clock)
    admitted = [limiter.admit(f"10.0.0.{i}") is not None for i in range(8)]
    assert admitted == [True] * 5 + [False] * 3  # the limit over all addresses
    clock.now += 60
    # only 3 addresses are tracked (10.0.0.5-7, one count each): a new one drops the least recent
    assert limiter.admit("10.0.0.9") == {"suppressed_untracked": 1}
    assert limiter.admit("10.0.0.7") == {"suppressed_since_last": 1}
    assert limiter.admit("10.0.0.7") == {}
    assert limiter.admit("10.0.0.7") is None
    assert limiter.drain() == {"suppressed": 2, "by_client": {"10.0.0.6": 1, "10.0.0.7": 1}}
    assert limiter.drain() is None
