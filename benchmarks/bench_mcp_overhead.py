"""MCP call overhead: the same cheap tool called directly (``call_tool``), through the MCP server in
process (``fastmcp.Client(server)``) and over streamable HTTP (``cardiomics mcp --http`` with a token).

Overhead per call = median MCP call − median direct call. The tool is ``prediction_metrics`` on 40
subjects (DeLong interval): a few milliseconds of work, so protocol cost dominates the difference.
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

N = 60
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
    direct = []
    for _ in range(N):
        t0 = time.perf_counter()
        call_tool(TOOL, args, ctx)
        direct.append(time.perf_counter() - t0)

    async def in_process() -> list[float]:
        async with fastmcp.Client(build_server(settings)) as c:
            await _calls(c, args, 5)
            return await _calls(c, args, N)

    inproc = asyncio.run(in_process())

    from cardiomics.mcp_auth import TokenStore

    token = TokenStore(settings).create("bench")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cardiomics.cli", "mcp", "--http", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    http: list[float] = []
    try:
        async def over_http() -> list[float]:
            deadline = time.monotonic() + 120
            while True:
                try:
                    async with fastmcp.Client(f"http://127.0.0.1:{port}/mcp", auth=token) as c:
                        await c.list_tools()
                        await _calls(c, args, 5)
                        return await _calls(c, args, N)
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    await asyncio.sleep(0.5)

        http = asyncio.run(over_http())
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    d, i, h = _ms(direct), _ms(inproc), _ms(http)
    figures = {
        "tool": TOOL, "calls": N, "direct_ms": d, "in_process_ms": i, "http_ms": h,
        "in_process_overhead_ms": round(i - d, 3), "http_overhead_ms": round(h - d, 3),
        "mcp_audit_trail_lines": sum(len(p.read_text().splitlines()) for p in settings.audit_dir.glob("mcp-*.jsonl")),
        "load_average": load_average(),
        "targets": {"mcp_in_process_overhead_ms_per_call": target(round(i - d, 3), 5.0, "ms")},
    }
    path = write("mcp_overhead", figures)
    con = Console()
    con.print(f"direct {d:.2f} ms, in-process MCP {i:.2f} ms (+{i - d:.2f}, target ≤ 5), HTTP {h:.2f} ms (+{h - d:.2f}) per call", highlight=False)
    con.print(f"written to {path}", highlight=False)


if __name__ == "__main__":
    main()
