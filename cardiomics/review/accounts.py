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
import stat
from datetime import UTC, datetime
from pathlib import Path

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

    def __init__(self, home: str | Path) -> None:
        self.path = Path(home) / "reviewers.json"
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
        """Replace the file whole: a fresh temporary file, fsynced, renamed over it.

        A new file is 0600; a rewrite keeps the mode the file had (its owner may have tightened it
        or let the server's group read it), set with fchmod, which the umask does not alter.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
        except FileNotFoundError:
            mode = 0o600
        # a unique name opened with O_EXCL: never a leftover file from a crash (with its old mode) nor a symlink
        tmp = self.path.with_name(f".reviewers.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), mode)
                json.dump({"users": users}, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())  # the rename must not publish an empty file after a crash
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a crash too
        finally:
            os.close(folder)

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
            users = dict(self._load())  # a copy: the cached dict stays what the file holds
            if name in users and not replace:
                raise InputError("reviewer-exists", f"reviewer {name} already exists", hint="pass --replace to set a new password")
            users[name] = record
            self._save(users)

    def require(self, name: str) -> None:
        """Raise NotFoundError unless the reviewer exists."""
        if name not in self._load():
            raise NotFoundError("unknown-reviewer", f"no reviewer {name} in {self.path}",
                                hint="list the reviewer accounts with `cardiomics review users`")

    def remove(self, name: str) -> None:
        """Delete the account; its sessions end at their next request (its epoch becomes None)."""
        with exclusive(self.path.with_name(".reviewers.lock")):
            self.require(name)
            users = dict(self._load())  # a copy: the cached dict stays what the file holds
            del users[name]
            self._save(users)

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
