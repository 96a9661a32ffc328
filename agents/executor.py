"""Where every tool call of the graph executes: allow-list, validation, audit.

The allow-list is enforced here, when the call runs, not only in a prompt: a call outside the
role's list is refused with a typed error and the refusal is audited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from cardiomics.audit import AuditTrail
from cardiomics.errors import CardiomicsError, PolicyError
from cardiomics.hashing import sha256_json
from cardiomics.tools import ToolContext, ToolOutput, call_tool, registry

from .roles import allowed_tools

log = structlog.get_logger(__name__)


@dataclass
class ToolExecutor:
    ctx: ToolContext
    audit: AuditTrail
    epoch: str = ""  # which execution of a node this is (e.g. "explanation:v2"): a legitimate repeat logs again

    def call(self, role: str, name: str, arguments: dict, *, step: str | None = None) -> ToolOutput:
        """Run one tool for ``role``; audit it once per ``step`` key (a resumed node does not log twice)."""
        args_hash = sha256_json(arguments)
        once = f"{self.epoch}:{role}:{step or name}:{args_hash}"
        if name not in allowed_tools(role):
            self.audit.append("tool_refused", role, tool=name, args_sha256=args_hash, reason="not in the role's allow-list")
            raise PolicyError("tool-not-allowed", f"the {role} agent may not call {name!r}",
                              hint=f"allowed for {role}: {', '.join(sorted(allowed_tools(role)))}")
        started = time.perf_counter()
        try:
            out = call_tool(name, arguments, self.ctx)
        except CardiomicsError as exc:
            self.audit.append("tool_error", role, tool=name, args_sha256=args_hash, code=exc.code, error=exc.kind,
                              once_key=once + ":error")
            raise
        duration = time.perf_counter() - started
        prov = out.provenance
        self.audit.append_once(
            once, "tool_call", role, tool=name, tool_version=prov.tool_version, args_sha256=args_hash,
            result_sha256=sha256_json(out.model_dump(mode="json", exclude={"provenance"})), result_id=prov.result_id,
            models=[f"{m.id}@{m.version}:{m.weights_sha256[:16]}" for m in prov.models], duration_s=round(duration, 4),
        )
        log.debug("tool call", tool=name, role=role, seconds=round(duration, 3))
        return out


def tool_names() -> list[str]:
    return sorted(registry())
