"""Signed session cookies and per-session CSRF tokens, from a secret kept in CARDIOMICS_HOME.

Why not a server-side session table: the app may restart between a reviewer opening a page and
deciding; an HMAC-signed cookie survives that without state, and the secret never leaves the home
directory. Every visitor gets a session (anonymous until login) so the login form has a CSRF token too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cardiomics.errors import InputError
from cardiomics.tools.store import write_secret

COOKIE = "cardiomics_review"
MAX_AGE_S = 12 * 3600
SECRET_FILE = "review_secret.key"
SECRET_BYTES = 32


def load_secret(home: str | Path) -> bytes:
    """The signing key; created (0600) on first use, refused unless it is exactly ``SECRET_BYTES`` long.

    A short key would make every cookie forgeable, so a damaged key file stops the app rather than
    being used.
    """
    path = Path(home) / SECRET_FILE
    if not path.exists():
        write_secret(path, SECRET_BYTES)
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise InputError("bad-session-key", f"the session key {path} holds {len(secret)} bytes, not {SECRET_BYTES}",
                         hint=f"delete {path} and start again to make a new key (everyone is logged out)")
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """``epoch`` names the password record the user logged in with: a new password or a removed
    account makes it stale, which logs that user's existing sessions out (see ``Accounts.epoch``)."""

    csrf: str
    user: str | None = None
    issued: float = 0.0
    epoch: str | None = None

    @classmethod
    def new(cls, user: str | None = None, epoch: str | None = None) -> Session:
        return cls(csrf=secrets.token_urlsafe(32), user=user, issued=time.time(), epoch=epoch)


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"cardiomics-review-session|" + secret).digest()

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def dump(self, session: Session) -> str:
        body = _b64(json.dumps({"c": session.csrf, "u": session.user, "t": round(session.issued),
                                "e": session.epoch}).encode())
        return f"{body}.{self._mac(body)}"

    def load(self, cookie: str | None) -> Session | None:
        """The session in a cookie, or None if absent, forged, malformed or expired."""
        if not cookie or "." not in cookie:
            return None
        body, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            data = json.loads(_unb64(body))
        except (ValueError, UnicodeDecodeError):
            return None
        if time.time() - float(data.get("t", 0)) > MAX_AGE_S:
            return None
        return Session(csrf=str(data["c"]), user=data.get("u"), issued=float(data["t"]), epoch=data.get("e"))


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return bool(session and token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())
