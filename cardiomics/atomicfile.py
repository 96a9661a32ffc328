"""Write a file whole or not at all: one writer for every file cardiomics publishes under a name.

A temporary file beside the target (a unique name, opened with ``O_EXCL``: never another writer's
file, a leftover of a crash or a planted symlink) receives the bytes, is fsynced, and is renamed over
the target; the folder is fsynced so the new name survives a crash as well. Readers see the old file
or the new one, never a part. Threads and processes writing the same name at once each publish a
complete file, and the last rename wins.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

log = structlog.get_logger()


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes | str, *, mode: int | None = None, keep_permissions: bool = False,
                 replace: bool = True) -> Path:
    """Publish ``data`` (text is written as UTF-8) as ``path``; returns the path.

    ``mode``: the file's permission bits, set exactly (the umask does not alter them); by default a
    new file gets 0666 less the umask, like any file. ``keep_permissions``: a file being replaced
    keeps its mode (its owner may have tightened it) and its owner and group, where this process
    may set them (an administrator running a command as root must not leave a service's file to
    root). ``replace=False``: never overwrite; if ``path`` exists, raise ``FileExistsError`` and
    leave it as it is (two first writers: exactly one wins).
    """
    body = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path, mode=mode, keep_permissions=keep_permissions, replace=replace) as tmp:
        with open(tmp, "r+b") as fh:
            fh.write(body)
    return Path(path)


@contextmanager
def replacing(path: str | Path, *, mode: int | None = None, keep_permissions: bool = False,
              replace: bool = True) -> Iterator[Path]:
    """A temporary path for a writer that needs a file name (nibabel, pyarrow); when the block ends
    without an error, the file written there is fsynced and published as ``path``, as ``write_atomic``
    does. An error in the block leaves ``path`` as it was and removes the temporary file.

    The temporary name keeps the target's suffixes (``.nii.gz`` stays ``.nii.gz``), since writers
    choose the format from them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner: tuple[int, int] | None = None
    if keep_permissions:
        try:
            st = os.stat(path)
            mode, owner = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
        except FileNotFoundError:
            pass
    suffixes = "".join(path.suffixes)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffixes}")
    # created owner-only, so the bytes are never readable by others before the mode is set
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                _chown(fd, owner, path)
            os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)  # after chown, which may clear set-id bits
            os.fsync(fd)  # the rename must not publish an empty file after a crash
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def _publish_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless that name exists (``FileExistsError``).

    A hard link does both in one step. File systems without hard links (some network shares) get
    a check then a rename: two writers in the same instant could then both succeed, the last one
    winning, which is logged.
    """
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        log.warning("no hard links here: a new file is published by rename", path=str(path))
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "file exists", str(path))
    os.replace(tmp, path)


def _chown(fd: int, owner: tuple[int, int], path: Path) -> None:
    try:
        os.fchown(fd, *owner)
    except PermissionError:
        try:
            os.fchown(fd, -1, owner[1])  # a member of the file's group may keep at least the group
        except PermissionError:
            pass
        log.warning("replaced file changes owner", path=str(path), uid=owner[0], gid=owner[1],
                    hint="run the command as the file's owner (or as root) to keep it readable by the service that owns it")


def _umask() -> int:
    """The process umask, read from /proc where it can be (``os.umask`` can only be read by setting it,
    which would race other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022
