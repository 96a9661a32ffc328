"""MCP face of the tool registry: a thin adapter, not a second implementation.

Each registry tool becomes an MCP tool with the same name, description (the tool's docstring),
input and output JSON schemas and truthful annotations. Calls run through ``call_tool`` (the same
validation and provenance as in the graph) and are audited in a daily ``mcp-YYYYMMDD`` trail.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools.base import Tool, ToolResult
from mcp.types import ToolAnnotations

from cardiomics import __version__
from cardiomics.audit import AuditTrail
from cardiomics.config import Settings
from cardiomics.errors import CardiomicsError
from cardiomics.hashing import sha256_json
from cardiomics.tools import ArtifactStore, ToolContext, ToolSpec, call_tool, registry


class RegistryTool(Tool):
    """An MCP tool backed by one registry entry."""

    spec: Any = None
    server_settings: Any = None
    caller: str = "mcp-stdio"

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        return await asyncio.to_thread(self._call, arguments)

    def _call(self, arguments: dict[str, Any]) -> ToolResult:
        settings: Settings = self.server_settings
        ctx = ToolContext(store=ArtifactStore(settings.artifacts_dir))
        audit = AuditTrail(settings.audit_dir, f"mcp-{datetime.now(timezone.utc):%Y%m%d}")
        args_hash = sha256_json(arguments)
        try:
            out = call_tool(self.spec.name, arguments, ctx)
        except CardiomicsError as exc:
            audit.append("tool_error", self.caller, tool=self.spec.name, args_sha256=args_hash, code=exc.code, error=exc.kind)
            raise ToolError(json.dumps(exc.to_dict())) from None
        body = out.model_dump(mode="json")
        audit.append("tool_call", self.caller, tool=self.spec.name, args_sha256=args_hash,
                     result_id=out.provenance.result_id, duration_s=out.provenance.duration_s)
        return ToolResult(content=json.dumps(body), structured_content=body)


def _tool(spec: ToolSpec, settings: Settings) -> RegistryTool:
    return RegistryTool(
        name=spec.name, description=spec.description, parameters=spec.input_schema(), output_schema=spec.output_schema(),
        annotations=ToolAnnotations(title=spec.name.replace("_", " "), readOnlyHint=spec.read_only,
                                    idempotentHint=spec.idempotent, destructiveHint=False, openWorldHint=False),
        spec=spec, server_settings=settings,
    )


def build_server(settings: Settings | None = None) -> FastMCP:
    settings = (settings or Settings.from_env()).ensure()
    mcp = FastMCP("cardiomics", version=__version__,
                  instructions="Validated cardiac MRI and multiomics tools. Start with load_study on a short-axis cine "
                               "study; pass the returned ids to the next tools. Every output carries provenance.")
    for spec in registry().values():
        mcp.add_tool(_tool(spec, settings))
    return mcp
