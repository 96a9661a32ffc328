"""One exclusive, cross-process lock on a file for the length of a ``with`` block (``fcntl.flock``)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


@contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock on ``path`` (created, with its folder, if absent).

    The lock file is never removed: removing it while another process waits on it would let a
    third process lock a new file of the same name. Closing the descriptor releases the lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def try_exclusive(path: str | Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` unless another holder has it: yields True when held, False
    (at once, without waiting) when it is held elsewhere.

    On a file system without locks (some NFS mounts) it yields True after a warning: the block runs
    unguarded rather than not at all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError as exc:
            log.warning("file lock unavailable: going on unguarded", lock=str(path), error=str(exc))
        yield True
    finally:
        os.close(fd)
