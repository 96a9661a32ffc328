"""Hash-chained audit trail: one JSON line per event in ``<audit_dir>/<run_id>.jsonl``.

Each line holds ``seq``, ``ts``, ``event``, ``actor``, ``prev_hash`` and ``hash`` (SHA-256 of the
line's canonical JSON without ``hash``). Editing, removing, inserting or reordering any line breaks
the chain at that line, and :func:`verify` names it. Lines are written by structlog's JSON renderer
under an exclusive file lock, so two processes (a CLI and a review page) append in one order.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from cardiomics.errors import AuditError, NotFoundError
from cardiomics.hashing import canonical_json, sha256_text

GENESIS = "0" * 64
_BLOCK = 8192
_RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def line_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return sha256_text(canonical_json(body))


class _Chain:
    """structlog processor: adds sequence number and hash chain to each event."""

    def __init__(self, seq: int, prev: str) -> None:
        self.seq, self.prev = seq, prev

    def __call__(self, _logger, _method, event_dict):
        event_dict["seq"] = self.seq
        event_dict["prev_hash"] = self.prev
        # canonical form: what JSONRenderer writes, re-parsed, must hash the same
        record = json.loads(canonical_json(event_dict))
        event_dict["hash"] = line_hash(record)
        return event_dict


def _line_start(fh, end: int) -> int:
    """Offset just after the last newline before ``end`` (0 if none), read backwards in blocks.

    Appends look only at the end of the file, so a day-long trail costs the same to extend as a new one.
    """
    pos = end
    while pos > 0:
        start = max(0, pos - _BLOCK)
        fh.seek(start)
        i = fh.read(pos - start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _tail(fh) -> tuple[int, str]:
    """Sequence number and hash of the last line of a trail whose last write is complete."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return 0, GENESIS
    start = _line_start(fh, end - 1)
    fh.seek(start)
    rec = json.loads(fh.read(end - start))
    return int(rec["seq"]), str(rec["hash"])


class AuditTrail:
    """Append-only trail for one run."""

    def __init__(self, audit_dir: str | Path, run_id: str) -> None:
        if not _RUN_ID.match(run_id):
            raise AuditError("bad-run-id", f"run id {run_id!r} has characters that cannot name a file")
        self.run_id = run_id
        self.path = Path(audit_dir) / f"{run_id}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, event: str, actor: str, *, once_key: str | None = None, **fields: Any) -> dict[str, Any]:
        """Write one event; returns the record as written (with seq and hash).

        With ``once_key``, nothing is written when an event with that key is already in the trail
        (checked under the lock): a graph node re-run after a crash or on resume repeats its work,
        and its events must not be logged twice.
        """
        with open(self.path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                if once_key is not None:
                    for rec in self.records():
                        if rec.get("once_key") == once_key:
                            return rec
                    fields["once_key"] = once_key
                torn = self._cut_torn_tail(fh)
                if torn is not None:
                    # a crash cut the last write short: keep a verifiable prefix and say so in the chain
                    self._write(fh, "audit_recovered", "system",
                                {"discarded_bytes": len(torn), "discarded_sha256": sha256_text(torn.decode("utf-8", "replace"))})
                line = self._write(fh, event, actor, fields)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return json.loads(line)

    @staticmethod
    def _cut_torn_tail(fh) -> bytes | None:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return None
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return None
        keep = _line_start(fh, end)
        fh.seek(keep)
        torn = fh.read()
        fh.truncate(keep)
        return torn

    def _write(self, fh, event: str, actor: str, fields: dict[str, Any]) -> str:
        seq, prev = _tail(fh)
        out: list[str] = []
        logger = structlog.wrap_logger(
            structlog.PrintLogger(file=_Collect(out)),
            # explicit: the CLI configures a level-filtering wrapper that would drop this line
            wrapper_class=structlog.BoundLogger,
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                _Chain(seq + 1, prev),
                structlog.processors.JSONRenderer(serializer=lambda o, **_: canonical_json(o)),
            ],
        )
        logger.msg(event, actor=actor, run_id=self.run_id, **fields)
        line = out[0].rstrip("\n") + "\n"
        fh.seek(0, os.SEEK_END)
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
        return line

    def append_once(self, once_key: str, event: str, actor: str, **fields: Any) -> dict[str, Any]:
        return self.append(event, actor, once_key=once_key, **fields)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8", errors="replace")
        complete = text[: text.rfind("\n") + 1]  # a torn last line is not a record
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


class _Collect:
    """File-like sink for structlog's PrintLogger that keeps the rendered line."""

    def __init__(self, out: list[str]) -> None:
        self.out = out

    def write(self, text: str) -> None:
        if text.strip():
            self.out.append(text)

    def flush(self) -> None:  # PrintLogger flushes after each line
        pass


@dataclass
class VerifyResult:
    run_id: str
    ok: bool
    lines: int
    first_bad_line: int | None = None
    reason: str = ""
    torn_tail: bool = False


def verify_file(path: str | Path) -> VerifyResult:
    """Recompute the chain; name the first line (1-based) that does not verify."""
    path = Path(path)
    run_id = path.stem
    if not path.exists():
        raise NotFoundError("unknown-run", f"no audit trail {path}", hint="list runs with `cardiomics runs`")
    data = path.read_bytes()
    raw_lines = data.split(b"\n")
    torn = bool(raw_lines and raw_lines[-1].strip())  # text after the last newline: a write cut short
    complete = raw_lines[:-1]
    prev, n = GENESIS, 0
    for i, raw in enumerate(complete, start=1):
        n = i
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return VerifyResult(run_id, False, i, i, "line is not valid JSON")
        if not isinstance(rec, dict) or "hash" not in rec:
            return VerifyResult(run_id, False, i, i, "line has no hash")
        if rec.get("seq") != i:
            return VerifyResult(run_id, False, i, i, f"sequence number {rec.get('seq')} where {i} was expected")
        if rec.get("prev_hash") != prev:
            return VerifyResult(run_id, False, i, i, "prev_hash does not match the previous line")
        if line_hash(rec) != rec["hash"]:
            return VerifyResult(run_id, False, i, i, "content does not match its hash (line edited)")
        prev = rec["hash"]
    if torn:
        return VerifyResult(run_id, False, n, n + 1, "last line was cut short (crash while writing); the lines before it verify", torn_tail=True)
    return VerifyResult(run_id, True, n)


def verify_dir(audit_dir: str | Path, run_id: str | None = None) -> list[VerifyResult]:
    audit_dir = Path(audit_dir)
    if run_id is not None:
        return [verify_file(audit_dir / f"{run_id}.jsonl")]
    return [verify_file(p) for p in sorted(audit_dir.glob("*.jsonl"))]
