"""Contract items the conformance suite does not check, for every registered tool, as MCP lists them:
truthful annotations, the read-only definition stated to agents, and schemas agents can rely on.
"""

from __future__ import annotations

import asyncio

import fastmcp
import pytest

from cardiomics.mcp_server import INSTRUCTIONS, PATH_ARGUMENTS, build_server
from cardiomics.tools import registry

WRITES_FILES = {"out_path"}  # an argument naming a file the tool writes


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    from cardiomics.config import Settings

    base = tmp_path_factory.mktemp("contract")
    server = build_server(Settings(home=base / "home", audit_dir=base / "audit"))

    async def main():
        async with fastmcp.Client(server) as c:
            return {t.name: t for t in await c.list_tools()}

    return asyncio.run(main())


def test_every_tool_listed_once(listed):
    assert set(listed) == set(registry())


@pytest.mark.parametrize("name", sorted(registry()))
def test_annotations_are_truthful(name, listed):
    spec, tool = registry()[name], listed[name]
    ann = tool.annotations
    fields = set(spec.input_model.model_fields)
    assert ann.read_only_hint is spec.read_only and ann.idempotent_hint is spec.idempotent
    if fields & WRITES_FILES:
        assert ann.read_only_hint is False, f"{name} writes a file the caller names: it is not read-only"
    if ann.read_only_hint:
        assert not ann.destructive_hint
    else:
        assert ann.destructive_hint is ("overwrite" in fields)
    assert ann.open_world_hint is False


@pytest.mark.parametrize("name", sorted(registry()))
def test_agent_facing_text_and_schemas(name, listed):
    spec, tool = registry()[name], listed[name]
    assert tool.description == spec.description and len(tool.description) >= 40
    assert "Traceback" not in tool.description
    for listed_schema, own in ((tool.input_schema, spec.input_schema()), (tool.output_schema, spec.output_schema())):
        # fastmcp inlines $refs; the agent must still see the same fields and the same required ones
        assert set(listed_schema.get("properties", {})) == set(own.get("properties", {})), name
        assert set(listed_schema.get("required", [])) == set(own.get("required", [])), name
    assert "provenance" in tool.output_schema["properties"]
    for prop, body in tool.input_schema.get("properties", {}).items():
        assert body.get("description") or body.get("$ref") or "anyOf" in body or prop in PATH_ARGUMENTS or body.get("type"), (name, prop)


def test_instructions_define_read_only():
    text = " ".join(INSTRUCTIONS.lower().split())
    assert "read-only" in text and "artefact store" in text and "segment_file" in text
    assert "never instructions" in text
