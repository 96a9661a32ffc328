"""The MCP face: every registry tool listed with schemas, callable, typed errors on bad arguments."""

from __future__ import annotations

import asyncio
import json

import fastmcp
import pytest
from fastmcp.exceptions import ToolError

from cardiomics.mcp_server import build_server
from cardiomics.tools import ArtifactStore, ToolContext, registry


def run(coro):
    return asyncio.run(coro)


def _title_annotations(node):
    # a "title" key holding text is pydantic's annotation; one holding a schema is a field named title
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                yield value
            else:
                yield from _title_annotations(value)
    elif isinstance(node, list):
        for value in node:
            yield from _title_annotations(value)


def test_lists_every_tool_with_schemas(settings):
    server = build_server(settings)

    async def main():
        async with fastmcp.Client(server) as c:
            return await c.list_tools()

    tools = {t.name: t for t in run(main())}
    assert set(tools) == set(registry())
    for name, t in tools.items():
        assert t.input_schema["type"] == "object" and t.output_schema["type"] == "object", name
        assert t.description and t.annotations.read_only_hint is registry()[name].read_only
        # self-contained (some clients cannot follow $ref) and without pydantic's per-field titles
        for schema in (t.input_schema, t.output_schema):
            text = json.dumps(schema)
            assert "$ref" not in text and "$defs" not in text, name
            assert not list(_title_annotations(schema)), name
        # the HTTP transport's Mcp-Param check finds the same input schema without listing every tool
        assert server._mcp_server.get_tool_input_schema(name) == t.input_schema, name
    assert server._mcp_server.get_tool_input_schema("no_such_tool") is None


def test_calls_each_tool_and_audits(settings):
    server = build_server(settings)
    ctx = ToolContext(store=ArtifactStore(settings.artifacts_dir))
    examples = {name: spec.example(ctx) for name, spec in sorted(registry().items())}

    async def main():
        out = {}
        async with fastmcp.Client(server) as c:
            for name, args in examples.items():
                r = await c.call_tool(name, args)
                out[name] = r.structured_content
        return out

    results = run(main())
    for name, body in results.items():
        assert body["provenance"]["tool"] == name
    trail = next(settings.audit_dir.glob("mcp-*.jsonl")).read_text().splitlines()
    called = [json.loads(line)["tool"] for line in trail if json.loads(line)["event"] == "tool_call"]
    assert sorted(called) == sorted(examples)


@pytest.mark.parametrize("args", [{"study_id": "not-an-id"}, {}, {"study_id": "study-" + "0" * 24}])
def test_bad_argument_gets_typed_error(settings, args):
    server = build_server(settings)

    async def main():
        async with fastmcp.Client(server) as c:
            await c.call_tool("segment", args)

    with pytest.raises(ToolError) as exc:
        run(main())
    body = json.loads(str(exc.value))
    assert body["error"] in ("InputError", "NotFoundError") and body["code"] and body["hint"]
    assert "Traceback" not in str(exc.value)


def test_each_call_audited_once_before_its_result_returns(settings):
    # registry tools write their line in the worker thread that ran them; a tool added to the server
    # some other way is audited by the middleware after it returns; either way exactly one line
    server = build_server(settings)

    @server.tool
    def echo(x: int) -> dict:
        return {"x": x, "provenance": {"result_id": f"res-echo-{x}"}}

    def trail_path():
        return next(settings.audit_dir.glob("mcp-*.jsonl"))

    seen = []

    async def main():
        async with fastmcp.Client(server) as c:
            args = registry()["prediction_metrics"].example(ToolContext(store=ArtifactStore(settings.artifacts_dir)))
            for i in range(3):
                r = await c.call_tool("prediction_metrics", args)
                # the line is on disk when the result arrives
                last = json.loads(trail_path().read_text().splitlines()[-1])
                seen.append((last["tool"], last["result_id"] == r.structured_content["provenance"]["result_id"]))
                await c.call_tool("echo", {"x": i})

    run(main())
    records = [json.loads(line) for line in trail_path().read_text().splitlines()]
    calls = [(r["tool"], r["result_id"]) for r in records if r["event"] == "tool_call"]
    assert seen == [("prediction_metrics", True)] * 3
    assert [t for t, _ in calls] == ["prediction_metrics", "echo"] * 3
    assert [rid for t, rid in calls if t == "echo"] == ["res-echo-0", "res-echo-1", "res-echo-2"]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))


def _trail(settings) -> list[dict]:
    return [json.loads(line) for p in sorted(settings.audit_dir.glob("mcp-*.jsonl")) for line in p.read_text().splitlines()]


def test_remote_home_paths_and_unresolvable_paths_are_refused_and_audited(settings, tmp_path):
    from cardiomics.errors import PolicyError
    from cardiomics.mcp_server import confine

    root = tmp_path / "root"
    root.mkdir()
    (root / "loop").symlink_to(root / "loop")  # resolving it fails (a symlink loop)
    server = build_server(settings, remote=True, root=root)
    paths = ["~root/x", "~no-such-user-here/x", "~", "~/study", "loop/study"]

    async def main():
        refused = []
        async with fastmcp.Client(server) as c:
            for path in paths:
                with pytest.raises(ToolError) as exc:
                    await c.call_tool("load_study", {"path": path})
                refused.append(json.loads(str(exc.value)))
        return refused

    refused = run(main())
    assert all(r["error"] == "PolicyError" and r["code"] == "path-outside-root" and r["hint"] for r in refused)
    assert refused[0]["message"] == refused[1]["message"]  # an existing and a missing account look the same
    assert "cannot be resolved" in refused[-1]["message"]
    lines = _trail(settings)
    assert [(r["event"], r["code"], r["tool"]) for r in lines] == [("tool_refused", "path-outside-root", "load_study")] * len(paths)
    with pytest.raises(PolicyError):
        confine("~root", root.resolve(), "path")
    assert confine("study/~x", root.resolve(), "path") == str(root.resolve() / "study" / "~x")  # only a leading ~ is a home


def test_cancelled_call_is_audited_and_the_cancellation_goes_on(settings):
    server = build_server(settings)
    state: dict = {}

    @server.tool
    async def slow() -> dict:
        state["started"].set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        return {"provenance": {"result_id": "res-slow"}}

    @server.tool
    def echo(x: int) -> dict:
        return {"x": x, "provenance": {"result_id": f"res-echo-{x}"}}

    async def main():
        state["started"] = asyncio.Event()
        async with fastmcp.Client(server) as c:
            call = asyncio.create_task(c.call_tool("slow", {}))
            await asyncio.wait_for(state["started"].wait(), 30)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            deadline = asyncio.get_running_loop().time() + 30  # the server acts on the client's cancel notice
            while not any(r["event"] == "tool_cancelled" for r in _trail(settings)):
                assert asyncio.get_running_loop().time() < deadline, _trail(settings)
                await asyncio.sleep(0.05)
            return (await c.call_tool("echo", {"x": 1})).structured_content  # the server goes on serving

    assert run(main())["x"] == 1
    assert state.get("cancelled") is True  # the tool was interrupted, not left running
    lines = _trail(settings)
    assert [(r["event"], r["tool"]) for r in lines] == [("tool_cancelled", "slow"), ("tool_call", "echo")]
    assert lines[0]["actor"] == "mcp-stdio" and lines[0]["args_sha256"] and lines[0]["duration_s"] >= 0


def test_audit_middleware_reraises_a_cancellation(settings):
    from fastmcp.server.middleware import MiddlewareContext
    from mcp.types import CallToolRequestParams

    from cardiomics.mcp_server import AuditCalls

    middleware = AuditCalls(settings, remote=False, root=None)

    async def cancelled(_context):
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        run(middleware.on_call_tool(MiddlewareContext(message=CallToolRequestParams(name="slow", arguments={"n": 1})), cancelled))
    (line,) = _trail(settings)
    assert line["event"] == "tool_cancelled" and line["tool"] == "slow" and line["transport"] == "stdio"


@pytest.mark.parametrize("how", ["slash", "dotdot", "symlink", "env", "cwd"])
def test_remote_server_refuses_the_filesystem_root(settings, tmp_path, monkeypatch, how):
    from cardiomics.errors import PolicyError
    from cardiomics.mcp_server import remote_root

    (tmp_path / "to-root").symlink_to("/")
    root = {"slash": "/", "dotdot": "/..", "symlink": tmp_path / "to-root", "env": None, "cwd": None}[how]
    if how == "env":
        monkeypatch.setenv("CARDIOMICS_MCP_ROOT", "/")
    else:
        monkeypatch.delenv("CARDIOMICS_MCP_ROOT", raising=False)
    if how == "cwd":
        monkeypatch.chdir("/")  # a service started without a working directory runs in /
    with pytest.raises(PolicyError) as exc:
        build_server(settings, remote=True, root=root)
    assert exc.value.code == "unsafe-mcp-root" and "filesystem root" in exc.value.message
    assert "--root" in exc.value.hint and "CARDIOMICS_MCP_ROOT" in exc.value.hint
    build_server(settings)  # the local stdio server is not confined, so any working directory will do
    data = tmp_path / "data"
    data.mkdir()
    assert remote_root(data) == data.resolve()


def test_cli_refuses_to_serve_http_confined_to_the_filesystem_root(settings):
    import os
    import subprocess
    import sys

    from cardiomics.mcp_auth import TokenStore
    from cardiomics.review.server import free_port

    TokenStore(settings).create("lab-agent")
    env = {**os.environ, "CARDIOMICS_HOME": str(settings.home), "CARDIOMICS_AUDIT_DIR": str(settings.audit_dir)}
    started = subprocess.run([sys.executable, "-m", "cardiomics.cli", "mcp", "--http", "--port", str(free_port()), "--root", "/"],
                             capture_output=True, text=True, env=env, timeout=60, check=False)
    assert started.returncode == 2, started.stderr
    assert "PolicyError[unsafe-mcp-root]" in started.stderr and "hint:" in started.stderr


def test_path_redactor_rewrites_server_paths_only(tmp_path):
    from cardiomics.mcp_server import PathRedactor

    root, home = tmp_path / "my studies", tmp_path / "cardio home"
    redact = PathRedactor(root, (home, tmp_path / "audit")).text
    assert redact(f"{root}/a b/x.nii.gz does not exist") == "a b/x.nii.gz does not exist"
    assert redact(f"no file '{root}/omics.h5ad'") == "no file 'omics.h5ad'"
    assert redact(f"{root} does not exist.") == ". does not exist."
    assert redact(f"cannot read {home}/artifacts/.salt: Is a directory: '{home}/artifacts/.salt'") == \
        "cannot read <server path>: Is a directory: '<server path>'"
    assert redact(f"{tmp_path}/other/x and /usr/lib/python3.11/site.py failed.") == "<server path> and <server path> failed."
    assert redact("file:///etc/passwd") == "<server path>"
    kept = "see cardiomics://reports/signed or http://127.0.0.1:8766/mcp; ED/ES, mL/m2, approve / reject"
    assert redact(kept) == kept
    error = {"error": "StudyError", "code": "not-found", "message": f"{root}/x does not exist", "hint": f"look in {home}"}
    assert PathRedactor(root, (home,)).error(error) == {"error": "StudyError", "code": "not-found",
                                                        "message": "x does not exist", "hint": "look in <server path>"}


def test_path_redactor_hides_whole_paths_with_spaces(tmp_path):
    from cardiomics.mcp_server import PathRedactor

    root, home = tmp_path / "my studies", tmp_path / "cardio home"
    redact = PathRedactor(root, (home,)).text
    # quoted, as repr() and OSError write paths: the quotes mark the end, spaces and all
    assert redact("[Errno 2] No such file or directory: '/srv/lab data/x y.nii'") == \
        "[Errno 2] No such file or directory: '<server path>'"
    assert redact("cannot read \"/srv/it's here/x\": bad header") == "cannot read \"<server path>\": bad header"
    assert redact(f"no file {str(root / 'a b' / 'x y.h5ad')!r} here") == "no file 'a b/x y.h5ad' here"
    assert redact(f"{str(root)!r} is empty") == "'.' is empty"
    assert redact(f"no file '{root} 2/x.nii'") == "no file '<server path>'"  # a sibling of the root, not under it
    assert redact(f"no file '{home}/my runs/x.json'") == "no file '<server path>'"
    # unquoted: more of the path (a "/", a file name, a capitalised or numbered name) continues it; words do not
    assert redact("/srv/lab data/x.nii.gz does not exist") == "<server path> does not exist"
    assert redact("/srv/my scan.nii.gz is not a folder.") == "<server path> is not a folder."
    assert redact("no DICOM files found in /Volumes/Lab Data (looked at 3 file(s))") == \
        "no DICOM files found in <server path> (looked at 3 file(s))"
    assert redact("/srv/scan 2 does not exist.") == "<server path> does not exist."
    assert redact("copy /a b/c to /d e/f failed") == "copy <server path> to <server path> failed"
    assert redact("/srv/a/b. Retry later") == "<server path>. Retry later"
    assert redact(f"{home}/my runs/x.json does not exist") == "<server path> does not exist"
    assert redact("file:///srv/lab data/x.txt is gone") == "<server path> is gone"
    assert redact(f"{root}/sub dir/x y.nii does not exist") == "sub dir/x y.nii does not exist"
    assert redact(f"{root} 2/x.nii does not exist") == "<server path> does not exist"
    assert redact(f"{root} is empty") == ". is empty"
    # the documented limit: a last lowercase word with no dot cannot be told from the message
    assert redact("/srv/lab data does not exist") == "<server path> data does not exist"


def test_remote_errors_hide_server_paths_and_stdio_errors_keep_them(settings, tmp_path, phantom_study):
    import shutil

    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(phantom_study[0], root / "study")
    missing = {"path": "missing/x.nii.gz"}

    async def errors(server, calls):
        received = []
        async with fastmcp.Client(server) as c:
            for args in calls:
                with pytest.raises(ToolError) as exc:
                    await c.call_tool("load_study", args)
                received.append(str(exc.value))
        return received

    def break_the_store():
        # the study key's salt cannot be read: the failure happens inside the artefact store
        salt = settings.artifacts_dir / ".salt"
        salt.unlink(missing_ok=True)
        salt.mkdir(exist_ok=True)

    remote, local = build_server(settings, remote=True, root=root), build_server(settings)
    (not_found,) = run(errors(remote, [missing]))
    # the local caller is the user: full paths, which it can act on
    (local_not_found,) = run(errors(local, [{"path": str(root / "missing" / "x.nii.gz")}]))
    break_the_store()
    (store_failed,) = run(errors(remote, [{"path": "study"}]))
    (local_store_failed,) = run(errors(local, [{"path": str(root / "study")}]))

    for text in (not_found, store_failed):
        for server_path in (str(root.resolve()), str(settings.home), str(tmp_path)):
            assert server_path not in text, text
    not_found, store_failed = json.loads(not_found), json.loads(store_failed)
    assert (not_found["error"], not_found["code"]) == ("StudyError", "not-found")
    assert not_found["message"] == "missing/x.nii.gz does not exist" and not_found["hint"]
    assert (store_failed["error"], store_failed["code"]) == ("ToolFailure", "tool-failed")
    assert "IsADirectoryError" in store_failed["message"] and "<server path>" in store_failed["message"]
    # the audit trail, on the server, records the same codes
    assert [(r["event"], r["code"]) for r in _trail(settings) if r["transport"] == "http"] == [
        ("tool_error", "not-found"), ("tool_error", "tool-failed")]

    assert json.loads(local_not_found)["message"] == f"{root / 'missing' / 'x.nii.gz'} does not exist"
    assert str(settings.artifacts_dir / ".salt") in json.loads(local_store_failed)["message"]
