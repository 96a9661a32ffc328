"""One registry of tools. The LangGraph face and the MCP face are both generated from it.

A tool is a pure function ``f(inp: InputModel, ctx: ToolContext) -> OutputModel``. The registry
validates arguments, times the call, hashes inputs and output and attaches provenance, so no tool
repeats that work and every tool is audited the same way.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

import structlog
from pydantic import BaseModel, ValidationError

from cardiomics.errors import CardiomicsError, InputError, NotFoundError, ToolFailure
from cardiomics.hashing import sha256_json

from .contract import ModelRef, Provenance, ToolOutput

log = structlog.get_logger(__name__)

Role = Literal["processing", "analysis", "explanation"]


@dataclass
class ToolContext:
    """What a tool may use besides its arguments: the artefact store and a seed."""

    store: Any  # cardiomics.tools.store.ArtifactStore (kept untyped to avoid a cycle)
    seed: int = 0
    models: list[ModelRef] = field(default_factory=list)
    input_hashes: dict[str, str] = field(default_factory=dict)

    def used_model(self, ref: ModelRef) -> None:
        if ref not in self.models:
            self.models.append(ref)

    def used_input(self, name: str, digest: str) -> None:
        self.input_hashes[name] = digest


@dataclass(frozen=True)
class ToolSpec:
    name: str
    func: Callable[[BaseModel, ToolContext], ToolOutput]
    input_model: type[BaseModel]
    output_model: type[ToolOutput]
    role: Role
    version: str
    description: str
    read_only: bool
    idempotent: bool
    example: Callable[[ToolContext], dict] | None = None
    private: tuple[str, ...] = ()

    def input_schema(self) -> dict:
        return self.input_model.model_json_schema()

    def output_schema(self) -> dict:
        return self.output_model.model_json_schema()


_REGISTRY: dict[str, ToolSpec] = {}


def tool(*, role: Role, version: str = "1.0.0", read_only: bool = True, idempotent: bool = True,
         example: Callable[[ToolContext], dict] | None = None, private: tuple[str, ...] = ()):
    """Register a tool. Its docstring is what an external agent reads to decide when to call it.

    ``read_only``: the tool writes nothing but derived artefacts in the store (never inputs).
    ``example``: builds valid arguments for the conformance suite.
    ``private``: argument names (paths, free text) recorded in provenance only as a hash, since a
    folder name may carry a patient's name.
    """

    def decorate(func):
        hints = get_type_hints(func)
        params = list(inspect.signature(func).parameters)
        if len(params) != 2:
            raise TypeError(f"tool {func.__name__} must take (inp, ctx)")
        input_model, output_model = hints[params[0]], hints["return"]
        if not issubclass(output_model, ToolOutput):
            raise TypeError(f"tool {func.__name__} must return a ToolOutput subclass")
        name = func.__name__
        if len(name) > 64 or name in _REGISTRY:
            raise ValueError(f"tool name {name!r} is too long or already registered")
        _REGISTRY[name] = ToolSpec(
            name=name, func=func, input_model=input_model, output_model=output_model, role=role,
            version=version, description=inspect.cleandoc(func.__doc__ or ""), read_only=read_only,
            idempotent=idempotent, example=example, private=private,
        )
        return func

    return decorate


def registry() -> dict[str, ToolSpec]:
    """All registered tools, by name (importing the tool modules registers them)."""
    from . import _catalogue  # noqa: F401  (side effect: registration)

    return dict(_REGISTRY)


def get_tool(name: str) -> ToolSpec:
    tools = registry()
    if name not in tools:
        raise NotFoundError("unknown-tool", f"no tool named {name!r}",
                            hint=f"available tools: {', '.join(sorted(tools))}")
    return tools[name]


def call_tool(name: str, arguments: dict | BaseModel, ctx: ToolContext) -> ToolOutput:
    """Validate, run, and attach provenance. Raises only CardiomicsError subclasses."""
    spec = get_tool(name)
    try:
        inp = arguments if isinstance(arguments, spec.input_model) else spec.input_model.model_validate(
            arguments.model_dump() if isinstance(arguments, BaseModel) else arguments)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
        raise InputError("invalid-arguments", f"{name}: {problems}",
                         hint=f"see the input schema of {name}") from None
    ctx.models, ctx.input_hashes = [], {}
    started = time.perf_counter()
    try:
        out = spec.func(inp, ctx)
    except CardiomicsError:
        raise
    except Exception as exc:  # a defect or an unforeseen input: typed for the caller, traceback to the log
        log.error("tool raised", tool=name, exc_info=True)
        raise ToolFailure("tool-failed", f"{name} failed: {type(exc).__name__}: {str(exc)[:300]}",
                          hint="check the inputs; if they are valid this is a defect (the traceback is in the log)") from exc
    duration = time.perf_counter() - started
    args_json = inp.model_dump(mode="json")
    shown = {k: (f"sha256:{sha256_json(v)[:16]}" if k in spec.private else v) for k, v in args_json.items()}
    body = out.model_dump(mode="json", exclude={"provenance"})
    prov = Provenance(
        tool=name, tool_version=spec.version, result_id=f"res-{sha256_json(body)[:24]}",
        models=list(ctx.models), input_hashes={"arguments": sha256_json(args_json), **ctx.input_hashes},
        parameters=shown, seed=ctx.seed, duration_s=round(duration, 4),
    )
    return out.model_copy(update={"provenance": prov})
