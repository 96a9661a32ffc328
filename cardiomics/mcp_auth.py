"""Bearer tokens for the MCP HTTP server: created once, stored only as hashes, checked per request.

Why hashes: the token file sits in the data directory, which backups and colleagues may read; a
SHA-256 of a 256-bit random token cannot be turned back into a usable token, so the file grants
nothing. The plaintext is shown once, when it is created. A token has a name (who or what holds
it); that name is what the audit trail records for every call made with it. Revoking removes the
entry and takes effect on the next request (the file is re-read when it changes).

Refused HTTP requests (no token, unknown or revoked token) are audited too, by a small ASGI
middleware, so an attacker probing the server leaves a trace in the same hash-chained trail.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import structlog

from cardiomics.audit import AuditTrail
from cardiomics.config import Settings
from cardiomics.errors import InputError, NotFoundError, PolicyError
from cardiomics.hashing import sha256_text

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "cmx_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def mcp_trail(settings: Settings) -> AuditTrail:
    """The daily trail where MCP calls and refusals are recorded (one file per UTC day)."""
    return AuditTrail(settings.audit_dir, f"mcp-{datetime.now(timezone.utc):%Y%m%d}")


def token_digest(token: str) -> str:
    return sha256_text(token)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    sha256: str
    created_at: str


class TokenStore:
    """``<CARDIOMICS_HOME>/mcp_tokens.json``: name, SHA-256 and creation time of each token."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.home / "mcp_tokens.json"
        self._cache: tuple[float, int, dict[str, TokenEntry]] | None = None

    # -- file access -----------------------------------------------------------------------
    def _read(self) -> dict[str, TokenEntry]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {e["name"]: TokenEntry(e["name"], e["sha256"], e["created_at"]) for e in data.get("tokens", [])}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise PolicyError("token-file-corrupt", f"{self.path} cannot be read as a token list ({type(exc).__name__})",
                              hint="revoke by deleting the file and create new tokens with `cardiomics mcp token create NAME`") from None

    def _write(self, entries: dict[str, TokenEntry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"tokens": [e.__dict__ for e in sorted(entries.values(), key=lambda e: e.name)]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(body, fh, indent=2)
        os.replace(tmp, self.path)

    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path.with_name(".mcp_tokens.lock"), "w")
        fcntl.flock(fh, fcntl.LOCK_EX)
        return fh

    # -- operations --------------------------------------------------------------------------
    def create(self, name: str) -> str:
        """A new token for ``name``; returns the plaintext (shown once, never stored)."""
        if not _NAME.match(name):
            raise InputError("bad-token-name", f"token name {name[:80]!r} is not allowed",
                             hint="1-64 characters: letters, digits and _ . @ -, starting with a letter or digit")
        lock = self._locked()
        try:
            entries = self._read()
            if name in entries:
                raise PolicyError("token-exists", f"a token named {name!r} exists",
                                  hint=f"revoke it first: `cardiomics mcp token revoke {name}`")
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            entries[name] = TokenEntry(name, token_digest(token), datetime.now(timezone.utc).isoformat(timespec="seconds"))
            self._write(entries)
        finally:
            lock.close()
        return token

    def revoke(self, name: str) -> None:
        lock = self._locked()
        try:
            entries = self._read()
            if name not in entries:
                raise NotFoundError("unknown-token", f"no token named {name[:80]!r}", hint="see `cardiomics mcp token list`")
            del entries[name]
            self._write(entries)
        finally:
            lock.close()

    def list(self) -> list[TokenEntry]:
        return sorted(self._read().values(), key=lambda e: e.name)

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry whose hash matches ``token`` (constant-time compare), re-reading the file when it changed."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime, st.st_size)
        except FileNotFoundError:
            return None
        if self._cache is None or self._cache[:2] != stamp:
            self._cache = (*stamp, self._read())
        digest = token_digest(token)
        found = None
        for entry in self._cache[2].values():
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found


def token_verifier(settings: Settings):
    """A fastmcp ``TokenVerifier`` backed by the token file; the token's name becomes ``client_id``."""
    from fastmcp.server.auth import AccessToken, TokenVerifier

    store = TokenStore(settings)

    class FileTokenVerifier(TokenVerifier):
        async def verify_token(self, token: str) -> AccessToken | None:
            entry = store.lookup(token)
            if entry is None:
                return None
            return AccessToken(token=token, client_id=entry.name, scopes=[], expires_at=None)

    return FileTokenVerifier()


class AuditRefusals:
    """ASGI middleware: every HTTP request answered 401/403 is written to the MCP audit trail.

    It records why (no bearer token, or a token that matches none), the method and path and the
    client address, and a 12-hex prefix of the presented token's hash (enough to correlate
    repeated attempts, useless for forging a token). It never records the token itself.
    """

    def __init__(self, app, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start" and message.get("status") in (401, 403):
                self._record(scope, int(message["status"]))
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _record(self, scope: dict[str, Any], status: int) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        presented = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        reason = "no bearer token" if not presented else "unknown or revoked token"
        client = scope.get("client") or ("?", 0)
        fields: dict[str, Any] = {"status": status, "reason": reason, "method": scope.get("method", ""),
                                  "path": str(scope.get("path", ""))[:200], "client": str(client[0])}
        if presented:
            fields["token_sha256_prefix"] = token_digest(presented)[:12]
        try:
            mcp_trail(self.settings).append("auth_refused", "unauthenticated", **fields)
        except Exception:  # noqa: BLE001 - a refusal must stay a refusal even if the trail cannot be written
            log.error("could not audit a refused request", exc_info=True)
