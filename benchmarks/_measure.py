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


def _cpu_jiffies() -> tuple[int, int, int] | None:
    """(steal, idle, total) CPU time of the whole machine since boot, from /proc/stat; None where unreadable."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already counted in user)
    return fields[7], fields[3] + fields[4], sum(fields)


class MachineState:
    """What the machine did during a timed stretch: ``with MachineState() as m: ...``, then ``m.figures``.

    On a shared virtual machine a slow run is often not the code's doing. ``cpu_steal_pct``: the share
    of the machine's CPU time the hypervisor gave to other guests; ``cpu_busy_pct``: the share spent
    on work in this guest, this process's included (50 on 2 cores: one core busy); ``involuntary_switches``
    and ``major_faults``: this process preempted, and waiting on pages read from disk. Recorded beside
    a figure, they show whether other work disturbed the run. A host that slows the whole guest shows
    in none of them, only in timings such as a benchmark's direct call.
    """

    def __init__(self) -> None:
        self.figures: dict[str, float | int | None] = {}

    def __enter__(self) -> MachineState:
        import resource

        self._cpu, self._usage = _cpu_jiffies(), resource.getrusage(resource.RUSAGE_SELF)
        return self

    def __exit__(self, *exc: object) -> None:
        import resource

        cpu, usage = _cpu_jiffies(), resource.getrusage(resource.RUSAGE_SELF)
        steal = busy = None
        if self._cpu is not None and cpu is not None and cpu[2] > self._cpu[2]:
            total = cpu[2] - self._cpu[2]
            steal = round(100 * (cpu[0] - self._cpu[0]) / total, 2)
            busy = round(100 * (total - (cpu[1] - self._cpu[1]) - (cpu[0] - self._cpu[0])) / total, 1)
        self.figures = {"cpu_steal_pct": steal, "cpu_busy_pct": busy,
                        "involuntary_switches": usage.ru_nivcsw - self._usage.ru_nivcsw,
                        "major_faults": usage.ru_majflt - self._usage.ru_majflt}
