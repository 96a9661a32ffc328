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
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

COOKIE = "cardiomics_review"
MAX_AGE_S = 12 * 3600


def load_secret(home: str | Path) -> bytes:
    """The signing key; created (0600) on first use."""
    path = Path(home) / "review_secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    csrf: str
    user: str | None = None
    issued: float = 0.0

    @classmethod
    def new(cls, user: str | None = None) -> Session:
        return cls(csrf=secrets.token_urlsafe(32), user=user, issued=time.time())


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"cardiomics-review-session|" + secret).digest()

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def dump(self, session: Session) -> str:
        body = _b64(json.dumps({"c": session.csrf, "u": session.user, "t": round(session.issued)}).encode())
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
        return Session(csrf=str(data["c"]), user=data.get("u"), issued=float(data["t"]))


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return bool(session and token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())
