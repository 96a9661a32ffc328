"""A scripted chat model: replays a list of replies, for tests, benchmarks and offline demos.

It never decides anything: each reply is an ``AIMessage`` (with ``tool_calls`` for tool turns) or a
function of the messages so far (so a script can pass on the ``study_id`` a tool just returned).
Every request it receives is kept in ``requests`` so a test can inspect exactly what a real
endpoint would have been sent. ``fail_on`` makes chosen requests raise a connection error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

Reply = AIMessage | Callable[[list[BaseMessage]], AIMessage]


class ScriptedChatModel(FakeMessagesListChatModel):
    script: list[Any] = []
    requests: list[list[BaseMessage]] = []
    tools_seen: list[list[str]] = []
    fail_on: set[int] = set()
    usage: bool = True

    def __init__(self, script: Sequence[Reply], **kw: Any) -> None:
        super().__init__(responses=[AIMessage("")], script=list(script), requests=[], tools_seen=[], **kw)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):  # the base class raises: tools go through bind()
        return self.bind(tools=list(tools), **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager=None, **kwargs: Any) -> ChatResult:
        n = len(self.requests)
        self.requests.append(list(messages))
        self.tools_seen.append([t["function"]["name"] for t in kwargs.get("tools", [])])
        if n in self.fail_on:
            import httpx
            import openai

            raise openai.APIConnectionError(request=httpx.Request("POST", "http://llm.invalid/v1/chat/completions"))
        if n >= len(self.script):
            reply = AIMessage("Done.")
        else:
            item = self.script[n]
            reply = item(messages) if callable(item) else item
        if self.usage and reply.usage_metadata is None:
            chars = sum(len(str(m.content)) for m in messages)
            reply = reply.model_copy(update={"usage_metadata": {"input_tokens": chars // 4, "output_tokens": len(str(reply.content)) // 4 + 8,
                                                                "total_tokens": chars // 4 + len(str(reply.content)) // 4 + 8}})
        return ChatResult(generations=[ChatGeneration(message=reply)])

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    def request_texts(self) -> list[str]:
        return [json.dumps([{"type": m.type, "content": m.content, "tool_calls": getattr(m, "tool_calls", None)}
                            for m in msgs], default=str, ensure_ascii=False) for msgs in self.requests]


def last_result(messages: list[BaseMessage], tool: str) -> dict[str, Any]:
    """The JSON the model saw from the latest successful ``tool`` result (quoted block stripped)."""
    for m in reversed(messages):
        if isinstance(m, ToolMessage) and m.name == tool and m.status != "error":
            return json.loads(m.content.split("\n<<<QUOTED-INPUT-TEXT", 1)[0])
    raise LookupError(f"no {tool} result in the conversation")


def call(name: str, args: dict[str, Any] | Callable[[list[BaseMessage]], dict[str, Any]], n: int = 0) -> Reply:
    """A reply that calls one tool; ``args`` may be computed from the conversation."""

    def reply(messages: list[BaseMessage]) -> AIMessage:
        a = args(messages) if callable(args) else args
        return AIMessage("", tool_calls=[{"name": name, "args": a, "id": f"call-{name}-{n}-{len(messages)}", "type": "tool_call"}])

    return reply


def say(text: str) -> AIMessage:
    return AIMessage(text)


def standard_processing() -> list[Reply]:
    """The processing protocol as a model would run it."""
    return [
        call("load_study", {"path": "input:study"}),
        call("segment", lambda m: {"study_id": last_result(m, "load_study")["study_id"]}),
        call("cardiac_function", lambda m: {"segmentation_id": last_result(m, "segment")["segmentation_id"]}),
        call("regional_function", lambda m: {"segmentation_id": last_result(m, "segment")["segmentation_id"]}),
        say("Processing complete; the segmentation awaits QC approval."),
    ]


def task_results(messages: list[BaseMessage]) -> dict[str, Any]:
    """The de-identified results a task message carried (the one-line JSON object after its heading)."""
    for m in reversed(messages):
        if m.type == "human" and isinstance(m.content, str):
            for line in m.content.splitlines():
                if line.startswith("{"):
                    return json.loads(line)
    raise LookupError("no results in the task message")


def ids(messages: list[BaseMessage]) -> dict[str, str]:
    r = task_results(messages)
    return {"study_id": r["load_study"]["study_id"], "segmentation_id": r["segment"]["segmentation_id"]}
