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
