"""Which chat model drives the graph: a TOML file and the usual environment variables.

Looked up in this order (later wins): ``<CARDIOMICS_HOME>/llm.toml`` (or the file given with
``--llm-config``), then ``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` and ``CARDIOMICS_LLM_MODEL``. A model
is configured only when a model name is given: an API key alone (common in a shell) does not
switch the graph away from the deterministic planner. The key is never logged or audited.

Example ``llm.toml``::

    base_url = "http://localhost:8000/v1"
    model = "qwen2.5-14b-instruct"
    api_key = "sk-local"            # or leave out and export OPENAI_API_KEY
    timeout_s = 60
    [limits.analysis]
    max_tool_calls = 10
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from cardiomics.config import Settings
from cardiomics.errors import InputError

ROLES = ("processing", "analysis", "explanation", "chat")


class RoleLimits(BaseModel):
    """Bounds on one role's work per node: tool calls, model requests and tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_tool_calls: int = Field(8, ge=0, le=100)
    max_requests: int = Field(10, ge=1, le=100, description="Model requests per node (tool turns + final answer).")
    max_output_tokens: int = Field(1024, ge=16, le=32768, description="Per response (sent as max_tokens).")
    max_total_tokens: int = Field(60000, ge=256, description="Per node, from the endpoint's usage report (or chars/4).")


DEFAULT_LIMITS = {
    "processing": RoleLimits(max_tool_calls=8, max_requests=10),
    "analysis": RoleLimits(max_tool_calls=12, max_requests=14),
    "explanation": RoleLimits(max_tool_calls=6, max_requests=8, max_output_tokens=1500),
    "chat": RoleLimits(max_tool_calls=4, max_requests=6, max_output_tokens=800),
}


class LLMConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key: SecretStr | None = None
    temperature: float = 0.0
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(1, ge=0, le=5)
    stream: bool = True
    limits: dict[str, RoleLimits] = Field(default_factory=lambda: dict(DEFAULT_LIMITS))
    source: str = "env"

    def limit(self, role: str) -> RoleLimits:
        return self.limits.get(role, DEFAULT_LIMITS.get(role, RoleLimits()))

    def describe(self) -> dict[str, Any]:
        """What the audit trail records: the model and the endpoint's host, never the key."""
        host = urlsplit(self.base_url).netloc if self.base_url else "api.openai.com (default)"
        return {"model": self.model, "endpoint_host": host, "temperature": self.temperature, "source": self.source,
                "limits": {r: lim.model_dump() for r, lim in sorted(self.limits.items())}}


def default_path(settings: Settings) -> Path:
    return settings.home / "llm.toml"


def load_config(settings: Settings | None = None, path: str | Path | None = None,
                env: dict[str, str] | None = None) -> LLMConfig | None:
    """The configured model, or ``None`` (deterministic planner) when no model name is given anywhere."""
    env = dict(os.environ if env is None else env)
    settings = settings or Settings.from_env()
    file = Path(path).expanduser() if path else default_path(settings)
    data: dict[str, Any] = {}
    if path and not file.exists():
        raise InputError("no-llm-config", f"LLM config file {file} does not exist",
                         hint="write base_url, model (and api_key) in a TOML file, or set CARDIOMICS_LLM_MODEL")
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise InputError("bad-llm-config", f"{file} is not valid TOML: {exc}", hint="see `cardiomics chat --help`") from None
        data["source"] = f"file:{file.name}"
    for var, key in (("OPENAI_BASE_URL", "base_url"), ("OPENAI_API_KEY", "api_key"), ("CARDIOMICS_LLM_MODEL", "model")):
        if env.get(var):
            data[key] = env[var]
    if not data.get("model"):
        return None
    limits = {**DEFAULT_LIMITS}
    for role, over in (data.pop("limits", None) or {}).items():
        if role not in ROLES:
            raise InputError("bad-llm-config", f"unknown role {role!r} under [limits]", hint=f"roles: {', '.join(ROLES)}")
        limits[role] = DEFAULT_LIMITS.get(role, RoleLimits()).model_copy(update=over)
    try:
        return LLMConfig(**data, limits=limits)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError("bad-llm-config", f"LLM configuration is invalid: {problems}", hint="see `cardiomics chat --help`") from None


def make_chat_model(cfg: LLMConfig):
    """A ``ChatOpenAI`` for any OpenAI-compatible endpoint (built lazily: importing it is slow)."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=cfg.model, base_url=cfg.base_url, api_key=cfg.api_key or SecretStr("not-needed"),
                      temperature=cfg.temperature, timeout=cfg.timeout_s, max_retries=cfg.max_retries,
                      stream_usage=True)


HOW_TO_CONFIGURE = (
    "No language model is configured, so the graph runs its deterministic protocol. To let a model drive it, "
    "write <CARDIOMICS_HOME>/llm.toml with base_url, model and api_key (any OpenAI-compatible endpoint), "
    "or export OPENAI_BASE_URL, OPENAI_API_KEY and CARDIOMICS_LLM_MODEL."
)
