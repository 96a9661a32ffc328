"""Settings from the environment, with defaults under the working directory.

- ``CARDIOMICS_HOME``: data directory (checkpoints, artefacts, reports); default ``./.cardiomics``.
- ``CARDIOMICS_AUDIT_DIR``: audit trails; default ``./audit_logs``.
- ``CARDIOMICS_DATA``: the shared real-data folder used by training and validation.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    home: Path = Field(description="Data directory: checkpoints, artefacts, reports.")
    audit_dir: Path = Field(description="Directory of the hash-chained audit trails.")
    data_dir: Path | None = Field(default=None, description="Real data for training/validation (optional).")

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("CARDIOMICS_HOME", ".cardiomics")).expanduser().resolve()
        audit = Path(os.environ.get("CARDIOMICS_AUDIT_DIR", "audit_logs")).expanduser().resolve()
        data = os.environ.get("CARDIOMICS_DATA")
        return cls(home=home, audit_dir=audit, data_dir=Path(data).resolve() if data else None)

    @property
    def checkpoint_db(self) -> Path:
        return self.home / "checkpoints.sqlite"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    def ensure(self) -> Settings:
        for d in (self.home, self.audit_dir, self.artifacts_dir, self.reports_dir, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self
