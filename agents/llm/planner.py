"""The LLM planner: the ``Planner`` protocol with a model choosing each role's tool calls.

What stays deterministic, on purpose: the study and omics locations (the model names them by
handle), the patient's height, weight and sex (pinned), and the minimum protocol. After the
model's turn, any required step it skipped or ran on the wrong inputs is completed by the standard
protocol and the completion is audited, so a model that is confused, or steered by text in an input
file, can add context but cannot remove a step, change a measurement or skip an approval (approvals
are graph interrupts, outside any role's reach).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from langchain_core.messages import HumanMessage, SystemMessage

from cardiomics.config import Settings
from cardiomics.hashing import sha256_text
from cardiomics.tools import ToolOutput, registry

from ..executor import ToolExecutor
from ..protocol import DeterministicPlanner, Planner
from .config import LLMConfig, load_config, make_chat_model
from .loop import ModelCall, ToolLoop
from .messages import OMICS_HANDLE, STUDY_HANDLE, initial_messages, narrative_task, role_prompt, task, tool_specs
from .redact import IdentifierGuard

log = structlog.get_logger(__name__)

# the minimum processing protocol: (tool, the argument that must equal an earlier output's field)
PROCESSING_CHAIN = (
    ("load_study", None),
    ("segment", ("study_id", "load_study", "study_id")),
    ("cardiac_function", ("segmentation_id", "segment", "segmentation_id")),
    ("regional_function", ("segmentation_id", "segment", "segmentation_id")),
)


class LLMPlanner:
    """Implements ``Planner``; ``model`` is any langchain chat model that supports ``bind_tools``."""

    def __init__(self, model: Any, config: LLMConfig | None = None, *, model_name: str | None = None) -> None:
        self.model = model
        self.config = config or LLMConfig(model=model_name or "scripted", source="code")
        self.model_name = model_name or self.config.model
        self.name = f"llm:{self.model_name}"
        self.on_token: Callable[[str], None] | None = None  # a front end that renders streamed text sets this
        self._fallback = DeterministicPlanner()
        self._templates: dict[str, str] = {}

    @property
    def description(self) -> str:
        return f"{self.model_name} via OpenAI-compatible endpoint ({self.config.describe()['endpoint_host']})"

    # -- helpers ---------------------------------------------------------------------------------
    def _call(self, role: str, ex: ToolExecutor, state: dict[str, Any], stream: bool = False) -> ModelCall:
        ex.audit.append("llm_config", "system", planner=self.name, **self.config.describe(),
                        prompt_sha256={r: role_prompt(r)[1] for r in ("processing", "analysis", "explanation")},
                        once_key="llm:config")
        guard = IdentifierGuard.for_paths(state.get("study_path"), state.get("omics_path"))
        return ModelCall(self.model, self.model_name, role, ex, self.config.limit(role), guard,
                         stream=stream and self.config.stream, on_token=self.on_token if stream else None)

    @staticmethod
    def _handles(state: dict[str, Any]) -> dict[str, str]:
        handles = {STUDY_HANDLE: state["study_path"]}
        if state.get("omics_path"):
            handles[OMICS_HANDLE] = str(state["omics_path"])
        return handles

    @staticmethod
    def _keyed(outputs_seen: dict[str, int]) -> Callable[[str, dict], str]:
        """Repeated searches keep every result (each may be cited); other tools keep their last result."""

        def key_of(name: str, args: dict) -> str:
            if name != "knowledge_search":
                return name
            outputs_seen[name] = outputs_seen.get(name, 0) + 1
            return name if outputs_seen[name] == 1 else f"{name}#{outputs_seen[name]}"

        return key_of

    def _loop(self, role: str, ex: ToolExecutor, state: dict[str, Any], pins: dict | None = None):
        call = self._call(role, ex, state)
        loop = ToolLoop(call, tool_specs(role), self._handles(state), pins)
        return loop.run(initial_messages(role, task(role, state)), self._keyed({}))

    @staticmethod
    def _completed(ex: ToolExecutor, role: str, filled: list[str], reason: str) -> None:
        if filled:
            ex.audit.append("plan_completed", "system", role=role, steps=filled, reason=reason)

    # -- Planner ---------------------------------------------------------------------------------
    def processing(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]:
        patient = state.get("patient") or {}
        pins = {"cardiac_function": {k: patient.get(k) for k in ("height_cm", "weight_kg", "sex")}}
        res = self._loop("processing", ex, state, pins)
        out = dict(res.outputs)
        filled: list[str] = []
        tools = registry()
        for name, link in PROCESSING_CHAIN:
            if name not in tools:
                continue
            prev_ok = link is None or (link[1] in out and name in out and
                                       out[name].provenance.parameters.get(link[0]) == getattr(out[link[1]], link[2]))
            if name == "load_study" and name in out:
                prev_ok = out[name].provenance.input_hashes.get("arguments") is not None
            if name in out and prev_ok:
                continue
            args: dict[str, Any] = {"path": state["study_path"]} if link is None else {link[0]: getattr(out[link[1]], link[2])}
            if name == "cardiac_function":
                args.update({k: v for k, v in patient.items() if v is not None})
            out[name] = ex.call("processing", name, args, step=f"protocol:{name}")
            filled.append(name)
        self._completed(ex, "processing", filled, "the model did not run these steps on the loaded study")
        return out

    def analysis(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]:
        res = self._loop("analysis", ex, state)
        out = dict(res.outputs)
        if state.get("omics_path") and "load_omics" not in out:  # molecular context was asked for: never drop it
            base = self._fallback.analysis(ex, state)
            missing = [k for k in base if k not in out]
            out.update({k: base[k] for k in missing})
            self._completed(ex, "analysis", missing, "an omics file was given but the model did not load it")
        return out

    def explanation(self, ex: ToolExecutor, state: dict[str, Any]) -> dict[str, ToolOutput]:
        results = state["results"]
        res = self._loop("explanation", ex, state)
        out = dict(res.outputs)
        want = {"study_id": results["load_study"]["study_id"], "segmentation_id": results["segment"]["segmentation_id"]}
        figs = out.get("report_figures")
        if figs is None or any(figs.provenance.parameters.get(k) != v for k, v in want.items()):
            out["report_figures"] = ex.call("explanation", "report_figures", want, step="protocol:report_figures")
            self._completed(ex, "explanation", ["report_figures"], "the model did not draw this study's figures")
        return out

    def narrative(self, ex: ToolExecutor, state: dict[str, Any], template_text: str, problems: list[str]) -> str:
        key = f"{state.get('run_id')}:{state.get('report_version', 0)}"
        if not problems:
            self._templates[key] = template_text
        template = self._templates.get(key, template_text)
        previous = template_text if problems else None
        call = self._call("explanation", ex, state)
        loop = ToolLoop(call, [], {})
        prompt, _ = role_prompt("explanation")
        text = loop.run([SystemMessage(prompt), HumanMessage(narrative_task(state, template, previous, problems))]).text.strip()
        ex.audit.append("narrative_draft", "llm:explanation", draft_sha256=sha256_text(text), chars=len(text),
                        redraft=bool(problems), problems_given=len(problems))
        return text or template  # an empty reply falls back to the grounded template


def planner_from_settings(settings: Settings | None = None, config_path: str | None = None) -> Planner | None:
    """An ``LLMPlanner`` when a model is configured, else ``None`` (the graph's deterministic planner)."""
    cfg = load_config(settings, config_path)
    if cfg is None:
        return None
    return LLMPlanner(make_chat_model(cfg), cfg)
