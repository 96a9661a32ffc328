"""The checkpointer behind paused runs: SQLite in the data directory, PostgreSQL for shared deployments.

One machine, one reviewer: SQLite beside the artefacts (no server to run). Several reviewers or
several machines resuming the same runs: set ``CARDIOMICS_POSTGRES_URL``
(``postgresql://user:pass@host:5432/db``) and every process stores its checkpoints in that
database, so a run paused by one process is resumed by any other.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import AbstractContextManager
from typing import Any

import structlog

from cardiomics.config import Settings
from cardiomics.errors import InputError

log = structlog.get_logger(__name__)

POSTGRES_ENV = "CARDIOMICS_POSTGRES_URL"
# any constant: serialises the first-time schema migration when several processes start together
_SETUP_LOCK_KEY = 0x63617264696F


def postgres_url() -> str | None:
    """The configured PostgreSQL connection string, or None for the SQLite default."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    return url or None


def _redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class Checkpointer(AbstractContextManager):
    """Opens the configured LangGraph checkpointer (``.saver``) and closes its connections (``.close()``)."""

    def __init__(self, settings: Settings, url: str | None = None) -> None:
        url = url or postgres_url()
        self.backend = "postgres" if url else "sqlite"
        self._close: Any
        if url:
            self.saver, self._close = _open_postgres(url)
        else:
            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(settings.checkpoint_db, check_same_thread=False)
            self.saver = SqliteSaver(conn)
            self._close = conn.close

    def close(self) -> None:
        self._close()

    def __exit__(self, *exc) -> None:
        self.close()


def _open_postgres(url: str) -> tuple[Any, Any]:
    """A PostgresSaver over a small connection pool (the review app resumes runs from several threads)."""
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool
    except ImportError as exc:  # pragma: no cover - the packages are dependencies
        raise InputError("postgres-missing", f"{POSTGRES_ENV} is set but the PostgreSQL checkpointer is not installed ({exc})",
                          hint="pip install langgraph-checkpoint-postgres 'psycopg[binary,pool]'") from None
    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK_KEY,))
            try:
                conn.row_factory = dict_row
                PostgresSaver(conn).setup()  # creates / migrates the tables; idempotent
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK_KEY,))
        pool = ConnectionPool(url, min_size=1, max_size=4, kwargs=kwargs, open=True, timeout=30)
    except psycopg.OperationalError as exc:
        raise InputError("postgres-unreachable", f"cannot connect to PostgreSQL at {_redact(url)}: {str(exc).strip()[:300]}",
                          hint=f"check that the server runs and {POSTGRES_ENV} is right, or unset it to use SQLite") from None
    log.info("checkpointer", backend="postgres", url=_redact(url))
    return PostgresSaver(pool), pool.close
