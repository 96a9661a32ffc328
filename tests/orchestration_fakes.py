"""A stand-in segmenter for tests about ORCHESTRATION ONLY (crash/resume, tamper evidence).

Those tests check checkpoints, audit chains and signed reports; what the network draws does not
matter to them, so they must not wait for (or depend on) trained weights. Tests of measurements
use the real segmenter. The fake draws fixed concentric LV/myocardium discs and an RV disc whose
size follows the frame index, so cardiac_function has a plausible curve to measure.

``python tests/orchestration_fakes.py ARGS...`` runs the ``cardiomics`` CLI with the fake installed;
``CARDIOMICS_TEST_SEGMENT_DELAY_S`` makes each prediction sleep first, so a test can kill the
process while the segment tool runs; ``CARDIOMICS_TEST_STALL_AFTER_EVENT=approval`` stalls right after
that audit line is written. Production code has no such hooks: they exist only in this launcher.
"""

from __future__ import annotations

import os
import time

import numpy as np

FAKE_REF = {"id": "orchestration-fake", "version": "0", "weights_sha256": "0" * 64}


class FakeSegmenter:
    ref = FAKE_REF

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def predict(self, images, spacing, n_tta=0, n_slices=None, centre=None, tta_volumes=None):
        if self.delay_s:
            time.sleep(self.delay_s)
        n, rows, cols = images.shape
        per = n_slices or 1
        yy, xx = np.mgrid[:rows, :cols]
        labels = np.zeros((n, rows, cols), dtype=np.uint8)
        for i in range(n):
            t = i // per
            r_lv = rows * (0.12 - 0.04 * np.sin(np.pi * min(t, 8) / 8))
            d = np.hypot(yy - rows / 2, xx - cols / 2)
            labels[i][d < r_lv + rows * 0.05] = 2
            labels[i][d < r_lv] = 3
            labels[i][np.hypot(yy - rows / 2, xx - cols * 0.28) < rows * 0.08] = 1
        members = np.stack([labels] * n_tta) if n_tta else None
        return labels, members


def install(monkeypatch=None, delay_s: float = 0.0) -> None:
    """Replace the real segmenter loader: for one test (pytest's ``monkeypatch``), or for a launched process."""
    import cardiomics.models.segmenter as segmod

    fake = lambda *a, **k: FakeSegmenter(delay_s)  # noqa: E731
    if monkeypatch is not None:
        monkeypatch.setattr(segmod, "load_segmenter", fake)  # undone after the test: later tests get the real network
    else:
        segmod.load_segmenter = fake


def stall_after(event: str, seconds: float = 120.0) -> None:
    """Sleep right after the audit line ``event`` is written: a test kills the process there."""
    from cardiomics.audit import AuditTrail

    original = AuditTrail.append

    def append(self, ev, actor, **kw):
        rec = original(self, ev, actor, **kw)
        if ev == event:
            time.sleep(seconds)
        return rec

    AuditTrail.append = append


if __name__ == "__main__":
    import sys

    install(delay_s=float(os.environ.get("CARDIOMICS_TEST_SEGMENT_DELAY_S", "0") or 0))
    if os.environ.get("CARDIOMICS_TEST_STALL_AFTER_EVENT"):
        stall_after(os.environ["CARDIOMICS_TEST_STALL_AFTER_EVENT"])
    from cardiomics.cli import main

    sys.argv = ["cardiomics", *sys.argv[1:]]
    sys.exit(main())
