"""The access trail: who granted or withdrew access to sign reports (reviewer accounts) or to call
the MCP server (tokens), and when. One daily hash-chained trail, ``access-YYYYMMDD``, in the audit
folder; never a password, a token or a digest of either.

A change is written to its file first, then to the trail, under the lock that serialised the file
change, so the trail lists changes in the order the file went through them. When the line cannot
be written, a grant (an account or token added) is undone, while a withdrawal (an account or token
removed, a password replaced, perhaps because it leaked) stays in place: a failing audit folder
must never keep a door open that was being closed. Either way the command fails and says which.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from cardiomics.atomicfile import write_atomic
from cardiomics.audit import AuditTrail
from cardiomics.errors import AuditError

log = structlog.get_logger()


def access_trail(audit_dir: str | Path) -> AuditTrail:
    """Today's (UTC) trail of changes of access."""
    return AuditTrail(audit_dir, f"access-{datetime.now(UTC):%Y%m%d}")


def os_user() -> str:
    """The operating-system user running this process, the actor of an access change.

    ``getpass.getuser`` reads LOGNAME/USER first, which the user can set, so the access line also
    carries the numeric uid; without any name (a container's arbitrary uid) the uid stands in.
    """
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):
        return f"uid:{os.getuid()}"


def restorer(path: Path) -> Callable[[], None]:
    """An undo for a change about to be made to ``path``: puts back the bytes it holds now (its mode
    and owner kept), or removes it if it does not exist yet. Take it under the change's lock."""
    before = path.read_bytes() if path.exists() else None

    def undo() -> None:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, before, keep_permissions=True)

    return undo


def record_access_change(audit_dir: str | Path, event: str, name: str, *, undo: Callable[[], None] | None,
                         **fields: Any) -> None:
    """Write the trail line of a change just made to an accounts or token file.

    ``undo``: for a grant, puts the file back if the line cannot be written; None for a withdrawal,
    which is kept. ``fields`` must hold nothing secret. Raises AuditError when the line is not written.
    """
    try:
        access_trail(audit_dir).append(event, os_user(), name=name, os_uid=os.getuid(), **fields)
        return
    except Exception as exc:
        log.error("access change not audited", change=event, name=name, exc_info=True)
        why = type(exc).__name__
    hint = (f"check that the audit folder {audit_dir} (CARDIOMICS_AUDIT_DIR) is a folder this user can write to, "
            "then run the command again")
    if undo is None:
        raise AuditError("access-not-audited", f"{event} of {name!r} is done, but it could not be written to the audit "
                         f"trail ({why}): access was withdrawn all the same", hint=hint)
    try:
        undo()
    except Exception:
        log.error("access change not undone", change=event, name=name, exc_info=True)
        raise AuditError("access-not-audited", f"{event} of {name!r} is in place but could not be written to the audit "
                         f"trail ({why}), nor undone", hint=hint) from None
    raise AuditError("access-not-audited", f"{event} of {name!r} could not be written to the audit trail ({why}), "
                     "so it was undone", hint=hint)
