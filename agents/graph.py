"""The constrained graph: processing -> [QC approval] -> analysis -> explanation -> [sign-off] -> final.

Each approval is an ``interrupt()``: the run pauses in the checkpointer and resumes, in this or
another process, with the reviewer's decision. Work with side effects sits after the interrupt
or in its own node, and every audit event of a node is written once even if the node re-runs.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from cardiomics.audit import AuditTrail
from cardiomics.config import Settings
from cardiomics.errors import CardiomicsError
from cardiomics.hashing import sha256_bytes
from cardiomics.tools import ArtifactStore, ToolContext
from cardiomics.tools.report import Signature

from .compose import FIGURE_REF, compose
from .executor import ToolExecutor
from .grounding import check, numeric_values
from .protocol import DeterministicPlanner, Planner
from .reports import ReportStore
from .state import Decision, RunState

log = structlog.get_logger(__name__)


@dataclass
class Services:
    settings: Settings
    store: ArtifactStore
    reports: ReportStore

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        settings.ensure()
        return cls(settings, ArtifactStore(settings.artifacts_dir), ReportStore(settings.reports_dir))

    def audit(self, run_id: str) -> AuditTrail:
        return AuditTrail(self.settings.audit_dir, run_id)

    def inputs_file(self, run_id: str) -> Path:
        """Where a run's input paths live (0600), outside the checkpoint: a folder name may be a patient's name."""
        folder = self.settings.runs_dir / "inputs"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder / f"{run_id}.json"

    def with_inputs(self, state: dict) -> dict:
        path = self.inputs_file(state["run_id"])
        return {**state, **json.loads(path.read_text())} if path.exists() else state

    def executor(self, run_id: str, epoch: str = "") -> ToolExecutor:
        return ToolExecutor(ToolContext(store=self.store, seed=0), self.audit(run_id), epoch)


def _slim(obj: Any, store: ArtifactStore) -> Any:
    """Tool output for the checkpoint: inline PNGs go to the artefact store and only their id stays."""
    if isinstance(obj, dict):
        return {k: (_stash_png(v, store) if k == "png_base64" and isinstance(v, str) else _slim(v, store)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_slim(v, store) for v in obj]
    return obj


def _stash_png(b64: str, store: ArtifactStore) -> str:
    if b64.startswith(FIGURE_REF):
        return b64
    data = base64.b64decode(b64)
    key = sha256_bytes(data)[:24]
    store.put_bytes("fig", data, ".png", key)
    return f"{FIGURE_REF}fig-{key}"


def _dump(outputs: dict[str, Any], store: ArtifactStore) -> dict[str, Any]:
    return {k: _slim(v.model_dump(mode="json"), store) for k, v in outputs.items()}


def build_graph(services: Services, checkpointer, planner: Planner | None = None):
    planner = planner or DeterministicPlanner()

    def run_role(role: str, fn, state: RunState, next_status: str) -> dict:
        epoch = f"{role}:v{state.get('report_version', 0) + 1}" if role == "explanation" else role
        ex = services.executor(state["run_id"], epoch)
        try:
            outputs = fn(ex, services.with_inputs(state))
        except CardiomicsError as exc:
            ex.audit.append("run_failed", role, code=exc.code, error=exc.kind, once_key=f"failed:{role}")
            return {"status": "failed", "error": exc.to_dict()}
        return {"results": _dump(outputs, services.store), "status": next_status}

    def processing(state: RunState) -> dict:
        return run_role("processing", planner.processing, state, "awaiting-qc")

    def qc_approval(state: RunState) -> dict:
        res = state["results"]
        payload = {"checkpoint": "qc", "run_id": state["run_id"], "study_key": res["load_study"]["study_key"],
                   "qc_verdicts": {k: res[k]["qc_verdict"] for k in ("load_study", "segment", "cardiac_function")},
                   "segmentation_id": res["segment"]["segmentation_id"]}
        return _decide(state, "qc", interrupt(payload), approved_status="analysis")

    def analysis(state: RunState) -> dict:
        return run_role("analysis", planner.analysis, state, "explanation")

    def explanation(state: RunState) -> dict:
        update = run_role("explanation", planner.explanation, state, "awaiting-signoff")
        if update["status"] == "failed":
            return update
        merged = {**state, "results": {**state["results"], **update["results"]}}
        version = state.get("report_version", 0) + 1
        report = compose(merged, version, figure_png=lambda ref: base64.b64encode(
            services.store.get_bytes(ref.removeprefix(FIGURE_REF), ".png")).decode())
        values = [v for k, r in merged["results"].items() if k != "report_figures" for v in numeric_values(r)]
        retrieved = [h["id"] for r in merged["results"].values() if isinstance(r, dict) for h in r.get("passages", [])]
        ex = services.executor(state["run_id"])
        # a draft that fails the grounding check goes back once with its problems, then is shown flagged
        problems: list[str] = []
        draft = report.narrative  # the template's text, filled from tool outputs
        for attempt in (1, 2):
            draft = planner.narrative(ex, services.with_inputs(merged), draft, problems)
            problems = check(draft, values, retrieved)
            ex.audit.append("grounding_check", "explanation", version=version, attempt=attempt, problems=problems,
                            once_key=f"grounding:v{version}:{attempt}")
            if not problems:
                break
        report.narrative, report.grounding_flags = draft, problems
        services.reports.save(report)
        services.audit(state["run_id"]).append(
            "report_version", "explanation", version=version, status=report.status,
            report_sha256=report.content_sha256(), grounding_flags=len(report.grounding_flags), once_key=f"report:v{version}")
        return {**update, "report_version": version}

    def signoff(state: RunState) -> dict:
        report = services.reports.load(state["run_id"], state["report_version"])
        payload = {"checkpoint": "signoff", "run_id": state["run_id"], "report_version": report.version,
                   "report_sha256": report.content_sha256(), "grounding_flags": report.grounding_flags}
        return _decide(state, "signoff", interrupt(payload), approved_status="approved")

    def final(state: RunState) -> dict:
        """Write the signed (approved or rejected) version: immutable, its hash in the trail."""
        last = state["decisions"][-1]
        version = state.get("report_version", 0)
        if version == 0:  # rejected at QC: no report to sign
            services.audit(state["run_id"]).append("run_finished", "system", status=state["status"], once_key="finished")
            services.inputs_file(state["run_id"]).unlink(missing_ok=True)
            return {}
        draft = services.reports.load(state["run_id"], version)
        signed = draft.model_copy(update={"version": version + 1, "status": last["decision"]})
        signed.signature = Signature(reviewer=last["reviewer"], decision=last["decision"], at=last["at"],
                                     comment=last["comment"], report_sha256=signed.content_sha256())
        services.reports.save(signed)
        audit = services.audit(state["run_id"])
        audit.append("report_signed", last["reviewer"], version=signed.version, decision=last["decision"],
                     report_sha256=signed.signature.report_sha256, once_key=f"signed:v{signed.version}")
        audit.append("run_finished", "system", status=state["status"], once_key="finished")
        services.inputs_file(state["run_id"]).unlink(missing_ok=True)
        return {"report_version": signed.version}

    def _decide(state: RunState, checkpoint: str, raw: Any, approved_status: str) -> dict:
        decision = Decision.model_validate(raw)
        attempt = sum(1 for d in state.get("decisions", []) if d["checkpoint"] == checkpoint) + 1
        at = raw.get("at") or datetime.now(UTC).isoformat(timespec="seconds")
        services.audit(state["run_id"]).append(
            "approval", decision.reviewer, checkpoint=checkpoint, decision=decision.decision,
            comment=decision.comment, once_key=f"approval:{checkpoint}:{attempt}")
        record = {"checkpoint": checkpoint, **decision.model_dump(), "at": at}
        if decision.decision == "approved":
            return {"decisions": [record], "status": approved_status}
        if decision.decision == "changes-requested" and checkpoint == "signoff":
            return {"decisions": [record], "status": "explanation", "change_requests": [decision.comment or "(no comment)"]}
        return {"decisions": [record], "status": "rejected"}

    g = StateGraph(RunState)
    for name, fn in (("processing", processing), ("qc_approval", qc_approval), ("analysis", analysis),
                     ("explanation", explanation), ("signoff", signoff), ("final", final)):
        g.add_node(name, fn)
    g.add_edge(START, "processing")
    g.add_conditional_edges("processing", lambda s: END if s["status"] == "failed" else "qc_approval")
    g.add_conditional_edges("qc_approval", lambda s: "analysis" if s["status"] == "analysis" else "final")
    g.add_conditional_edges("analysis", lambda s: END if s["status"] == "failed" else "explanation")
    g.add_conditional_edges("explanation", lambda s: END if s["status"] == "failed" else "signoff")
    g.add_conditional_edges("signoff", lambda s: "explanation" if s["status"] == "explanation" else "final")
    g.add_edge("final", END)
    return g.compile(checkpointer=checkpointer)
