"""Step timing with the peak resident memory reached during the step (sampled), and target figures.

``ru_maxrss`` only ever grows, so it cannot say which step needed the memory: a sampler thread
reads VmRSS from /proc every few milliseconds while a step runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class Steps:
    """``with steps.step("segment"): ...`` records wall seconds, peak RSS and RSS growth per step."""

    def __init__(self) -> None:
        self.figures: dict[str, dict[str, float]] = {}

    @contextmanager
    def step(self, name: str, interval_s: float = 0.005) -> Iterator[None]:
        start_rss = rss_mb()
        peak = [start_rss]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb())
                stop.wait(interval_s)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            wall = time.perf_counter() - t0
            stop.set()
            t.join()
            peak[0] = max(peak[0], rss_mb())
            self.figures[name] = {"wall_s": round(wall, 3), "peak_rss_mb": round(peak[0], 1),
                                  "rss_growth_mb": round(peak[0] - start_rss, 1)}

    def total_s(self, names: list[str] | None = None) -> float:
        return round(sum(v["wall_s"] for k, v in self.figures.items() if names is None or k in names), 3)


def target(value: float | None, limit: float, unit: str, better: str = "lower") -> dict:
    """A figure beside its target; ratio = value / target (≤ 1 meets a 'lower is better' target)."""
    ratio = None if value is None or limit == 0 else round(value / limit, 3)
    met = None if ratio is None else (ratio <= 1.0 if better == "lower" else ratio >= 1.0)
    return {"value": value, "target": limit, "unit": unit, "better": better, "ratio": ratio, "met": met}


def load_average() -> list[float]:
    """Other work on the machine inflates timings: every result records the load it was taken under."""
    return [round(x, 2) for x in os.getloadavg()]
