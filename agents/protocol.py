"""The deterministic planner: the standard protocol each role runs when no LLM is configured.

Each role is a short sequence of tool calls whose arguments come from earlier results; the same
executor (allow-list, validation, audit) runs them as it runs an LLM's calls.
"""

from __future__ import annotations

from typing import Any

from .executor import ToolExecutor


def processing(ex: ToolExecutor, state: dict[str, Any]) -> dict[str, Any]:
    patient = state.get("patient") or {}
    study = ex.call("processing", "load_study", {"path": state["study_path"]})
    seg = ex.call("processing", "segment", {"study_id": study.study_id})
    func = ex.call("processing", "cardiac_function", {"segmentation_id": seg.segmentation_id, **patient})
    return {"load_study": study, "segment": seg, "cardiac_function": func}


def analysis(ex: ToolExecutor, state: dict[str, Any]) -> dict[str, Any]:
    """Molecular context when an omics file was given; nothing else is computed without data."""
    out: dict[str, Any] = {}
    return out


def explanation(ex: ToolExecutor, state: dict[str, Any]) -> dict[str, Any]:
    results = state["results"]
    figs = ex.call("explanation", "report_figures", {"study_id": results["load_study"]["study_id"],
                                                     "segmentation_id": results["segment"]["segmentation_id"]})
    return {"report_figures": figs}
