"""MCP call overhead: the same cheap tool called directly (``call_tool``), through the MCP server in
process (``fastmcp.Client(server)``) and over streamable HTTP (``cardiomics mcp --http`` with a token).

Overhead per call = median MCP call − median direct call. The tool is ``prediction_metrics`` on 40
subjects (DeLong interval): a few milliseconds of work, so protocol cost dominates the difference.
Direct and in-process calls alternate in one loop, so both see the same machine state (on a small
shared machine the tool's own time drifts by more than the target between runs).

In process, two client calls are timed: ``call_tool`` (the result validated against the output
schema by the MCP SDK, then hydrated into typed objects by fastmcp; the target figure) and
``call_tool_mcp`` (the protocol result, validated but not hydrated). Two floors, served by bare
fastmcp servers without cardiomics' server code (no audit line, middleware, typed errors, schemas
of its own or bearer tokens), called by the same client:

- a one-line tool (in process, and over HTTP without a token): what the MCP stack costs for a
  tiny result;
- the same tool function behind a plain ``@mcp.tool`` whose return annotation is the same pydantic
  result model (in process, in the same alternating loop): what fastmcp costs for this tool's
  result and output schema, so that "overhead − this floor" is what cardiomics' server adds.

Target: in-process overhead at most 5 ms per call. The machine's state during the headline loop
(CPU steal by other guests, preemption of this process; ``_measure.MachineState``) is recorded beside
it: on a shared virtual machine the same commit's figure moves by more than a millisecond between runs.

A second, shorter paired loop puts timers on cardiomics' own server code and on the SDK's validation
and splits the in-process overhead into parts: cardiomics' own code (audit line, result dump and
text block, middleware), fastmcp's tool lookup with the thread hops, the client's validation and
hydration, and the rest of the MCP request/response path.

Run: python benchmarks/bench_mcp_overhead.py   (writes benchmarks/results/mcp_overhead.json)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write
from _measure import MachineState, load_average, target

N = 200
TOOL = "prediction_metrics"


def _args() -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    y = [int(v) for v in rng.integers(0, 2, 40)]
    p = [float(np.clip(0.5 + 0.3 * (v - 0.5) + rng.normal(0, 0.2), 0.01, 0.99)) for v in y]
    return {"y_true": y, "y_prob": p}


def _ms(xs: list[float]) -> float:
    return round(1000 * statistics.median(xs), 3)


async def _calls(client, args: dict, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        res = await client.call_tool(TOOL, args)
        times.append(time.perf_counter() - t0)
        assert not res.is_error
    return times


def _same_payload_server(ctx):
    """A bare fastmcp server exposing the tool function the plain way: same result model, none of cardiomics' server code."""
    import fastmcp

    from cardiomics.tools import call_tool, registry

    bare = fastmcp.FastMCP("same-payload")
    output_model = registry()[TOOL].output_model

    def prediction_metrics(y_true, y_prob):
        return call_tool(TOOL, {"y_true": y_true, "y_prob": y_prob}, ctx)

    # real objects, not the strings this module's future import makes of annotations: fastmcp reads them
    prediction_metrics.__annotations__ = {"y_true": list[int], "y_prob": list[float], "return": output_model}
    bare.tool(name=TOOL)(prediction_metrics)
    return bare


async def _paired(client, args: dict, ctx, n: int, same=None) -> tuple[list[float], list[float], list[float], list[float]]:
    """Direct, MCP (hydrated) and MCP (protocol result) calls, alternating, ``n`` of each; with ``same``
    (a client of the same-payload server), a fourth call each round."""
    from cardiomics.tools import call_tool

    direct, hydrated, protocol, bare = [], [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        call_tool(TOOL, args, ctx)
        direct.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = await client.call_tool(TOOL, args)
        hydrated.append(time.perf_counter() - t0)
        assert not res.is_error
        t0 = time.perf_counter()
        raw = await client.call_tool_mcp(TOOL, args)
        protocol.append(time.perf_counter() - t0)
        assert not raw.is_error
        if same is not None:
            t0 = time.perf_counter()
            res = await same.call_tool(TOOL, args)
            bare.append(time.perf_counter() - t0)
            assert not res.is_error
    return direct, hydrated, protocol, bare


class _Phases:
    """Where one in-process call's time goes: timers around cardiomics' own server code and the MCP SDK's
    output-schema validation (a public ``ClientSession`` method). Installed for the paired loop only.

    Per call: ``middleware`` (the audit middleware, entry to exit, which holds the tool lookup, the two
    thread hops and the worker), ``worker`` (the tool thread: tool, result dump, audit line, text block),
    ``tool`` (``call_tool`` inside it), ``audit_line`` and ``validation`` (client side).
    """

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self._undo: list = []

    def _wrap(self, owner, name: str, key: str) -> None:
        orig = getattr(owner, name)
        times = self.times.setdefault(key, [])
        if inspect.iscoroutinefunction(orig):
            @functools.wraps(orig)
            async def timed(*a, **k):
                t0 = time.perf_counter()
                try:
                    return await orig(*a, **k)
                finally:
                    times.append(time.perf_counter() - t0)
        else:
            @functools.wraps(orig)
            def timed(*a, **k):
                t0 = time.perf_counter()
                try:
                    return orig(*a, **k)
                finally:
                    times.append(time.perf_counter() - t0)
        setattr(owner, name, timed)
        self._undo.append((owner, name, orig))

    def _wrap_middleware(self, owner) -> None:
        """Times the middleware whole and its own code (everything outside ``call_next``)."""
        orig = owner.on_call_tool
        whole, own = self.times.setdefault("middleware", []), self.times.setdefault("middleware_own", [])

        async def timed(mw, context, call_next):
            inner = [0.0]

            async def timed_next(ctx):
                t1 = time.perf_counter()
                try:
                    return await call_next(ctx)
                finally:
                    inner[0] = time.perf_counter() - t1

            t0 = time.perf_counter()
            try:
                return await orig(mw, context, timed_next)
            finally:
                total = time.perf_counter() - t0
                whole.append(total)
                own.append(total - inner[0])

        owner.on_call_tool = timed
        self._undo.append((owner, "on_call_tool", orig))

    def install(self) -> None:
        import mcp.client.session as sdk

        import cardiomics.mcp_server as server

        self._wrap_middleware(server.AuditCalls)
        self._wrap(server.RegistryTool, "_call", "worker")
        self._wrap(server, "call_tool", "tool")
        self._wrap(server._PendingCall, "succeeded", "audit_line")
        self._wrap(sdk.ClientSession, "validate_tool_result", "validation")

    def reset(self) -> None:
        for v in self.times.values():
            v.clear()

    def remove(self) -> None:
        for owner, name, orig in reversed(self._undo):
            setattr(owner, name, orig)

    def medians(self) -> dict[str, float]:
        # every wrapped step runs once per MCP call (hydrated and protocol calls alike)
        return {k: _ms(v) for k, v in self.times.items() if v}


async def _floor(n: int) -> list[float]:
    """The same client against a bare fastmcp server with a one-line tool."""
    import fastmcp

    bare = fastmcp.FastMCP("floor")

    @bare.tool
    def echo(x: int) -> dict:
        return {"x": x}

    async with fastmcp.Client(bare) as c:
        for _ in range(5):
            await c.call_tool("echo", {"x": 1})
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            await c.call_tool("echo", {"x": 1})
            times.append(time.perf_counter() - t0)
        return times


_BARE_HTTP = """
import sys, fastmcp
bare = fastmcp.FastMCP("floor")
@bare.tool
def echo(x: int) -> dict:
    return {"x": x}
bare.run(transport="http", host="127.0.0.1", port=int(sys.argv[1]), show_banner=False, log_level="warning")
"""


async def _over_http(port: int, proc, tool: str, args: dict, token: str | None) -> list[float]:
    """``N`` timed calls over streamable HTTP once the server answers (it is still starting at first)."""
    import fastmcp

    deadline = time.monotonic() + 120
    while True:
        try:
            async with fastmcp.Client(f"http://127.0.0.1:{port}/mcp", auth=token) as c:
                await c.list_tools()
                times = []
                for i in range(N + 5):
                    t0 = time.perf_counter()
                    res = await c.call_tool(tool, args)
                    if i >= 5:
                        times.append(time.perf_counter() - t0)
                    assert not res.is_error
                return times
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            await asyncio.sleep(0.5)


def _breakdown(m: dict[str, float], direct: float, hydrated: float, protocol: float) -> dict[str, float]:
    """Split the hydrated call's overhead over the direct call into parts that add up to it (medians, so roughly)."""
    worker, tool, audit, mw, own = m["worker"], m["tool"], m["audit_line"], m["middleware"], m["middleware_own"]
    serialisation = worker - tool - audit
    parts = {
        "audit_line": audit,
        "result_serialisation": serialisation,
        "middleware_own": own,
        # fastmcp's tool lookup, the hop into the worker thread and back
        "lookup_and_thread_hops": mw - own - worker,
        # the same tool run in the server's worker thread rather than on the caller's
        "tool_in_worker_minus_direct": tool - direct,
        "client_validation": m["validation"],
        "client_hydration": hydrated - protocol,
    }
    parts["mcp_stack"] = hydrated - direct - sum(parts.values())
    parts["cardiomics_own"] = audit + serialisation + own
    parts["overhead_total"] = hydrated - direct
    return {k: round(v, 3) for k, v in parts.items()}


def main() -> None:
    import fastmcp
    from rich.console import Console

    from cardiomics.config import Settings
    from cardiomics.mcp_server import build_server
    from cardiomics.review.server import free_port
    from cardiomics.tools import ArtifactStore, ToolContext, call_tool

    tmp = Path(tempfile.mkdtemp(prefix="cardiomics-bench-mcp-"))
    os.environ.update({"CARDIOMICS_HOME": str(tmp / "home"), "CARDIOMICS_AUDIT_DIR": str(tmp / "audit")})
    settings = Settings.from_env().ensure()
    args = _args()
    ctx = ToolContext(store=ArtifactStore(settings.artifacts_dir))
    for _ in range(5):
        call_tool(TOOL, args, ctx)

    async def in_process() -> tuple[list[float], list[float], list[float], list[float]]:
        async with fastmcp.Client(build_server(settings)) as c, fastmcp.Client(_same_payload_server(ctx)) as same:
            await _calls(c, args, 5)
            await _calls(same, args, 5)
            first = await c.call_tool(TOOL, args)
            plain = await same.call_tool(TOOL, args)
            # the floor must carry the same result, or it is not a floor for this call
            assert plain.data.overall.auroc.value == first.data.overall.auroc.value
            return await _paired(c, args, ctx, N, same)

    with MachineState() as machine:
        direct, inproc, protocol, same_payload = asyncio.run(in_process())
    # a second, shorter paired loop with timers on the phases (the timers add a little to each call,
    # so the headline figures above come from the loop without them)
    phases = _Phases()
    phases.install()
    try:
        async def timed_run() -> tuple[list[float], list[float], list[float]]:
            async with fastmcp.Client(build_server(settings)) as c:
                await _calls(c, args, 5)
                phases.reset()
                return (await _paired(c, args, ctx, N // 2))[:3]

        p_direct, p_inproc, p_protocol = asyncio.run(timed_run())
    finally:
        phases.remove()
    breakdown = _breakdown(phases.medians(), _ms(p_direct), _ms(p_inproc), _ms(p_protocol))
    floor = asyncio.run(_floor(N))

    from cardiomics.mcp_auth import TokenStore

    token = TokenStore(settings).create("bench")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cardiomics.cli", "mcp", "--http", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        http = asyncio.run(_over_http(port, proc, TOOL, args, token))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _BARE_HTTP, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        http_floor = asyncio.run(_over_http(port, proc, "echo", {"x": 1}, None))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    d, i, r, h, f, hf = _ms(direct), _ms(inproc), _ms(protocol), _ms(http), _ms(floor), _ms(http_floor)
    sp = _ms(same_payload)
    paired = _ms([m - x for m, x in zip(inproc, direct)])
    paired_same = _ms([m - x for m, x in zip(same_payload, direct)])
    figures = {
        "tool": TOOL, "calls": N, "direct_ms": d, "in_process_ms": i, "in_process_protocol_ms": r, "http_ms": h,
        "in_process_overhead_ms": round(i - d, 3), "in_process_overhead_paired_median_ms": paired,
        "in_process_protocol_overhead_ms": round(r - d, 3), "http_overhead_ms": round(h - d, 3),
        "bare_fastmcp_floor_ms": f, "overhead_above_floor_ms": round(i - d - f, 3),
        "bare_fastmcp_http_floor_ms": hf, "http_overhead_above_floor_ms": round(h - d - hf, 3),
        # the same tool and result model behind a plain fastmcp tool, timed in the same loop
        "same_payload_fastmcp_ms": sp, "same_payload_fastmcp_overhead_ms": round(sp - d, 3),
        "same_payload_fastmcp_overhead_paired_median_ms": paired_same,
        "cardiomics_server_adds_ms": round(i - sp, 3),
        "mcp_audit_trail_lines": sum(len(p.read_text().splitlines()) for p in settings.audit_dir.glob("mcp-*.jsonl")),
        "in_process_breakdown_ms": breakdown,
        "load_average": load_average(),
        # during the headline loop: CPU steal by other guests, preemption of this process
        "machine_state": machine.figures,
        "targets": {"mcp_in_process_overhead_ms_per_call": target(round(i - d, 3), 5.0, "ms")},
    }
    path = write("mcp_overhead", figures)
    con = Console()
    con.print(f"direct {d:.2f} ms, in-process MCP {i:.2f} ms (+{i - d:.2f}, target ≤ 5; paired +{paired:.2f}), "
              f"protocol result only {r:.2f} ms (+{r - d:.2f}), HTTP {h:.2f} ms (+{h - d:.2f}) per call", highlight=False)
    con.print(f"bare fastmcp floor (one-line tool, same client) {f:.2f} ms in process, {hf:.2f} ms over HTTP: "
              f"cardiomics adds {i - d - f:.2f} and {h - d - hf:.2f} ms above them", highlight=False)
    con.print(f"the same tool and result model behind a plain fastmcp tool (no cardiomics server code) {sp:.2f} ms "
              f"(+{sp - d:.2f} over direct, paired +{paired_same:.2f}): cardiomics' server adds {i - sp:.2f} ms to that", highlight=False)
    b = breakdown
    con.print(f"where an in-process call's overhead goes (a second run with timers; medians, ms): "
              f"cardiomics' own code {b['cardiomics_own']:.2f} (audit line {b['audit_line']:.2f}, result dump and text "
              f"{b['result_serialisation']:.2f}, middleware {b['middleware_own']:.2f}); fastmcp tool lookup and thread hops "
              f"{b['lookup_and_thread_hops']:.2f}, the tool itself slower in the worker thread {b['tool_in_worker_minus_direct']:.2f}; "
              f"client: output-schema validation {b['client_validation']:.2f}, "
              f"hydration {b['client_hydration']:.2f}; MCP request/response and transport {b['mcp_stack']:.2f}", highlight=False)
    ms = machine.figures
    con.print(f"machine during the headline loop: CPU steal {ms['cpu_steal_pct']} %, busy {ms['cpu_busy_pct']} %, "
              f"{ms['involuntary_switches']} involuntary context switches, {ms['major_faults']} major page faults",
              highlight=False)
    con.print(f"written to {path}", highlight=False)


if __name__ == "__main__":
    main()
