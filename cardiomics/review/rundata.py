"""What a review page needs from a run: its checkpoint results, report versions and audit lines.

Everything is read through ``Runs`` (checkpoints) and ``ReportStore`` / ``AuditTrail`` (disk), the
same sources ``cardiomics approve`` and ``cardiomics report`` use, so the page shows what a
decision will act on.
"""

from __future__ import annotations

from typing import Any

from cardiomics.agents.runs import Runs, RunStatus
from cardiomics.errors import NotFoundError
from cardiomics.tools.report import Report

# audit events a reviewer wants next to every number: the decisions and what they signed
DECISION_EVENTS = ("approval", "report_version", "report_signed")


def results(runs: Runs, run_id: str) -> dict[str, Any]:
    runs.status(run_id)  # unknown run -> NotFoundError
    snap = runs.graph.get_state(runs._config(run_id))
    return dict((snap.values or {}).get("results") or {})


def qc_ids(runs: Runs, run_id: str, cache: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """(study_id, segmentation_id) of a run; cached, since processing runs once per run."""
    if run_id not in cache:
        ctx = qc_context(runs, run_id)
        cache[run_id] = (ctx["study_id"], ctx["segmentation_id"])
    return cache[run_id]


def qc_context(runs: Runs, run_id: str) -> dict[str, Any]:
    """Ids and frames the QC page needs (study, segmentation, ED/ES)."""
    res = results(runs, run_id)
    try:
        study_id = res["load_study"]["study_id"]
        seg_id = res["segment"]["segmentation_id"]
    except KeyError as exc:
        raise NotFoundError("no-segmentation", f"run {run_id} has no segmentation to review",
                            hint="the run failed before segmentation; see its error") from exc
    func = res.get("cardiac_function") or {}
    return {"study_id": study_id, "segmentation_id": seg_id, "ed_frame": func.get("ed_frame"),
            "es_frame": func.get("es_frame"), "results": res}


def audit_records(runs: Runs, run_id: str) -> list[dict[str, Any]]:
    return runs.services.audit(run_id).records()


def provenance(runs: Runs, run_id: str, result_id: str, version: int | None = None) -> dict[str, Any]:
    """Provenance of one result and the audit lines behind it (its tool call, the decisions)."""
    report = _report_or_none(runs, run_id, version)
    prov = report.provenance.get(result_id) if report else None
    if prov is None:  # before a report exists (QC page), the checkpoint results carry it
        for out in results(runs, run_id).values():
            if isinstance(out, dict) and (out.get("provenance") or {}).get("result_id") == result_id:
                prov = out["provenance"]
                break
    if prov is None:
        raise NotFoundError("unknown-result", f"run {run_id} has no result {result_id}")
    records = audit_records(runs, run_id)
    return {
        "run_id": run_id,
        "result_id": result_id,
        "provenance": prov if isinstance(prov, dict) else prov.model_dump(mode="json"),
        "audit": [r for r in records if r.get("result_id") == result_id],
        "approvals": [r for r in records if r.get("event") in DECISION_EVENTS],
    }


def _report_or_none(runs: Runs, run_id: str, version: int | None) -> Report | None:
    try:
        return runs.services.reports.load(run_id, version)
    except NotFoundError:
        return None


def current_draft(runs: Runs, status: RunStatus) -> int | None:
    """The version a sign-off decision acts on (None when the run does not wait for sign-off)."""
    return status.report_version if status.waiting_for == "sign-off" else None
