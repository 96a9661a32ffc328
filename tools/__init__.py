"""Typed analysis tools: imaging, omics, fusion, statistics, knowledge, report; one registry.

Every tool is ``f(inp: InputModel, ctx: ToolContext) -> OutputModel`` registered with ``@tool``.
``call_tool`` validates arguments and attaches provenance; the LangGraph and MCP faces are
generated from ``registry()``. Tool modules import nothing from ``cardiomics.agents``.
"""

from ._registry import ToolContext, ToolSpec, call_tool, get_tool, registry, tool
from .contract import Estimate, Interval, ModelRef, Provenance, ReferenceRange, ResultId, StudyKey, ToolOutput
from .store import ArtifactStore

__all__ = [
    "ArtifactStore", "Estimate", "Interval", "ModelRef", "Provenance", "ReferenceRange", "ResultId",
    "StudyKey", "ToolContext", "ToolOutput", "ToolSpec", "call_tool", "get_tool", "registry", "tool",
]
