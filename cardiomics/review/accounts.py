"""Local reviewer accounts: names with scrypt password hashes in ``<CARDIOMICS_HOME>/reviewers.json``.

Why local accounts: a decision in the audit trail must name a person who proved who they are;
a free-text name typed into a form proves nothing. Passwords are never stored, only a salted
scrypt digest, and the file is written atomically and readable by its owner only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from cardiomics.errors import InputError, NotFoundError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
# scrypt cost: ~50 ms on one core, 16 MiB of memory; stored per user so it can be raised later
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def _digest(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


class Accounts:
    """The reviewers file: add a user, check a password."""

    def __init__(self, home: str | Path) -> None:
        self.path = Path(home) / "reviewers.json"

    def _load(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text(encoding="utf-8")).get("users", {})

    def _save(self, users: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".reviewers.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"users": users}, fh, indent=2, sort_keys=True)
        os.replace(tmp, self.path)

    def names(self) -> list[str]:
        return sorted(self._load())

    def add(self, name: str, password: str, *, replace: bool = False) -> None:
        if not NAME.match(name):
            raise InputError("bad-reviewer-name", f"reviewer name {name!r} is not allowed",
                             hint="use letters, digits and . _ @ - (at most 64 characters)")
        if len(password) < MIN_PASSWORD:
            raise InputError("weak-password", f"the password must have at least {MIN_PASSWORD} characters")
        users = self._load()
        if name in users and not replace:
            raise InputError("reviewer-exists", f"reviewer {name} already exists", hint="pass --replace to set a new password")
        salt = secrets.token_bytes(16)
        users[name] = {"salt": salt.hex(), "scrypt": dict(SCRYPT),
                       "hash": _digest(password, salt, **SCRYPT).hex(),
                       "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        self._save(users)

    def remove(self, name: str) -> None:
        users = self._load()
        if name not in users:
            raise NotFoundError("unknown-reviewer", f"no reviewer {name}")
        del users[name]
        self._save(users)

    def check(self, name: str, password: str) -> bool:
        """True when the password matches; the same work is done for an unknown name (no timing oracle)."""
        user = self._load().get(name)
        if user is None:
            _digest(password, b"\0" * 16, **SCRYPT)
            return False
        got = _digest(password, bytes.fromhex(user["salt"]), **user["scrypt"])
        return hmac.compare_digest(got, bytes.fromhex(user["hash"]))
