"""Answers to a reviewer's questions about a run, drafted by the explanation role and grounded.

The answer is checked like a report narrative: every number must match a tool output of the run
at its printed precision and every citation must have been returned by ``knowledge_search`` (in
the run or while answering). A failing answer is redrafted once with its problems, then shown
with the problems listed rather than hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from cardiomics.hashing import sha256_text

from ..executor import ToolExecutor
from ..grounding import check, numeric_values
from .loop import ToolLoop
from .messages import CHAT_PROMPT, results_view, retrieved_passages, role_prompt, tool_specs
from .redact import scrub


@dataclass
class Answer:
    text: str
    problems: list[str] = field(default_factory=list)
    attempts: int = 1


def grounding_inputs(results: dict[str, Any]) -> tuple[list[float], list[str]]:
    values = [v for k, r in results.items() if k != "report_figures" for v in numeric_values(r)]
    return values, [p["id"] for p in retrieved_passages(results)]


def answer(planner, ex: ToolExecutor, state: dict[str, Any], question: str) -> Answer:
    """Draft, check, redraft once; the result carries any problems left."""
    results = dict(state.get("results") or {})
    prompt, _ = role_prompt("explanation")
    base = (f"{CHAT_PROMPT}\n\nThe reviewer asks: {scrub(question)}\n\nResults of this run (de-identified):\n"
            f"{results_view(results)}\n\nPassages already retrieved in this run: "
            + (", ".join(p["id"] for p in retrieved_passages(results)) or "none"))
    problems: list[str] = []
    text = ""
    for attempt in (1, 2):
        call = planner._call("explanation", ex, state, stream=True)
        loop = ToolLoop(call, tool_specs("explanation"), {})
        ask = base if not problems else (base + "\n\nYour previous answer failed the grounding check:\n- " + "\n- ".join(problems)
                                         + f"\nPrevious answer:\n{text}\nAnswer again, fixing each problem.")
        res = loop.run([SystemMessage(prompt), HumanMessage(ask)])
        results.update({f"chat:{k}": v.model_dump(mode="json") for k, v in res.outputs.items()})
        text = res.text.strip()
        values, retrieved = grounding_inputs(results)
        problems = check(text, values, retrieved)
        ex.audit.append("answer_grounding", "explanation", attempt=attempt, answer_sha256=sha256_text(text), problems=problems)
        if not problems:
            return Answer(text, [], attempt)
    return Answer(text, problems, 2)
