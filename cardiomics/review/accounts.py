"""Local reviewer accounts: names with scrypt password hashes in ``<CARDIOMICS_HOME>/reviewers.json``.

Why local accounts: a decision in the audit trail must name a person who proved who they are;
a free-text name typed into a form proves nothing. Passwords are never stored, only a salted
scrypt digest, and the file is written atomically and readable by its owner only.

Given an audit folder, every change (an account added, removed or given a new password) writes one
line to the daily ``access-YYYYMMDD`` trail, shared with MCP tokens: the reviewer's name and the
operating-system user who made the change, never a password or its digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cardiomics.access import record_access_change, restorer
from cardiomics.atomicfile import write_atomic
from cardiomics.errors import InputError, NotFoundError
from cardiomics.filelock import exclusive

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
# scrypt cost: ~50 ms on one core, 16 MiB of memory; stored per user so it can be raised later
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def _digest(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


class Accounts:
    """The reviewers file: add or remove a user, check a password."""

    def __init__(self, home: str | Path, *, audit_dir: str | Path | None = None) -> None:
        self.path = Path(home) / "reviewers.json"
        # where changes are recorded; None (a reader such as the review app) changes nothing it must audit
        self.audit_dir = None if audit_dir is None else Path(audit_dir)
        # (stat key, users): every authenticated request asks for an epoch, so the file is parsed
        # again only when it changes; _save replaces it, which changes its inode and times
        self._cache: tuple[tuple[int, ...], dict[str, dict]] | None = None

    def _load(self) -> dict[str, dict]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._cache
        if cached is not None and cached[0] == key:
            return cached[1]
        users = json.loads(self.path.read_text(encoding="utf-8")).get("users", {})
        self._cache = (key, users)
        return users

    def _save(self, users: dict[str, dict]) -> None:
        """Replace the file whole (``write_atomic``).

        A new file is 0600; a rewrite keeps the mode the file had (its owner may have tightened it
        or let the server's group read it) and its owner (an administrator running ``add-user`` as
        root leaves the file to the review server's user). Both in one call: deciding "new or not" here first would
        race a file removed in between, which would then get the umask's mode.
        """
        write_atomic(self.path, json.dumps({"users": users}, indent=2, sort_keys=True), mode=0o600, keep_permissions=True)

    def _audit(self, event: str, name: str, undo: Callable[[], None] | None) -> None:
        """The access-trail line of a change just saved; called under the accounts lock. ``undo`` (a
        grant's) puts the file back if the line cannot be written; None keeps the change."""
        if self.audit_dir is not None:
            record_access_change(self.audit_dir, event, name, undo=undo)

    def names(self) -> list[str]:
        return sorted(self._load())

    def add(self, name: str, password: str, *, replace: bool = False) -> None:
        if not NAME.match(name):
            raise InputError("bad-reviewer-name", f"reviewer name {name!r} is not allowed",
                             hint="use letters, digits and . _ @ - (at most 64 characters)")
        if len(password) < MIN_PASSWORD:
            raise InputError("weak-password", f"the password must have at least {MIN_PASSWORD} characters")
        salt = secrets.token_bytes(16)
        record = {"salt": salt.hex(), "scrypt": dict(SCRYPT), "hash": _digest(password, salt, **SCRYPT).hex(),
                  "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        with exclusive(self.path.with_name(".reviewers.lock")):  # read-change-write: two commands at once both land
            before = self._load()
            if name in before and not replace:
                raise InputError("reviewer-exists", f"reviewer {name} already exists", hint="pass --replace to set a new password")
            # only a new account is undone if its line cannot be written: a new password (the old one may
            # have leaked) stays in place
            undo = None if name in before else restorer(self.path)
            self._save({**before, name: record})  # a new dict: the cached one stays what the file held
            self._audit("reviewer_password_reset" if name in before else "reviewer_added", name, undo)

    def require(self, name: str) -> None:
        """Raise NotFoundError unless the reviewer exists."""
        if name not in self._load():
            raise NotFoundError("unknown-reviewer", f"no reviewer {name} in {self.path}",
                                hint="list the reviewer accounts with `cardiomics review users`")

    def remove(self, name: str) -> None:
        """Delete the account; its sessions end at their next request (its epoch becomes None)."""
        with exclusive(self.path.with_name(".reviewers.lock")):
            self.require(name)
            before = self._load()
            self._save({k: v for k, v in before.items() if k != name})  # a new dict: the cached one is kept intact
            self._audit("reviewer_removed", name, undo=None)

    def epoch(self, name: str) -> str | None:
        """A short fingerprint of the user's password record, or None for no such user.

        Sessions carry it: a new password (``add --replace``) or removing the user changes it, and
        sessions issued before no longer authenticate.
        """
        user = self._load().get(name)
        if user is None:
            return None
        return hashlib.sha256(json.dumps(user, sort_keys=True).encode()).hexdigest()[:16]

    def check(self, name: str, password: str) -> bool:
        """True when the password matches; the same work is done for an unknown name (no timing oracle)."""
        user = self._load().get(name)
        if user is None:
            _digest(password, b"\0" * 16, **SCRYPT)
            return False
        got = _digest(password, bytes.fromhex(user["salt"]), **user["scrypt"])
        return hmac.compare_digest(got, bytes.fromhex(user["hash"]))
