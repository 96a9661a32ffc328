"""The bounded tool-calling loop of one role: every model tool call goes through the executor.

Per model request the loop audits what was sent (hash, size, prompt hash, model) and what came back
(hash, size, tool calls, token usage); it refuses to send a request holding an identifier; it maps
study handles back to paths and pins arguments the model must not choose (the patient's height,
weight and sex). A refused, malformed or failing call is answered with a typed error message the
model can correct, and the refusal is audited. Steps, tool calls and tokens are bounded per role.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage

from cardiomics.errors import CardiomicsError, PolicyError
from cardiomics.hashing import canonical_json, sha256_text
from cardiomics.tools import ToolOutput, registry

from ..executor import ToolExecutor
from .config import RoleLimits
from .errors import LLMUnavailable, is_connection_failure
from .messages import path_args, request_text, role_prompt
from .redact import WITHHELD, IdentifierGuard, render, scrub

log = structlog.get_logger(__name__)

Tokens = Callable[[str], None]


@dataclass
class LoopResult:
    outputs: dict[str, ToolOutput] = field(default_factory=dict)
    text: str = ""
    tool_calls: list[str] = field(default_factory=list)
    requests: int = 0
    tokens: int = 0
    exhausted: bool = False


@dataclass
class ModelCall:
    """One role's connection to the model: what every request is audited with."""

    model: Any  # a langchain BaseChatModel
    model_name: str
    role: str
    ex: ToolExecutor
    limits: RoleLimits
    guard: IdentifierGuard
    stream: bool = False
    on_token: Tokens | None = None
    tokens_used: int = 0
    requests: int = 0

    @property
    def actor(self) -> str:
        return f"llm:{self.role}"

    def send(self, runnable, messages: list[BaseMessage], tools: list[dict[str, Any]]) -> AIMessage:
        """Audit, guard, invoke (or stream), audit the reply; endpoint failures pause the run."""
        if self.requests >= self.limits.max_requests:
            raise PolicyError("llm-step-budget", f"the {self.role} agent used its {self.limits.max_requests} model requests",
                              hint="raise [limits] max_requests in llm.toml if this study needs more")
        if self.tokens_used >= self.limits.max_total_tokens:
            raise PolicyError("llm-token-budget", f"the {self.role} agent used its {self.limits.max_total_tokens} tokens",
                              hint="raise [limits] max_total_tokens in llm.toml")
        text = request_text(messages, tools)
        self.guard.check(text)
        _, prompt_sha = role_prompt(self.role)
        self.requests += 1
        audit = self.ex.audit
        audit.append("llm_request", self.actor, role=self.role, model=self.model_name, prompt_sha256=prompt_sha,
                     request_sha256=sha256_text(text), request_chars=len(text), n_messages=len(messages),
                     tools=sorted(t["function"]["name"] for t in tools), step=self.requests, epoch=self.ex.epoch,
                     max_output_tokens=self.limits.max_output_tokens)
        started = time.perf_counter()
        try:
            reply = self._invoke(runnable, messages)
        except (CardiomicsError, LLMUnavailable):
            raise
        except Exception as exc:  # the endpoint, not our request: pause, keep the run resumable
            transient = is_connection_failure(exc)
            audit.append("llm_unavailable", self.actor, role=self.role, model=self.model_name, error=type(exc).__name__,
                         transient=transient)
            raise LLMUnavailable("llm-unreachable" if transient else "llm-failed",
                                 f"the language model ({self.model_name}) {'could not be reached' if transient else 'failed'}: "
                                 f"{type(exc).__name__}", hint="the run is paused at its last checkpoint; fix the endpoint "
                                 "(llm.toml / OPENAI_BASE_URL) and resume it (`resume` in chat)") from exc
        seconds = time.perf_counter() - started
        body = reply.content if isinstance(reply.content, str) else canonical_json(reply.content)
        calls = [{"name": c["name"], "args": c["args"]} for c in reply.tool_calls]
        reply_text = canonical_json({"content": body, "tool_calls": calls})
        usage = dict(reply.usage_metadata) if getattr(reply, "usage_metadata", None) else None
        spent = (usage or {}).get("total_tokens") or (len(text) + len(reply_text)) // 4
        self.tokens_used += int(spent)
        meta = reply.response_metadata or {}
        audit.append("llm_response", self.actor, role=self.role, model=meta.get("model_name") or self.model_name,
                     response_sha256=sha256_text(reply_text), response_chars=len(reply_text),
                     tool_calls=[c["name"] for c in calls], invalid_tool_calls=len(reply.invalid_tool_calls),
                     usage=usage, tokens_estimated=usage is None, finish_reason=meta.get("finish_reason"),
                     model_s=round(seconds, 4), step=self.requests)
        return reply

    def _invoke(self, runnable, messages: list[BaseMessage]) -> AIMessage:
        if not (self.stream and self.on_token):
            return runnable.invoke(messages)
        total: AIMessageChunk | None = None
        for chunk in runnable.stream(messages):
            if isinstance(chunk.content, str) and chunk.content:
                self.on_token(chunk.content)
            total = chunk if total is None else total + chunk
        if total is None:
            return AIMessage("")
        return AIMessage(content=total.content, tool_calls=total.tool_calls, invalid_tool_calls=total.invalid_tool_calls,
                         usage_metadata=total.usage_metadata, response_metadata=total.response_metadata)


def _error_message(call_id: str, name: str, exc: CardiomicsError | dict[str, str], mask: Callable[[str], str]) -> ToolMessage:
    data = exc.to_dict() if isinstance(exc, CardiomicsError) else exc
    data = {k: mask(str(v)) for k, v in data.items()}
    return ToolMessage(json.dumps({"error": data, "note": "correct the call and try again, or stop"}),
                       tool_call_id=call_id, name=name, status="error")


class ToolLoop:
    """Runs one role's conversation to its end or its bounds."""

    def __init__(self, call: ModelCall, tools: list[dict[str, Any]], handles: dict[str, str],
                 pins: dict[str, dict[str, Any]] | None = None) -> None:
        self.call, self.tools, self.handles, self.pins = call, tools, handles, pins or {}
        self.runnable = call.model.bind_tools(tools, max_tokens=call.limits.max_output_tokens) if tools else \
            call.model.bind(max_tokens=call.limits.max_output_tokens)

    def mask(self, text: str) -> str:
        for handle, real in self.handles.items():
            text = text.replace(real, handle)
        return " ".join(WITHHELD if t.startswith(("/", "~")) else t for t in scrub(text).split(" "))

    def _refuse(self, name: str, reason: str, code: str, call_id: str) -> ToolMessage:
        self.call.ex.audit.append("tool_refused", self.call.actor, tool=name, reason=reason, code=code,
                                  step=self.call.requests)
        return _error_message(call_id, name, {"error": "PolicyError", "code": code, "message": reason, "hint": ""}, self.mask)

    def _prepare(self, name: str, args: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """Map handles to paths and apply pins; a reason instead of arguments means refuse."""
        if name not in registry():
            return dict(args), ""  # the executor refuses (and audits) unknown and disallowed names
        args = dict(args)
        for arg in path_args(name):
            if arg in args and args[arg] is not None:
                if args[arg] not in self.handles:
                    return None, f"{arg} must be one of the handles {sorted(self.handles)}; file paths are not accepted"
                args[arg] = self.handles[args[arg]]
        for arg, value in self.pins.get(name, {}).items():
            if arg in args and args[arg] is not None and args[arg] != value:
                return None, f"{arg} is fixed by the run to {value!r}; leave it out"
            if value is not None:
                args[arg] = value
        return args, ""

    def run(self, messages: list[BaseMessage], key_of: Callable[[str, dict], str] | None = None) -> LoopResult:
        res = LoopResult()
        limits = self.call.limits
        n_calls = 0
        while True:
            if self.call.requests >= limits.max_requests or self.call.tokens_used >= limits.max_total_tokens:
                res.exhausted = True
                self.call.ex.audit.append("llm_budget_exhausted", self.call.actor, role=self.call.role,
                                          requests=self.call.requests, tool_calls=n_calls)
                break
            reply = self.call.send(self.runnable, messages, self.tools)
            messages.append(reply)
            if not reply.tool_calls and not reply.invalid_tool_calls:
                res.text = reply.content if isinstance(reply.content, str) else ""
                break
            for bad in reply.invalid_tool_calls:
                name = bad.get("name") or "?"
                messages.append(self._refuse(name, "the arguments are not valid JSON", "malformed-arguments",
                                             bad.get("id") or "invalid"))
            for tc in reply.tool_calls:
                name, call_id = tc["name"], tc.get("id") or f"call-{n_calls}"
                n_calls += 1
                if n_calls > limits.max_tool_calls:
                    messages.append(self._refuse(name, f"tool-call budget of {limits.max_tool_calls} reached; answer now",
                                                 "tool-budget", call_id))
                    continue
                args, reason = self._prepare(name, tc["args"] if isinstance(tc["args"], dict) else {})
                if args is None:
                    messages.append(self._refuse(name, reason, "argument-refused", call_id))
                    continue
                try:
                    out = self.call.ex.call(self.call.role, name, args, step=f"llm{self.call.requests}.{n_calls}")
                except CardiomicsError as exc:  # refused by the allow-list, invalid arguments, tool error: all audited
                    messages.append(_error_message(call_id, name, exc, self.mask))
                    continue
                res.tool_calls.append(name)
                key = key_of(name, args) if key_of else name
                res.outputs[key] = out
                messages.append(ToolMessage(render(out.model_dump(mode="json")), tool_call_id=call_id, name=name))
        res.requests, res.tokens = self.call.requests, self.call.tokens_used
        return res
