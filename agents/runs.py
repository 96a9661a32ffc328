"""Runs: start a study, decide at a checkpoint, list and inspect. What the CLI, chat and review call."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from langgraph.types import Command
from pydantic import BaseModel

from cardiomics import __version__, prompts
from cardiomics.atomicfile import write_atomic
from cardiomics.config import Settings
from cardiomics.errors import InputError, NotFoundError, PolicyError
from cardiomics.filelock import exclusive
from cardiomics.hashing import sha256_json

from .checkpointer import Checkpointer
from .graph import Services, build_graph
from .protocol import Planner
from .state import Decision

Waiting = Literal["qc-approval", "sign-off"]


class RunStatus(BaseModel):
    run_id: str
    created_at: str
    status: str
    study_key: str | None = None
    waiting_for: Waiting | None = None
    report_version: int | None = None
    error: dict[str, Any] | None = None


class Runs:
    def __init__(self, settings: Settings | None = None, planner: Planner | None = None, llm_config: str | None = None) -> None:
        self.settings = (settings or Settings.from_env()).ensure()
        self.services = Services.from_settings(self.settings)
        self._checkpointer = Checkpointer(self.settings)
        if planner is None:  # a configured model (llm.toml / env) drives the graph; none: the deterministic protocol
            from .llm import planner_from_settings

            planner = planner_from_settings(self.settings, llm_config)
        self.planner = planner
        self.graph = build_graph(self.services, self._checkpointer.saver, planner)

    def close(self) -> None:
        self._checkpointer.close()

    def __enter__(self) -> Runs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _config(run_id: str) -> dict:
        return {"configurable": {"thread_id": run_id}}

    def _index(self, run_id: str) -> Path:
        return self.settings.runs_dir / f"{run_id}.json"

    def start(self, study_path: str, *, omics_path: str | None = None, height_cm: float | None = None,
              weight_kg: float | None = None, sex: str | None = None) -> RunStatus:
        """Start a run and take it to its first checkpoint (or to failure)."""
        if not Path(study_path).exists():
            raise InputError("not-found", f"study path {study_path} does not exist", hint="pass a DICOM series folder or a NIfTI file")
        created = datetime.now(UTC)
        run_id = f"run-{created:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        write_atomic(self._index(run_id), json.dumps({"run_id": run_id, "created_at": created.isoformat(timespec="seconds")}))
        patient = {k: v for k, v in (("height_cm", height_cm), ("weight_kg", weight_kg), ("sex", sex)) if v is not None}
        self.services.audit(run_id).append("run_start", "system", cardiomics_version=__version__,
                                           llm=getattr(self.planner, "description", "none (deterministic planner)"),
                                           prompt_sha256=prompts.prompt_hashes(), omics=bool(omics_path),
                                           patient_fields=sorted(patient), once_key="start")
        inputs = {"study_path": str(Path(study_path).resolve()), "omics_path": str(Path(omics_path).resolve()) if omics_path else None}
        sidecar = self.services.inputs_file(run_id)
        write_atomic(sidecar, json.dumps(inputs), mode=0o600)  # a folder name can carry a patient's name
        self.graph.invoke({"run_id": run_id, "patient": patient, "status": "processing", "results": {},
                           "inputs_sha256": sha256_json(inputs)}, self._config(run_id))
        return self.status(run_id)

    @contextmanager
    def _locked(self, run_id: str) -> Iterator[None]:
        """One decision at a time per run, across processes."""
        with exclusive(self.settings.runs_dir / f"{run_id}.lock"):
            yield

    def decide(self, run_id: str, reviewer: str, decision: str, comment: str = "",
               expect: Waiting | None = None, expect_version: int | None = None) -> RunStatus:
        """Record a reviewer's decision at the checkpoint the run waits at, and resume it.

        ``expect`` names the checkpoint the reviewer saw; if the run has moved on since (another
        reviewer decided first), the decision is refused and nothing is written; ``expect_version``
        does the same for the draft version a reviewer signs.
        """
        Decision(reviewer=reviewer, decision=decision, comment=comment)  # validate before touching the run
        with self._locked(run_id):
            current = self.status(run_id)
            if current.waiting_for is None:
                raise PolicyError("not-waiting", f"run {run_id} is {current.status}; it waits for no decision",
                                  hint="see `cardiomics runs`")
            if expect is not None and current.waiting_for != expect:
                raise PolicyError("moved-on", f"run {run_id} already moved on: it now waits for {current.waiting_for}",
                                  hint="reload the run and decide on what it shows now")
            if expect_version is not None and current.waiting_for == "sign-off" and current.report_version != expect_version:
                raise PolicyError("moved-on", f"run {run_id} already moved on: you saw draft v{expect_version}, it now waits "
                                  f"for sign-off of v{current.report_version}", hint="reload the report and decide on the new draft")
            if decision == "changes-requested" and current.waiting_for != "sign-off":
                raise PolicyError("no-changes-at-qc", "changes can be requested on a report draft, not at segmentation QC",
                                  hint="approve or reject the segmentation")
            at = datetime.now(UTC).isoformat(timespec="seconds")
            self.graph.invoke(Command(resume={"reviewer": reviewer, "decision": decision, "comment": comment, "at": at}),
                              self._config(run_id))
            return self.status(run_id)

    def status(self, run_id: str) -> RunStatus:
        index = self._index(run_id)
        if not index.exists():
            raise NotFoundError("unknown-run", f"no run {run_id}", hint="list runs with `cardiomics runs`")
        meta = json.loads(index.read_text())
        snap = self.graph.get_state(self._config(run_id))
        values = snap.values or {}
        waiting = None
        for intr in getattr(snap, "interrupts", ()) or ():
            waiting = "qc-approval" if intr.value.get("checkpoint") == "qc" else "sign-off"
        study = (values.get("results") or {}).get("load_study") or {}
        status = values.get("status", "processing")
        if waiting is None and (status in ("awaiting-qc", "awaiting-signoff") or snap.next):
            status = "interrupted"  # stopped between steps (a crash, an unreachable model): resumable
        return RunStatus(run_id=run_id, created_at=meta["created_at"], status=status, study_key=study.get("study_key"),
                         waiting_for=waiting, report_version=values.get("report_version"), error=values.get("error"))

    def resume(self, run_id: str) -> RunStatus:
        """Continue a run that stopped between checkpoints (a crash, an unreachable model).

        The interrupted node re-runs from its start; its audit events carry once-keys and report
        versions are immutable, so nothing is logged twice or lost. A run waiting for a reviewer
        is not interrupted: it waits for :meth:`decide`.
        """
        self.status(run_id)  # NotFoundError for an unknown run
        with self._locked(run_id):
            snap = self.graph.get_state(self._config(run_id))
            if getattr(snap, "interrupts", ()) or ():
                raise PolicyError("waiting-for-decision", f"run {run_id} waits for a reviewer's decision, not for a resume",
                                  hint=f"cardiomics approve {run_id} --reviewer NAME")
            if not snap.next:
                raise PolicyError("not-interrupted", f"run {run_id} has ended ({(snap.values or {}).get('status', 'unknown')})",
                                  hint="see `cardiomics runs`")
            self.services.audit(run_id).append("run_resumed", "system", nodes=list(snap.next))
            self.graph.invoke(None, self._config(run_id))
            return self.status(run_id)

    def list(self) -> list[RunStatus]:
        return [self.status(p.stem) for p in sorted(self.settings.runs_dir.glob("run-*.json"), reverse=True)]
