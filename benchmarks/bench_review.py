"""Review app latency: the report page with all its figures, and the QC page with every slice overlay.

A phantom run is analysed and approved at QC (so its draft has every figure), then the app is
driven in-process (no network, no browser cache): one "load" is the page plus every image it
references. Median and 90th percentile over 20 loads after 2 warm-up loads; budget 300 ms.

Run: python benchmarks/bench_review.py   (prints figures, writes benchmarks/results/review.json)
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rich.console import Console

from _common import peak_rss_mb, write

LOADS, WARMUP, BUDGET_MS = 20, 2, 300.0
PASSWORD = "benchmark password"


def load(client, url: str) -> tuple[float, int, int]:
    """Wall time (ms) of the page and every image it references; number of images; bytes."""
    t0 = time.perf_counter()
    page = client.get(url)
    page.raise_for_status()
    total = len(page.content)
    images = re.findall(r'<img[^>]+src="(/[^"]+)"', page.text)
    for src in images:
        res = client.get(src.replace("&amp;", "&"))
        res.raise_for_status()
        total += len(res.content)
    return (time.perf_counter() - t0) * 1000, len(images), total


def measure(client, url: str) -> dict:
    for _ in range(WARMUP):
        load(client, url)
    times, n_img, size = [], 0, 0
    for _ in range(LOADS):
        ms, n_img, size = load(client, url)
        times.append(ms)
    times.sort()
    return {"median_ms": round(statistics.median(times), 1), "p90_ms": round(times[int(0.9 * len(times)) - 1], 1),
            "min_ms": round(times[0], 1), "images": n_img, "bytes": size, "loads": LOADS}


def main() -> None:
    from fastapi.testclient import TestClient

    from cardiomics.agents.runs import Runs
    from cardiomics.config import Settings
    from cardiomics.review import create_app
    from cardiomics.review.accounts import Accounts
    from cardiomics.tools.imaging import ensure_sample

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", audit_dir=Path(tmp) / "audit").ensure()
        runs = Runs(settings)
        t0 = time.perf_counter()
        folder = ensure_sample(Path(tmp) / "sample")
        st = runs.start(str(folder), height_cm=172, weight_kg=70, sex="female")
        qc_run = runs.start(str(folder))  # left waiting at QC approval
        runs.decide(st.run_id, "bench", "approved", expect="qc-approval")
        prepare_s = time.perf_counter() - t0
        Accounts(settings.home).add("bench", PASSWORD)
        app = create_app(settings, runs=runs)
        with TestClient(app) as client:
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
            client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token})
            figures = len(runs.services.reports.load(st.run_id).figures)
            report = measure(client, f"/runs/{st.run_id}/report")
            qc = measure(client, f"/runs/{qc_run.run_id}/qc")
        runs.close()

    result = {"report_page": {**report, "figures_in_report": figures}, "qc_page": qc, "budget_ms": BUDGET_MS,
              "report_within_budget": report["median_ms"] < BUDGET_MS, "prepare_runs_s": round(prepare_s, 1),
              "peak_rss_mb": round(peak_rss_mb(), 1)}
    path = write("review", result)
    console.print(f"report page + {report['images']} figures ({report['bytes'] / 1e6:.2f} MB): median {report['median_ms']} ms, "
                  f"p90 {report['p90_ms']} ms over {LOADS} loads (budget {BUDGET_MS:.0f} ms: "
                  f"{'ok' if result['report_within_budget'] else 'OVER'})", highlight=False)
    console.print(f"QC page + {qc['images']} slice overlays ({qc['bytes'] / 1e6:.2f} MB): median {qc['median_ms']} ms, "
                  f"p90 {qc['p90_ms']} ms", highlight=False)
    console.print(f"written {path}", highlight=False)


if __name__ == "__main__":
    main()
