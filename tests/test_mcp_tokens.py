"""MCP bearer-token expiry: the store's clock, the HTTP refusal and its audit line, legacy token
files, the `--expires-days` bounds and what `cardiomics mcp token list` shows.

The HTTP checks run the real ASGI app in-process (no port, no subprocess); the command-line checks
run the real `cardiomics` command.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from cardiomics.audit import verify_file
from cardiomics.errors import InputError
from cardiomics.mcp_auth import TokenStore, expiry_days, token_digest, token_verifier

from conftest import access_lines

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


class Clock:
    """A UTC clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _rewrite(store: TokenStore, edit) -> None:
    """Change the token file as another process would: a new file moved into place."""
    data = json.loads(store.path.read_text())
    edit(data["tokens"])
    tmp = store.path.with_name("edit.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, store.path)


def _cli(*args: str, settings) -> subprocess.CompletedProcess:
    env = {**os.environ, "CARDIOMICS_HOME": str(settings.home), "CARDIOMICS_AUDIT_DIR": str(settings.audit_dir),
           "COLUMNS": "200"}  # a wide table: timestamps stay on one line
    return subprocess.run([sys.executable, "-m", "cardiomics.cli", *args], capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def test_store_refuses_a_token_once_it_expires(settings):
    clock = Clock(T0)
    store = TokenStore(settings, now=clock)
    short = store.create("short-lived", expires_days=1)
    forever = store.create("forever", expires_days=0)
    entries = {e.name: e for e in store.list()}
    assert entries["short-lived"].created_at == "2030-01-01T12:00:00+00:00"
    assert entries["short-lived"].expires_at == "2030-01-02T12:00:00+00:00"
    assert entries["forever"].expires_at is None
    assert json.loads(store.path.read_text())["tokens"][1]["expires_at"] == "2030-01-02T12:00:00+00:00"

    verifier = token_verifier(settings, store=store)
    access = asyncio.run(verifier.verify_token(short))
    assert access.client_id == "short-lived" and access.expires_at == int(datetime(2030, 1, 2, 12, tzinfo=UTC).timestamp())
    assert asyncio.run(verifier.verify_token(forever)).expires_at is None

    clock.now = T0 + timedelta(days=1)  # the expiry instant itself is already past
    assert store.lookup(short) is None and asyncio.run(verifier.verify_token(short)) is None
    assert store.find(short).name == "short-lived"  # still on file until revoked
    assert store.refusal_reason(short) == "expired token"
    assert store.refusal_reason("cmx_other") == "unknown or revoked token" and store.refusal_reason("") == "no bearer token"
    assert [e.name for e in store.usable()] == ["forever"]
    clock.now = T0 + timedelta(days=3650)
    assert store.lookup(forever).name == "forever"


def test_expiry_days_bounds(settings):
    assert [expiry_days(v) for v in (0, 1, 3650, "0", " 30 ")] == [0, 1, 3650, 0, 30]
    for bad in (-1, 3651, "-1", "3651", "abc", "1.5", "", 2.0, True, None):
        with pytest.raises(InputError) as exc:
            expiry_days(bad)
        assert exc.value.code == "bad-token-expiry" and "0 to 3650" in exc.value.message and "--expires-days" in exc.value.hint
    with pytest.raises(InputError):
        TokenStore(settings).create("x", expires_days=4000)
    assert not TokenStore(settings).path.exists()  # nothing written for a refused create

    refused = _cli("mcp", "token", "create", "bot", "--expires-days", "-5", settings=settings)
    assert refused.returncode == 2 and "InputError[bad-token-expiry]" in refused.stderr and "hint:" in refused.stderr


def test_list_shows_expiry_and_legacy_entries_never_expire(settings):
    store = TokenStore(settings, now=Clock(datetime.now(UTC) - timedelta(days=30)))
    store.create("old-bot", expires_days=7)
    store.create("new-bot", expires_days=0)
    legacy = "cmx_" + "l" * 43
    _rewrite(store, lambda tokens: tokens.append({"name": "legacy-bot", "sha256": token_digest(legacy),
                                                  "created_at": "2024-05-01T08:00:00+00:00"}))
    assert TokenStore(settings).lookup(legacy).name == "legacy-bot"  # an entry from before expiry existed

    fresh = _cli("mcp", "token", "create", "ci-bot", settings=settings)
    assert fresh.returncode == 0 and "expires 20" in fresh.stderr
    created = {e.name: e for e in TokenStore(settings).list()}["ci-bot"]
    made, ends = datetime.fromisoformat(created.created_at), datetime.fromisoformat(created.expires_at)
    assert ends - made == timedelta(days=90)  # the default

    listing = _cli("mcp", "token", "list", settings=settings)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[1]: line for line in listing.stdout.splitlines() if line.startswith("│")}
    assert "expires" in listing.stdout
    assert "never" in rows["legacy-bot"] and "never" in rows["new-bot"]
    assert created.expires_at in rows["ci-bot"] and "expired" not in rows["ci-bot"]
    old = {e.name: e for e in TokenStore(settings).list()}["old-bot"]
    assert f"{old.expires_at} expired" in rows["old-bot"]


def test_http_refuses_expired_token_with_401_and_audits_why(settings):
    from starlette.testclient import TestClient

    from cardiomics.mcp_server import http_app

    store = TokenStore(settings)
    short = store.create("short-lived", expires_days=1)
    stale = TokenStore(settings, now=Clock(datetime.now(UTC) - timedelta(days=10))).create("stale", expires_days=1)
    legacy = "cmx_" + "k" * 43
    _rewrite(store, lambda tokens: tokens.append({"name": "legacy", "sha256": token_digest(legacy),
                                                  "created_at": "2024-05-01T08:00:00+00:00"}))

    def initialize(client, token: str | None):
        headers = {**MCP_HEADERS, **({"authorization": f"Bearer {token}"} if token else {})}
        return client.post("/mcp", json=INIT, headers=headers)

    with TestClient(http_app(settings), base_url="http://127.0.0.1") as client:
        assert initialize(client, short).status_code == 200
        assert initialize(client, legacy).status_code == 200
        unknown, expired = initialize(client, "cmx_not-a-token"), initialize(client, stale)
        assert unknown.status_code == expired.status_code == 401
        assert expired.headers["www-authenticate"] == unknown.headers["www-authenticate"]  # no hint that it once was valid

        # a day later, as far as the token file says: the same token is now refused
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="seconds")
        _rewrite(store, lambda tokens: next(t for t in tokens if t["name"] == "short-lived").update(expires_at=past))
        assert initialize(client, short).status_code == 401
        assert initialize(client, None).status_code == 401

    (trail,) = sorted(settings.audit_dir.glob("mcp-*.jsonl"))
    assert verify_file(trail).ok
    refusals = [json.loads(line) for line in trail.read_text().splitlines()]
    assert all(r["event"] == "auth_refused" and r["status"] == 401 for r in refusals)
    assert [(r["reason"], r.get("token_sha256_prefix")) for r in refusals] == [
        ("unknown or revoked token", token_digest("cmx_not-a-token")[:12]),
        ("expired token", token_digest(stale)[:12]),
        ("expired token", token_digest(short)[:12]),
        ("no bearer token", None),
    ]


def test_server_refuses_to_start_when_every_token_expired(settings):
    past = Clock(datetime.now(UTC) - timedelta(days=10))
    TokenStore(settings, now=past).create("stale", expires_days=1)
    started = _cli("mcp", "--http", "--port", "1", settings=settings)
    assert started.returncode == 2 and "every MCP token has expired" in started.stderr


def test_server_start_names_tokens_expiring_within_a_week(settings):
    from rich.console import Console

    from cardiomics.mcp_cli import _warn_expiring

    clock = Clock(T0)
    store = TokenStore(settings, now=clock)
    store.create("soon", expires_days=3)
    store.create("later", expires_days=30)
    store.create("forever", expires_days=0)
    console = Console(record=True, width=200)
    _warn_expiring(store, console)
    text = console.export_text()
    assert "token soon expires 2030-01-04T12:00:00+00:00" in text and "later" not in text and "forever" not in text
    clock.now = T0 + timedelta(days=24)  # "later" now has 6 days left; "soon" has expired and is not named again
    console = Console(record=True, width=200)
    _warn_expiring(store, console)
    text = console.export_text()
    assert "token later expires" in text and "soon" not in text


def test_token_create_and_revoke_are_audited_without_the_token(settings):
    """One access line per created or revoked token; a duplicate or unknown name writes none; no token or hash in the trail."""
    import hashlib

    import structlog
    from typer.testing import CliRunner

    from cardiomics.access import os_user
    from cardiomics.audit import verify_dir
    from cardiomics.cli import app

    runner = CliRunner()
    saved = structlog.get_config()
    try:
        created = runner.invoke(app, ["mcp", "token", "create", "lab-agent", "--expires-days", "30"])
        duplicate = runner.invoke(app, ["mcp", "token", "create", "lab-agent"])
        forever = runner.invoke(app, ["mcp", "token", "create", "ci-bot", "--expires-days", "0"])
        unknown = runner.invoke(app, ["mcp", "token", "revoke", "nobody"])
        revoked = runner.invoke(app, ["mcp", "token", "revoke", "lab-agent"])
    finally:
        structlog.configure(**saved)  # the CLI configures logging for the process
    assert created.exit_code == forever.exit_code == revoked.exit_code == 0, created.output
    assert duplicate.exit_code == unknown.exit_code == 2
    token = created.stdout.strip()
    assert token.startswith("cmx_")

    lines = access_lines(settings.audit_dir)
    assert [(r["event"], r["name"], r["actor"]) for r in lines] == [
        ("mcp_token_created", "lab-agent", os_user()),
        ("mcp_token_created", "ci-bot", os_user()),
        ("mcp_token_revoked", "lab-agent", os_user()),
    ]
    made, ends = datetime.fromisoformat(lines[0]["ts"]), datetime.fromisoformat(lines[0]["expires_at"])
    assert timedelta(days=30) - timedelta(minutes=1) < ends - made <= timedelta(days=30)
    assert lines[1]["expires_at"] is None and "expires_at" not in lines[2]
    (result,) = verify_dir(settings.audit_dir)
    assert result.ok and result.lines == 3
    text = next(settings.audit_dir.glob("access-*.jsonl")).read_text()
    for secret in (token, token_digest(token), hashlib.sha256(token.encode()).hexdigest(), token_digest(token)[:12]):
        assert secret not in text
    assert [e.name for e in TokenStore(settings).list()] == ["ci-bot"]


def test_a_token_grant_that_cannot_be_audited_is_undone_a_revocation_kept(settings, tmp_path):
    from cardiomics.errors import AuditError

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # the trail cannot be created under a file
    unaudited = TokenStore(settings.model_copy(update={"audit_dir": blocked}))
    with pytest.raises(AuditError) as exc:
        unaudited.create("first")
    assert exc.value.code == "access-not-audited" and "undone" in exc.value.message and str(blocked) in exc.value.hint
    assert not unaudited.path.exists()

    kept = TokenStore(settings).create("kept")
    leaked = TokenStore(settings).create("leaked")
    before = unaudited.path.read_bytes()
    with pytest.raises(AuditError):
        unaudited.create("second")
    assert unaudited.path.read_bytes() == before
    # a revocation is not undone because the trail failed: the leaked token stops working all the same
    with pytest.raises(AuditError) as exc:
        unaudited.revoke("leaked")
    assert "withdrawn all the same" in exc.value.message
    assert TokenStore(settings).lookup(leaked) is None
    assert TokenStore(settings).lookup(kept).name == "kept"
    assert [r["event"] for r in access_lines(settings.audit_dir)] == ["mcp_token_created", "mcp_token_created"]


def test_actor_falls_back_to_the_uid(monkeypatch):
    import getpass

    from cardiomics.access import os_user

    def no_name() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(getpass, "getuser", no_name)
    assert os_user() == f"uid:{os.getuid()}"


def test_token_file_is_owner_only_and_ignores_a_planted_temporary_file(settings, tmp_path):
    """The file is 0600 whatever the umask, and a file or link planted where a writer once put its
    temporary file is neither written through nor reused."""
    import stat

    store = TokenStore(settings)
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    settings.home.mkdir(parents=True, exist_ok=True)
    link = store.path.with_name(f".{store.path.name}.{os.getpid()}.tmp")
    link.symlink_to(target)
    old = os.umask(0)
    try:
        store.create("lab-agent")
    finally:
        os.umask(old)
    assert target.read_text() == "untouched"
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600 and not store.path.is_symlink()
    os.chmod(store.path, 0o644)
    store.revoke("lab-agent")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600  # a rewrite is owner-only again
    assert sorted(p.name for p in settings.home.iterdir() if p.name.endswith(".tmp")) == [link.name]
