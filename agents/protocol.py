"""Planners: who decides which tools a role calls, and who drafts the narrative.

``DeterministicPlanner`` runs the standard protocol when no LLM is configured: each role is a short
sequence of tool calls whose arguments come from earlier results, and the narrative is the
template filled from tool outputs. An LLM planner implements the same four methods; the same
executor (allow-list, validation, audit) runs the calls of either.
"""

from __future__ import annotations

from typing import Any, Protocol

from cardiomics.tools import ToolOutput

from .executor import ToolExecutor


class Planner(Protocol):
    name: str

    def processing(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]: ...

    def analysis(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]: ...

    def explanation(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]: ...

    def narrative(self, ex: ToolExecutor, state: dict[str, Any], template_text: str, problems: list[str]) -> str:
        """Draft the narrative; ``problems`` lists what the grounding check found in the previous draft."""
        ...


class DeterministicPlanner:
    name = "deterministic"

    def processing(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]:
        patient = state.get("patient") or {}
        study = ex.call("processing", "load_study", {"path": state["study_path"]})
        seg = ex.call("processing", "segment", {"study_id": study.study_id})
        func = ex.call("processing", "cardiac_function", {"segmentation_id": seg.segmentation_id, **patient})
        return {"load_study": study, "segment": seg, "cardiac_function": func}

    def analysis(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]:
        """Molecular context when an omics file was given; nothing is computed without data."""
        return {}

    def explanation(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]:
        results = state["results"]
        figs = ex.call("explanation", "report_figures", {"study_id": results["load_study"]["study_id"],
                                                         "segmentation_id": results["segment"]["segmentation_id"]})
        return {"report_figures": figs}

    def narrative(self, ex: ToolExecutor, state: dict[str, Any], template_text: str, problems: list[str]) -> str:
        return template_text  # filled from tool outputs only: nothing to redraft
