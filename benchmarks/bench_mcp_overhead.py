"""MCP call overhead: the same cheap tool called directly (``call_tool``), through the MCP server in
process (``fastmcp.Client(server)``) and over streamable HTTP (``cardiomics mcp --http`` with a token).

Overhead per call = median MCP call − median direct call. The tool is ``prediction_metrics`` on 40
subjects (DeLong interval): a few milliseconds of work, so protocol cost dominates the difference.
Direct and in-process calls alternate in one loop, so both see the same machine state (on a small
shared machine the tool's own time drifts by more than the target between runs).

In process, two client calls are timed: ``call_tool`` (the result validated against the output
schema by the MCP SDK, then hydrated into typed objects by fastmcp; the target figure) and
``call_tool_mcp`` (the protocol result, validated but not hydrated). The floor is the same client
calling a one-line tool on a bare fastmcp server (in process, and over HTTP without a token): what
the MCP stack costs before cardiomics adds anything (audit line, typed errors, schemas, bearer tokens).
Target: in-process overhead at most 5 ms per call.

Run: python benchmarks/bench_mcp_overhead.py   (writes benchmarks/results/mcp_overhead.json)
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write
from _measure import load_average, target

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


async def _paired(client, args: dict, ctx, n: int) -> tuple[list[float], list[float], list[float]]:
    """Direct, MCP (hydrated) and MCP (protocol result) calls, alternating, ``n`` of each."""
    from cardiomics.tools import call_tool

    direct, hydrated, protocol = [], [], []
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
    return direct, hydrated, protocol


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    import fastmcp
    from cardiomics.tools import ArtifactStore, ToolContext, call_tool
    from rich.console import Console

    from cardiomics.config import Settings
    from cardiomics.mcp_server import build_server

    tmp = Path(tempfile.mkdtemp(prefix="cardiomics-bench-mcp-"))
    os.environ.update({"CARDIOMICS_HOME": str(tmp / "home"), "CARDIOMICS_AUDIT_DIR": str(tmp / "audit")})
    settings = Settings.from_env().ensure()
    args = _args()
    ctx = ToolContext(store=ArtifactStore(settings.artifacts_dir))
    for _ in range(5):
        call_tool(TOOL, args, ctx)

    async def in_process() -> tuple[list[float], list[float], list[float]]:
        async with fastmcp.Client(build_server(settings)) as c:
            await _calls(c, args, 5)
            return await _paired(c, args, ctx, N)

    direct, inproc, protocol = asyncio.run(in_process())
    floor = asyncio.run(_floor(N))

    from cardiomics.mcp_auth import TokenStore

    token = TokenStore(settings).create("bench")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cardiomics.cli", "mcp", "--http", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        http = asyncio.run(_over_http(port, proc, TOOL, args, token))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", _BARE_HTTP, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        http_floor = asyncio.run(_over_http(port, proc, "echo", {"x": 1}, None))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    d, i, r, h, f, hf = _ms(direct), _ms(inproc), _ms(protocol), _ms(http), _ms(floor), _ms(http_floor)
    paired = _ms([m - x for m, x in zip(inproc, direct)])
    figures = {
        "tool": TOOL, "calls": N, "direct_ms": d, "in_process_ms": i, "in_process_protocol_ms": r, "http_ms": h,
        "in_process_overhead_ms": round(i - d, 3), "in_process_overhead_paired_median_ms": paired,
        "in_process_protocol_overhead_ms": round(r - d, 3), "http_overhead_ms": round(h - d, 3),
        "bare_fastmcp_floor_ms": f, "overhead_above_floor_ms": round(i - d - f, 3),
        "bare_fastmcp_http_floor_ms": hf, "http_overhead_above_floor_ms": round(h - d - hf, 3),
        "mcp_audit_trail_lines": sum(len(p.read_text().splitlines()) for p in settings.audit_dir.glob("mcp-*.jsonl")),
        "load_average": load_average(),
        "targets": {"mcp_in_process_overhead_ms_per_call": target(round(i - d, 3), 5.0, "ms")},
    }
    path = write("mcp_overhead", figures)
    con = Console()
    con.print(f"direct {d:.2f} ms, in-process MCP {i:.2f} ms (+{i - d:.2f}, target ≤ 5; paired +{paired:.2f}), "
              f"protocol result only {r:.2f} ms (+{r - d:.2f}), HTTP {h:.2f} ms (+{h - d:.2f}) per call", highlight=False)
    con.print(f"bare fastmcp floor (one-line tool, same client) {f:.2f} ms in process, {hf:.2f} ms over HTTP: "
              f"cardiomics adds {i - d - f:.2f} and {h - d - hf:.2f} ms above them", highlight=False)
    con.print(f"written to {path}", highlight=False)


if __name__ == "__main__":
    main()
