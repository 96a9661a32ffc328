"""Bearer tokens for the MCP HTTP server: created once, stored only as hashes, checked per request.

Why hashes: the token file sits in the data directory, which backups and colleagues may read; a
SHA-256 of a 256-bit random token cannot be turned back into a usable token, so the file grants
nothing. The plaintext is shown once, when it is created. A token has a name (who or what holds
it); that name is what the audit trail records for every call made with it. Revoking removes the
entry and takes effect on the next request (the file is re-read when it changes).

A token expires (90 days by default, 0 days for never): a leaked or forgotten token stops working
on its own. Entries written before expiry existed have no ``expires_at`` and never expire.

Creating and revoking a token are changes of access: each writes one line to the daily
``access-YYYYMMDD`` trail (shared with reviewer accounts, see :mod:`cardiomics.access`) with the
token's name, its expiry and the operating-system user who made the change, never the token or its hash.

Refused HTTP requests (no token, unknown or revoked token, expired token) are audited too, by a
small ASGI middleware, so an attacker probing the server leaves a trace in the same hash-chained trail.
Those lines are written off the event loop and rate-limited per client address: a flood of bad
requests can neither stall the server nor bury the trail, and what was not written is counted on a
later line.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
import structlog

from cardiomics.access import record_access_change, restorer
from cardiomics.atomicfile import write_atomic
from cardiomics.audit import AuditTrail
from cardiomics.config import Settings
from cardiomics.errors import InputError, NotFoundError, PolicyError
from cardiomics.filelock import exclusive
from cardiomics.hashing import sha256_text

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "cmx_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_EXPIRY_DAYS = 90
MAX_EXPIRY_DAYS = 3650
REASON_NO_TOKEN = "no bearer token"
REASON_UNKNOWN = "unknown or revoked token"
REASON_EXPIRED = "expired token"
REASON_FORBIDDEN = "valid token, request forbidden"
# refusal lines: at most this many per client address, and in all, per window; the rest are counted
REFUSAL_LINES_PER_CLIENT = 20
REFUSAL_LINES_TOTAL = 200
REFUSAL_WINDOW_S = 60.0
# client addresses whose counts are kept; the least recently refused one is dropped beyond this
MAX_TRACKED_CLIENTS = 1024
# the shutdown line names at most this many addresses (its total counts them all)
MAX_LISTED_CLIENTS = 50
Clock = Callable[[], datetime]
Seconds = Callable[[], float]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _parse_utc(text: str) -> datetime:
    """An ISO time from the token file; one without a zone is read as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def expiry_days(value: object) -> int:
    """``value`` as a whole number of days in 0..MAX_EXPIRY_DAYS (0: no expiry), else an InputError."""
    days: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        days = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,5}\s*", value):
        days = int(value)
    if days is None or not 0 <= days <= MAX_EXPIRY_DAYS:
        raise InputError("bad-token-expiry",
                         f"token expiry must be a whole number of days from 0 to {MAX_EXPIRY_DAYS}, not {str(value)[:40]!r}",
                         hint=f"pass --expires-days N with N in 0..{MAX_EXPIRY_DAYS}; 0 means the token never expires "
                              f"(the default is {DEFAULT_EXPIRY_DAYS})")
    return days


def mcp_trail(settings: Settings) -> AuditTrail:
    """The daily trail where MCP calls and refusals are recorded (one file per UTC day)."""
    return AuditTrail(settings.audit_dir, f"mcp-{utc_now():%Y%m%d}")


def token_digest(token: str) -> str:
    return sha256_text(token)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    sha256: str
    created_at: str
    expires_at: str | None = None  # UTC ISO seconds; None: never (0 days, or an entry from before expiry existed)

    @classmethod
    def from_json(cls, e: dict[str, Any]) -> TokenEntry:
        entry = cls(e["name"], e["sha256"], e["created_at"], e.get("expires_at"))
        entry.expiry()  # a malformed time fails here, when the file is read, not on some later request
        return entry

    def expiry(self) -> datetime | None:
        return None if self.expires_at is None else _parse_utc(self.expires_at)

    def expires_epoch(self) -> int | None:
        """Expiry as epoch seconds, the form fastmcp's ``AccessToken.expires_at`` takes."""
        expiry = self.expiry()
        return None if expiry is None else int(expiry.timestamp())

    def expired(self, now: datetime) -> bool:
        expiry = self.expiry()
        return expiry is not None and expiry <= now


class TokenStore:
    """``<CARDIOMICS_HOME>/mcp_tokens.json``: name, SHA-256, creation and expiry time of each token.

    ``now`` is the clock expiry is judged by (UTC); tests pass their own.
    """

    def __init__(self, settings: Settings, *, now: Clock = utc_now) -> None:
        self.path = settings.home / "mcp_tokens.json"
        self.audit_dir = settings.audit_dir
        self.now = now
        self._cache: tuple[tuple[int, int, int], dict[str, TokenEntry]] | None = None

    # -- file access -----------------------------------------------------------------------
    def _read(self) -> dict[str, TokenEntry]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {e["name"]: TokenEntry.from_json(e) for e in data.get("tokens", [])}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise PolicyError("token-file-corrupt", f"{self.path} cannot be read as a token list ({type(exc).__name__})",
                              hint="revoke by deleting the file and create new tokens with `cardiomics mcp token create NAME`") from None

    def _write(self, entries: dict[str, TokenEntry]) -> None:
        body = {"tokens": [e.__dict__ for e in sorted(entries.values(), key=lambda e: e.name)]}
        write_atomic(self.path, json.dumps(body, indent=2), mode=0o600)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write of the token file between processes (released when the file closes)."""
        with exclusive(self.path.with_name(".mcp_tokens.lock")):
            yield

    # -- operations --------------------------------------------------------------------------
    def create(self, name: str, expires_days: int = DEFAULT_EXPIRY_DAYS) -> str:
        """A new token for ``name`` valid ``expires_days`` days (0: no expiry); returns the plaintext (shown once, never stored)."""
        if not _NAME.match(name):
            raise InputError("bad-token-name", f"token name {name[:80]!r} is not allowed",
                             hint="1-64 characters: letters, digits and _ . @ -, starting with a letter or digit")
        days = expiry_days(expires_days)
        with self._locked():
            before = self._read()
            if name in before:
                raise PolicyError("token-exists", f"a token named {name!r} exists",
                                  hint=f"revoke it first: `cardiomics mcp token revoke {name}`")
            undo = restorer(self.path)
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            created = self.now().replace(microsecond=0)
            expires = _iso(created + timedelta(days=days)) if days else None
            self._write({**before, name: TokenEntry(name, token_digest(token), _iso(created), expires)})
            record_access_change(self.audit_dir, "mcp_token_created", name, expires_at=expires, undo=undo)
        return token

    def revoke(self, name: str) -> None:
        with self._locked():
            before = self._read()
            if name not in before:
                raise NotFoundError("unknown-token", f"no token named {name[:80]!r}", hint="see `cardiomics mcp token list`")
            self._write({k: v for k, v in before.items() if k != name})
            record_access_change(self.audit_dir, "mcp_token_revoked", name, undo=None)  # a withdrawal is kept

    def list(self) -> list[TokenEntry]:
        return sorted(self._read().values(), key=lambda e: e.name)

    def usable(self) -> list[TokenEntry]:
        """The tokens that have not expired."""
        now = self.now()
        return [e for e in self.list() if not e.expired(now)]

    def find(self, token: str) -> TokenEntry | None:
        """The entry whose hash matches ``token``, expired or not (constant-time compare), re-reading the file when it changed."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        # the inode changes on every atomic rewrite, so an edit that keeps size and mtime tick is still seen
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, self._read())
        digest = token_digest(token)
        found = None
        for entry in self._cache[1].values():
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry that ``token`` authenticates: it matches and has not expired."""
        entry = self.find(token)
        if entry is None or entry.expired(self.now()):
            return None
        return entry

    def refusal_reason(self, token: str) -> str:
        """Why a request that presented ``token`` may have been refused, for the audit trail."""
        if not token:
            return REASON_NO_TOKEN
        entry = self.find(token)
        if entry is None:
            return REASON_UNKNOWN
        return REASON_EXPIRED if entry.expired(self.now()) else REASON_FORBIDDEN


def token_verifier(settings: Settings, *, store: TokenStore | None = None):
    """A fastmcp ``TokenVerifier`` backed by the token file; the token's name becomes ``client_id``.

    Expired tokens are refused here; the expiry is also handed to fastmcp (``expires_at``, epoch
    seconds), which refuses a token past it on its own clock as well.
    """
    from fastmcp.server.auth import AccessToken, TokenVerifier

    tokens = store or TokenStore(settings)

    class FileTokenVerifier(TokenVerifier):
        async def verify_token(self, token: str) -> AccessToken | None:
            entry = tokens.lookup(token)
            if entry is None:
                return None
            return AccessToken(token=token, client_id=entry.name, scopes=[], expires_at=entry.expires_epoch())

    return FileTokenVerifier()


@dataclass
class _ClientWindow:
    started: float
    written: int = 0
    suppressed: int = 0  # refusals not written since this address's last line


class RefusalLimiter:
    """Which refused requests get an audit line: a fixed window per client address and one over all.

    A refusal past either limit is counted against its address; the count is recorded on the next
    line written for that address (``suppressed_since_last``). Counts of addresses dropped from the
    table (beyond ``max_clients``) go on the next line written for any address
    (``suppressed_untracked``); what is still counted when the server stops is written by ``drain``.
    Runs on the event loop only, so it needs no lock.
    """

    def __init__(self, *, per_client: int = REFUSAL_LINES_PER_CLIENT, total: int = REFUSAL_LINES_TOTAL,
                 window_s: float = REFUSAL_WINDOW_S, max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Seconds = time.monotonic) -> None:
        self.per_client, self.total, self.window_s, self.max_clients = per_client, total, window_s, max_clients
        self.clock = clock
        self._clients: OrderedDict[str, _ClientWindow] = OrderedDict()
        self._all = _ClientWindow(clock())
        self._untracked = 0

    def admit(self, client: str) -> dict[str, int] | None:
        """The counts to record on this refusal's line, or None: not written, counted instead."""
        now = self.clock()
        if now - self._all.started >= self.window_s:
            self._all = _ClientWindow(now)
        window = self._clients.get(client)
        if window is None:
            window = self._clients[client] = _ClientWindow(now)
            while len(self._clients) > self.max_clients:
                _, dropped = self._clients.popitem(last=False)
                self._untracked += dropped.suppressed
        else:
            self._clients.move_to_end(client)
            if now - window.started >= self.window_s:
                window.started, window.written = now, 0
        if window.written >= self.per_client or self._all.written >= self.total:
            window.suppressed += 1
            return None
        window.written += 1
        self._all.written += 1
        counts: dict[str, int] = {}
        if window.suppressed:
            counts["suppressed_since_last"], window.suppressed = window.suppressed, 0
        if self._untracked:
            counts["suppressed_untracked"], self._untracked = self._untracked, 0
        return counts

    def drain(self) -> dict[str, Any] | None:
        """Every count not yet written (for one closing line), reset to zero; None when there is none."""
        pending = {c: w.suppressed for c, w in self._clients.items() if w.suppressed}
        total = sum(pending.values()) + self._untracked
        if not total:
            return None
        listed = dict(sorted(pending.items(), key=lambda kv: kv[1], reverse=True)[:MAX_LISTED_CLIENTS])
        fields: dict[str, Any] = {"suppressed": total, "by_client": listed}
        if self._untracked:
            fields["suppressed_untracked"] = self._untracked
        for window in self._clients.values():
            window.suppressed = 0
        self._untracked = 0
        return fields


class AuditRefusals:
    """ASGI middleware: HTTP requests answered 401/403 are written to the MCP audit trail.

    It records why (no bearer token, a token that matches none, an expired token), the method and
    path and the client address, and a 12-hex prefix of the presented token's hash (enough to
    correlate repeated attempts, useless for forging a token). It never records the token itself.

    A line is an fsynced write to the trail (and classifying the token reads the token file), so it
    is done in a worker thread, and the refusal is sent once it is on disk. ``RefusalLimiter`` caps
    the lines per client address and in all; refusals past the cap are counted and the count goes
    on a later line, or on an ``auth_refused_suppressed`` line when the server shuts down.
    """

    def __init__(self, app, settings: Settings, tokens: TokenStore | None = None,
                 limiter: RefusalLimiter | None = None) -> None:
        self.app = app
        self.settings = settings
        self.tokens = tokens or TokenStore(settings)
        self.limiter = limiter or RefusalLimiter()

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope.get("type") == "lifespan":
            await self.app(scope, self._on_shutdown(receive), send)
            return
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start" and message.get("status") in (401, 403):
                await self._refused(scope, int(message["status"]))
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _on_shutdown(self, receive):
        async def receive_wrapper() -> dict[str, Any]:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                pending = self.limiter.drain()
                if pending is not None:
                    await anyio.to_thread.run_sync(self._append, "auth_refused_suppressed", pending)
            return message

        return receive_wrapper

    async def _refused(self, scope: dict[str, Any], status: int) -> None:
        client = str((scope.get("client") or ("?", 0))[0])
        counts = self.limiter.admit(client)
        if counts is None:
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        presented = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        fields: dict[str, Any] = {"status": status, "method": scope.get("method", ""),
                                  "path": str(scope.get("path", ""))[:200], "client": client, **counts}
        await anyio.to_thread.run_sync(self._record, fields, presented)

    def _record(self, fields: dict[str, Any], presented: str) -> None:
        """Runs in a worker thread: classify the token and append the line."""
        fields = {**fields, "reason": self._reason(presented)}
        if presented:
            fields["token_sha256_prefix"] = token_digest(presented)[:12]
        self._append("auth_refused", fields)

    def _append(self, event: str, fields: dict[str, Any]) -> None:
        try:
            mcp_trail(self.settings).append(event, "unauthenticated", **fields)
        except Exception:  # a refusal must stay a refusal even if the trail cannot be written
            log.exception("could not audit a refused request")

    def _reason(self, presented: str) -> str:
        try:
            return self.tokens.refusal_reason(presented)
        except Exception:  # an unreadable token file must not stop the refusal being recorded
            log.exception("could not classify a refused token")
            return REASON_UNKNOWN if presented else REASON_NO_TOKEN
