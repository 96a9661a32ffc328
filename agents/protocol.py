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


IMAGING_TERMS = {
    "lv_ef_pct": "left ventricular ejection fraction", "lv_edv_ml": "left ventricular end-diastolic volume",
    "lv_mass_g": "left ventricular mass hypertrophy", "rv_ef_pct": "right ventricular ejection fraction",
    "rv_edv_ml": "right ventricular dilatation",
}


def literature_queries(results: dict[str, Any], analysis: dict[str, ToolOutput], limit: int = 3) -> list[str]:
    """Questions for the knowledge base, from what is flagged: abnormal imaging values, active programmes."""
    queries = []
    func = results.get("cardiac_function") or {}
    for key, words in IMAGING_TERMS.items():
        est = func.get(key)
        if est and est.get("flag") in ("low", "high"):
            queries.append(f"{'reduced' if est['flag'] == 'low' else 'increased'} {words}: causes and molecular mechanisms")
    scores = analysis.get("score_programmes")
    if scores is not None:
        for prog in scores.programmes:
            if prog.scored and prog.p_fraction_active is not None and prog.p_fraction_active < scores.alpha:
                queries.append(f"{prog.name.replace('_', ' ')} programme in the heart and its imaging correlates")
    return queries[:limit]


class DeterministicPlanner:
    name = "deterministic"

    def processing(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]:
        patient = state.get("patient") or {}
        study = ex.call("processing", "load_study", {"path": state["study_path"]})
        seg = ex.call("processing", "segment", {"study_id": study.study_id})
        func = ex.call("processing", "cardiac_function", {"segmentation_id": seg.segmentation_id, **patient})
        regional = ex.call("processing", "regional_function", {"segmentation_id": seg.segmentation_id})
        return {"load_study": study, "segment": seg, "cardiac_function": func, "regional_function": regional}

    def analysis(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]:
        """Molecular context when an omics file was given; nothing is computed without data."""
        out: dict[str, ToolOutput] = {}
        if state.get("omics_path"):
            loaded = ex.call("analysis", "load_omics", {"path": state["omics_path"]})
            qc = ex.call("analysis", "omics_qc", {"omics_id": loaded.omics_id})
            out.update(load_omics=loaded, omics_qc=qc)
            out["score_programmes"] = ex.call("analysis", "score_programmes", {"omics_id": qc.omics_id})
            out["omics_embedding"] = ex.call("analysis", "omics_embedding", {"omics_id": qc.omics_id})
            if loaded.kind == "spatial":
                out["deconvolve_spots"] = ex.call("analysis", "deconvolve_spots", {"omics_id": qc.omics_id})
                out["spatial_domains"] = ex.call("analysis", "spatial_domains", {"omics_id": qc.omics_id})
        out.update(self._fusion(ex, state, out))
        for i, query in enumerate(literature_queries(state["results"], out)):
            out[f"knowledge_search:{i + 1}"] = ex.call("analysis", "knowledge_search", {"query": query, "k": 2})
        return out

    @staticmethod
    def _fusion(ex: ToolExecutor, state: dict[str, Any], analysis: dict[str, ToolOutput]) -> dict[str, ToolOutput]:
        """Place the patient in the reference cohort's latent space; predict programmes from imaging."""
        results = state["results"]
        args: dict[str, Any] = {"cardiac_function": results["cardiac_function"]}
        if results.get("regional_function"):
            args["regional_function"] = results["regional_function"]
        if (state.get("patient") or {}).get("sex"):
            args["sex"] = state["patient"]["sex"]
        loaded = analysis.get("load_omics")
        if loaded is not None and loaded.kind == "bulk" and loaded.has_raw_counts:
            args.update(omics_id=loaded.omics_id, omics_sample=0)
        proj = ex.call("analysis", "fusion_project", args)
        pid = {"projection_id": proj.projection_id}
        out: dict[str, ToolOutput] = {"fusion_project": proj,
                                      "cohort_neighbours": ex.call("analysis", "cohort_neighbours", {**pid, "k": 5}),
                                      "virtual_transcriptomics": ex.call("analysis", "virtual_transcriptomics", pid)}
        top = max(out["virtual_transcriptomics"].programmes, key=lambda p: abs(p.score.value))
        out["prediction_drivers"] = ex.call("analysis", "prediction_drivers", {**pid, "programme": top.programme})
        out["latent_figure"] = ex.call("analysis", "latent_figure", {**pid, "k": 5})
        return out

    def explanation(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]:
        results = state["results"]
        figs = ex.call("explanation", "report_figures", {"study_id": results["load_study"]["study_id"],
                                                         "segmentation_id": results["segment"]["segmentation_id"]})
        return {"report_figures": figs}

    def narrative(self, ex: ToolExecutor, state: dict[str, Any], template_text: str, problems: list[str]) -> str:
        return template_text  # filled from tool outputs only: nothing to redraft
