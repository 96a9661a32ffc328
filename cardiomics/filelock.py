"""One exclusive, cross-process lock on a file for the length of a ``with`` block (``fcntl.flock``)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
