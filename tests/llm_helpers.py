"""Scripts for the scripted chat model and a phantom-label segmenter for orchestration-only tests."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from langchain_core.messages import AIMessage, BaseMessage

from cardiomics.agents.llm.scripted import call, ids, say, standard_processing, task_results

__all__ = ["PhantomLabels", "analysis_and_explanation", "cited", "narrative_reply", "passages", "say", "standard_processing"]


class PhantomLabels:
    """Returns the phantom's true labels. Orchestration tests only: segmentation accuracy is tested elsewhere."""

    ref = {"id": "phantom-labels", "version": "0", "weights_sha256": "0" * 64}

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def predict(self, images, spacing, n_tta=0, n_slices=None, centre=None, tta_volumes=None):
        lab = self.labels.reshape(-1, *self.labels.shape[2:])[: images.shape[0]]
        return lab, (np.stack([lab] * n_tta) if n_tta else None)


def passages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    for m in reversed(messages):
        if m.type == "human" and "Passages knowledge_search returned" in str(m.content):
            line = str(m.content).split("(the only ones you may cite):\n", 1)[1].splitlines()[0]
            return [] if line == "none" else json.loads(line)
    return []


def narrative_reply(ef_delta: float = 0.0, cite: str | None = "first") -> Any:
    """A narrative from the task's results; ``ef_delta`` plants a wrong ejection fraction."""

    def reply(messages: list[BaseMessage]) -> AIMessage:
        f = task_results(messages)["cardiac_function"]
        ef = f["lv_ef_pct"]["value"] + ef_delta
        ref = ""
        if cite == "first" and passages(messages):
            ref = f" Mid-wall fibrosis carries prognostic weight in dilated hearts [{passages(messages)[0]['id']}]."
        elif cite and cite != "first":
            ref = f" See [{cite}]."
        return AIMessage(f"LV ejection fraction {ef:.1f} % with end-diastolic volume {f['lv_edv_ml']['value']:.1f} ml "
                         f"and LV mass {f['lv_mass_g']['value']:.1f} g.{ref}")

    return reply


def cited(messages: list[BaseMessage]) -> bool:
    return bool(passages(messages))


def analysis_and_explanation(search: bool = False) -> list[Any]:
    steps: list[Any] = [say("No omics file; the imaging results need no further context."), call("report_figures", ids)]
    if search:
        steps.append(call("knowledge_search", {"query": "mid-wall fibrosis in dilated cardiomyopathy", "k": 3}))
    return steps + [say("Material ready.")]
