"""Assemble the structured report from tool outputs; the narrative comes from the template."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined

from cardiomics import prompts
from cardiomics.tools import Provenance
from cardiomics.tools.report import Figure, Finding, QcItem, Report

LABELS = {
    "lv_edv_ml": "LV end-diastolic volume", "lv_esv_ml": "LV end-systolic volume", "lv_sv_ml": "LV stroke volume",
    "lv_ef_pct": "LV ejection fraction", "lv_mass_g": "LV mass", "rv_edv_ml": "RV end-diastolic volume",
    "rv_esv_ml": "RV end-systolic volume", "rv_ef_pct": "RV ejection fraction",
    "lv_edv_index_ml_m2": "LV end-diastolic volume index", "lv_esv_index_ml_m2": "LV end-systolic volume index",
    "lv_mass_index_g_m2": "LV mass index", "rv_edv_index_ml_m2": "RV end-diastolic volume index",
}
LIMITATIONS = [
    "Volumes and mass come from an automated segmentation; intervals reflect segmentation uncertainty only, not scan-rescan variability.",
    "Reference ranges are published adult SSFP ranges; they do not apply to children or to other sequences.",
    "The model's validation metrics and known failure modes are in its model card (see provenance).",
]


MOLECULAR_LIMITATIONS = [
    "Programme scores are measured in the omics data provided; their link to the imaging findings is context, not causation.",
]
FUSION_LIMITATIONS = [
    "Predicted programme activity and the nearest patients come from a fusion model trained on a synthetic reference "
    "cohort: research use only, not a measurement and not for clinical decisions.",
]


def findings(func: dict[str, Any]) -> list[Finding]:
    rid = func["provenance"]["result_id"]
    out = []
    for key, label in LABELS.items():
        est = func.get(key)
        if est:
            out.append(Finding(key=key, label=label, result_id=rid, section="Cardiac function", **est))
    return out


def regional_findings(regional: dict[str, Any] | None) -> list[Finding]:
    """The LV's maximal wall thickness, and ED wall thickness per AHA segment (mean and maximum): only the
    flagged segment values, so the table stays readable."""
    if not regional:
        return []
    rid = regional["provenance"]["result_id"]
    out = []
    section = "Regional (AHA 16 segments)"
    peak, where = regional.get("max_ed_wall_thickness_mm"), regional.get("max_ed_wall_thickness_segment")
    if peak and where:
        # reported whether flagged or not: maximal wall thickness is what a hypertrophy question is answered with
        name = next((s["name"] for s in regional["segments"] if s["segment"] == where), "")
        out.append(Finding(key="max_ed_wall_thickness_mm", label=f"Maximal LV wall thickness (segment {where}, {name})",
                           section=section, result_id=rid, **peak))
    for seg in regional["segments"]:
        for key, what in (("ed_wall_thickness_mm", "ED wall thickness"), ("ed_max_wall_thickness_mm", "maximal ED wall thickness")):
            est = seg.get(key)
            if est and est["flag"] in ("low", "high"):
                out.append(Finding(key=f"aha{seg['segment']}_{key}", label=f"Segment {seg['segment']} ({seg['name']}) {what}",
                                   section=section, result_id=rid, **est))
    return out


def molecular_findings(results: dict[str, Any]) -> list[Finding]:
    """Programme scores measured in the patient's own omics data (never predicted ones here)."""
    scores = results.get("score_programmes")
    if not scores:
        return []
    rid = scores["provenance"]["result_id"]
    out = []
    for prog in scores["programmes"]:
        if not prog.get("scored") or not prog.get("mean_score"):
            continue
        active = prog.get("p_fraction_active") is not None and prog["p_fraction_active"] < scores["alpha"]
        est = dict(prog["mean_score"])
        # "high" only for a programme active beyond random sets with a positive mean; the note says the rest
        est["flag"] = "high" if active and est["value"] > 0 else "not-assessed"
        est["reference"] = None
        note = (f"measured; active in {100 * prog['fraction_active']:.0f} % of {scores['n_obs']} {scores['kind']} observations "
                f"(p {prog['p_fraction_active']:.2g} against random gene sets)") if prog.get("fraction_active") is not None else "measured"
        out.append(Finding(key=f"programme_{prog['name']}", label=f"{prog['name'].replace('_', ' ')} programme", section="Molecular context (measured)",
                           note=note, result_id=rid, **est))
    return out


def literature(results: dict[str, Any]) -> list[dict[str, str]]:
    """The top passage of each knowledge search of this run (title and id), for citation in the text."""
    seen, out = set(), []
    for key in sorted(k for k in results if k.startswith("knowledge_search")):
        for passage in results[key]["passages"][:1]:
            if passage["id"] not in seen:
                seen.add(passage["id"])
                out.append({"id": passage["id"], "title": passage["title"]})
    return out


def predicted_findings(results: dict[str, Any]) -> list[Finding]:
    """Programme activity PREDICTED from imaging by the fusion model, with its conformal interval."""
    vt = results.get("virtual_transcriptomics")
    if not vt:
        return []
    rid = vt["provenance"]["result_id"]
    return [Finding(key=f"predicted_{p['programme']}", label=f"{p['programme'].replace('_', ' ')} programme",
                    section="Molecular context (predicted from imaging)", note=f"{vt['label']}; synthetic-trained model",
                    result_id=rid, **{**p["score"], "flag": "not-assessed", "reference": None})
            for p in vt["programmes"]]


def neighbour_findings(results: dict[str, Any]) -> list[Finding]:
    """The nearest reference patients, by latent distance, with their own measured LVEF."""
    nb = results.get("cohort_neighbours")
    if not nb:
        return []
    rid = nb["provenance"]["result_id"]
    out = []
    for n in nb["neighbours"]:
        ef = n["phenotypes"].get("lv_ef_pct")
        note = f"synthetic reference patient; site {n['site']}" + (f"; its LVEF {ef:.1f} %" if ef is not None else "")
        out.append(Finding(key=f"neighbour_{n['rank']}", label=f"{n['patient_id']} (rank {n['rank']})", value=n["distance"],
                           unit="latent distance", section="Nearest patients (synthetic reference cohort)", note=note, result_id=rid))
    return out


def cohort_summary(results: dict[str, Any]) -> str:
    if not results.get("cohort_neighbours"):
        return ""
    return ("The patient was placed in the latent space of the synthetic reference cohort; the nearest patients are "
            "listed with the latent-space figure. Programme scores in the predicted section are predictions from "
            "imaging, not measurements.")


def molecular_summary(results: dict[str, Any]) -> str:
    scores = results.get("score_programmes")
    if not scores:
        return ""
    active = [p["name"].replace("_", " ") for p in scores["programmes"]
              if p.get("scored") and p.get("p_fraction_active") is not None and p["p_fraction_active"] < scores["alpha"]]
    text = (f"Molecular context (measured in the {scores['kind']} omics data provided): "
            + (f"programmes active beyond random gene sets: {', '.join(active)}." if active else "no programme active beyond random gene sets."))
    return text


FIGURE_REF = "stored:"  # a PNG the checkpoint keeps as an artefact id, not inline


def figures(results: dict[str, Any], figure_png: Callable[[str], str] | None = None) -> list[Figure]:
    def fig(f: dict[str, Any]) -> Figure:
        png = f["png_base64"]
        if png.startswith(FIGURE_REF) and figure_png is not None:
            png = figure_png(png)
        return Figure(**{**f, "png_base64": png})

    figs = [fig(f) for f in results.get("report_figures", {}).get("figures", [])]
    figs += [fig(f) for f in (results.get("regional_function") or {}).get("figures", [])]
    if results.get("latent_figure"):
        figs.append(fig(results["latent_figure"]["figure"]))
    domains = results.get("spatial_domains")
    if domains and domains.get("figure_path") and Path(domains["figure_path"]).exists():
        png = base64.b64encode(Path(domains["figure_path"]).read_bytes()).decode()
        figs.append(Figure(id=domains["figure_id"], title="Spatial domains and programme score over the tissue",
                           png_base64=png, result_id=domains["domains_id"]))
    return figs


def qc_items(results: dict[str, Any]) -> tuple[list[QcItem], str]:
    items, verdicts = [], []
    for stage in ("load_study", "segment", "cardiac_function", "regional_function"):
        r = results.get(stage)
        if r:
            verdicts.append(r["qc_verdict"])
            items += [QcItem(stage=stage, **q) for q in r["qc"]]
    verdict = "fail" if "fail" in verdicts else "warn" if "warn" in verdicts else "pass"
    return items, verdict


def narrative(found: list[Finding], qc_verdict: str, change_requests: list[str], molecular: str = "",
              passages: list[dict[str, str]] | None = None) -> str:
    """The template filled from tool outputs; every number in it is a tool output at printed precision."""
    env = Environment(undefined=StrictUndefined, autoescape=False)
    template = env.from_string(prompts.load("report_narrative.md.j2"))
    f = {x.key: f"{x.value:.1f}" for x in found}
    flags = {x.key: x.flag for x in found}
    flagged = [f"{x.label} {x.value:.1f} {x.unit} ({x.flag})" for x in found if x.reference and x.flag in ("low", "high")]
    return template.render(f=f, flags=flags, flagged=flagged, qc_verdict=qc_verdict, change_requests=change_requests,
                           molecular=molecular, passages=passages or []).strip()


def compose(state: dict[str, Any], version: int, figure_png: Callable[[str], str] | None = None) -> Report:
    results = state["results"]
    found = (findings(results["cardiac_function"]) + regional_findings(results.get("regional_function"))
             + molecular_findings(results) + predicted_findings(results) + neighbour_findings(results))
    qc, verdict = qc_items(results)
    provenance = {r["provenance"]["result_id"]: Provenance.model_validate(r["provenance"])
                  for r in results.values() if isinstance(r, dict) and r.get("provenance")}
    return Report(
        run_id=state["run_id"], study_key=results["load_study"]["study_key"], version=version, status="draft",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), findings=found, qc=qc, qc_verdict=verdict,
        narrative=narrative(found, verdict, state.get("change_requests", []),
                            " ".join(x for x in (molecular_summary(results), cohort_summary(results)) if x), literature(results)),
        limitations=LIMITATIONS + (MOLECULAR_LIMITATIONS if results.get("score_programmes") else [])
        + (FUSION_LIMITATIONS if results.get("virtual_transcriptomics") else []),
        figures=figures(results, figure_png), provenance=provenance,
    )
