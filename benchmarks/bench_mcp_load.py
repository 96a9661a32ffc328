"""Load on the MCP HTTP server: N concurrent token-authenticated clients on loopback for a bounded time.

Each client loops over `cardiac_function` on a precomputed segmentation (the phantom's ground-truth
labels stored directly, so the figure measures the server, not the network) and, every fifth call,
`list_tools`. Bounded twice: by --seconds and by --max-calls. Reports throughput, p50/p95/max
latency, errors, and the server's resident memory before and after (from /proc).

    python benchmarks/bench_mcp_load.py --clients 20 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _precomputed_segmentation(home: Path) -> str:
    from cardiomics.config import Settings
    from cardiomics.synthetic.phantom import PhantomSpec, make_phantom
    from cardiomics.tools import ArtifactStore

    settings = Settings(home=home, audit_dir=home / "audit").ensure()
    ph = make_phantom(PhantomSpec(n_frames=16, n_slices=8, rows=128, cols=128, seed=3))
    return ArtifactStore(settings.artifacts_dir).put(
        "seg", {"labels": ph.labels.astype("uint8")},
        {"study_id": "study-" + "0" * 24, "spacing_mm": list(ph.spacing_mm),
         "model": {"id": "phantom-truth", "version": "0", "weights_sha256": "0" * 64}, "n_tta": 0})


async def _client(url: str, token: str, seg_id: str, stop_at: float, budget: list[int], lat: list[float], errors: list[str]):
    import fastmcp

    async with fastmcp.Client(url, auth=token, timeout=60) as c:
        i = 0
        while time.monotonic() < stop_at and budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            try:
                if i % 5 == 4:
                    tools = await c.list_tools()
                    assert len(tools) > 0
                else:
                    r = await c.call_tool("cardiac_function", {"segmentation_id": seg_id, "height_cm": 170, "weight_kg": 70})
                    assert r.structured_content["lv_ef_pct"]["value"] > 0
            except Exception as exc:  # noqa: BLE001 - counted, reported
                errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            lat.append(time.perf_counter() - t0)
            i += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-calls", type=int, default=20000)
    args = ap.parse_args()
    from cardiomics.review.server import free_port

    work = Path(tempfile.mkdtemp(prefix="cardiomics-load-"))
    home = work / "home"
    env = {**os.environ, "CARDIOMICS_HOME": str(home), "CARDIOMICS_AUDIT_DIR": str(work / "audit"), "CARDIOMICS_MCP_ROOT": str(work)}
    seg_id = _precomputed_segmentation(home)
    token = subprocess.run([sys.executable, "-m", "cardiomics.cli", "mcp", "token", "create", "load-test"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cardiomics.cli", "mcp", "--http", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.25)
        # warm-up: one call so imports and first-use caches are in the "before" figure
        asyncio.run(_client(url, token, seg_id, time.monotonic() + 30, [5], [], []))
        rss_before = _rss_mb(server.pid)
        lat: list[float] = []
        errors: list[str] = []
        budget = [args.max_calls]

        async def run_all():
            stop_at = time.monotonic() + args.seconds
            await asyncio.gather(*(_client(url, token, seg_id, stop_at, budget, lat, errors) for _ in range(args.clients)))

        t0 = time.perf_counter()
        asyncio.run(run_all())
        wall = time.perf_counter() - t0
        rss_after = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(20)
    lat.sort()
    q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None  # noqa: E731
    audit_lines = sum(len(p.read_text().splitlines()) for p in (work / "audit").glob("mcp-*.jsonl"))
    figures = {
        "clients": args.clients, "seconds": round(wall, 1), "calls": len(lat), "errors": len(errors),
        "error_examples": sorted(set(errors))[:5], "throughput_per_s": round(len(lat) / wall, 1),
        "latency_ms": {"p50": q(0.50), "p95": q(0.95), "max": q(1.0)},
        "server_rss_mb": {"before": round(rss_before, 1), "after": round(rss_after, 1), "growth": round(rss_after - rss_before, 1)},
        "audit_lines": audit_lines,
    }
    path = write("mcp_load", figures)
    print(path.read_text())
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
