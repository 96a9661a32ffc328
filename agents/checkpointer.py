"""The checkpointer behind paused runs: SQLite in the data directory by default."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Any

from cardiomics.config import Settings


class Checkpointer(AbstractContextManager):
    """Opens the configured LangGraph checkpointer and closes its connection."""

    def __init__(self, settings: Settings) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        self._conn = sqlite3.connect(settings.checkpoint_db, check_same_thread=False)
        self.saver: Any = SqliteSaver(self._conn)

    def close(self) -> None:
        self._conn.close()

    def __exit__(self, *exc) -> None:
        self.close()
