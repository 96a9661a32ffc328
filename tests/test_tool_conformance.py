"""One contract, checked for every registered tool (in the spirit of LangGraph's checkpointer
conformance suite): a tool passes by being registered, with no test code of its own here.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from cardiomics.errors import CardiomicsError
from cardiomics.tools import ArtifactStore, ToolContext, call_tool, registry
from cardiomics.tools.imaging import SAMPLE_IDENTIFIERS

TOOLS = sorted(registry())
IDENTIFIER_STRINGS = [SAMPLE_IDENTIFIERS["patient_name"], "PHANTOM", SAMPLE_IDENTIFIERS["patient_id"], SAMPLE_IDENTIFIERS["birth_date"]]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return ToolContext(store=ArtifactStore(tmp_path_factory.mktemp("conformance")), seed=0)


@pytest.fixture(scope="module")
def examples(ctx):
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            spec = registry()[name]
            assert spec.example is not None, f"{name} registers no example arguments"
            cache[name] = spec.example(ctx)
        return cache[name]

    return get


def test_registry_is_not_empty():
    assert {"load_study", "segment", "cardiac_function", "report_figures", "render_report"} <= set(TOOLS)


@pytest.mark.parametrize("name", TOOLS)
def test_schemas_and_description(name):
    spec = registry()[name]
    assert len(name) <= 64 and name.isidentifier()
    assert len(spec.description) >= 40, "the description is what an external agent reads: say when to use the tool"
    ins, outs = spec.input_schema(), spec.output_schema()
    assert ins["type"] == "object" and outs["type"] == "object"
    assert "provenance" in outs["properties"]
    jsonschema.Draft202012Validator.check_schema(ins)
    jsonschema.Draft202012Validator.check_schema(outs)


@pytest.mark.parametrize("name", TOOLS)
def test_output_has_provenance_and_matches_schema(name, ctx, examples):
    spec = registry()[name]
    out = call_tool(name, examples(name), ctx)
    body = out.model_dump(mode="json")
    jsonschema.validate(body, spec.output_schema())
    prov = out.provenance
    assert prov is not None and prov.tool == name and prov.result_id.startswith("res-")
    assert "arguments" in prov.input_hashes
    content = {k: v for k, v in body.items() if k != "provenance"}
    assert any(v not in (None, "", [], {}) for v in content.values()), "an empty success is a failure"


@pytest.mark.parametrize("name", TOOLS)
def test_deterministic(name, ctx, examples):
    args = examples(name)
    a, b = call_tool(name, args, ctx), call_tool(name, args, ctx)
    assert a.provenance.result_id == b.provenance.result_id


@pytest.mark.parametrize("name", TOOLS)
def test_typed_error_on_bad_input(name, ctx):
    with pytest.raises(CardiomicsError) as exc:
        call_tool(name, {"__not_an_argument__": object()}, ctx) if registry()[name].input_schema().get("required") else \
            call_tool(name, {k: {"bad": "type"} for k in registry()[name].input_schema()["properties"]}, ctx)
    assert exc.value.code and exc.value.message


@pytest.mark.parametrize("name", TOOLS)
def test_no_identifier_in_output(name, ctx, examples):
    text = json.dumps(call_tool(name, examples(name), ctx).model_dump(mode="json"))
    for s in IDENTIFIER_STRINGS:
        assert s not in text
