"""Assemble the structured report from tool outputs; the narrative comes from the template."""

from __future__ import annotations

from datetime import datetime, timezone
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


def findings(func: dict[str, Any]) -> list[Finding]:
    rid = func["provenance"]["result_id"]
    out = []
    for key, label in LABELS.items():
        est = func.get(key)
        if est:
            out.append(Finding(key=key, label=label, result_id=rid, section="Cardiac function", **est))
    return out


def qc_items(results: dict[str, Any]) -> tuple[list[QcItem], str]:
    items, verdicts = [], []
    for stage in ("load_study", "segment", "cardiac_function"):
        r = results.get(stage)
        if r:
            verdicts.append(r["qc_verdict"])
            items += [QcItem(stage=stage, **q) for q in r["qc"]]
    verdict = "fail" if "fail" in verdicts else "warn" if "warn" in verdicts else "pass"
    return items, verdict


def narrative(found: list[Finding], qc_verdict: str, change_requests: list[str], molecular: str = "") -> str:
    env = Environment(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(prompts.load("report_narrative.md.j2"))
    f = {x.key: f"{x.value:.1f}" for x in found}
    flags = {x.key: x.flag for x in found}
    flagged = [f"{x.label} {x.value:.1f} {x.unit} ({x.flag})" for x in found if x.flag in ("low", "high")]
    return template.render(f=f, flags=flags, flagged=flagged, qc_verdict=qc_verdict,
                           change_requests=change_requests, molecular=molecular).strip()


def compose(state: dict[str, Any], version: int) -> Report:
    results = state["results"]
    found = findings(results["cardiac_function"])
    qc, verdict = qc_items(results)
    provenance = {r["provenance"]["result_id"]: Provenance.model_validate(r["provenance"])
                  for r in results.values() if isinstance(r, dict) and r.get("provenance")}
    figures = [Figure(**f) for f in results.get("report_figures", {}).get("figures", [])]
    return Report(
        run_id=state["run_id"], study_key=results["load_study"]["study_key"], version=version, status="draft",
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), findings=found, qc=qc, qc_verdict=verdict,
        narrative=narrative(found, verdict, state.get("change_requests", [])), limitations=LIMITATIONS,
        figures=figures, provenance=provenance,
    )
