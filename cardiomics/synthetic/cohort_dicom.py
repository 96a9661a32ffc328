"""A folder of many small synthetic cine studies (one DICOM series per subfolder) for batch runs.

Cohort-scale code paths (distribution, resumption, failure collection) need many studies with
known answers; real cohorts cannot ship. Each study is a random, plausible phantom
(``PhantomSpec.random``) written as DICOM; the ground truth goes to ``cohort_truth.json`` beside
the study folders (a file, so it is never taken for a study). ``corrupt`` truncates one file of
the chosen studies, as an interrupted copy from an archive would.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

TRUTH_FILE = "cohort_truth.json"
_TRUTH_KEYS = ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct", "ed_frame", "es_frame")


def study_name(i: int) -> str:
    return f"study-{i:04d}"


def write_cohort(out_dir: str | Path, n: int, *, seed: int = 0, n_frames: int = 12, n_slices: int = 8, size: int = 128,
                 corrupt: Iterable[int] = ()) -> Path:
    """Write ``n`` studies ``study-0000`` … under ``out_dir`` (existing complete studies are kept); return ``out_dir``."""
    from cardiomics.synthetic.phantom import PhantomSpec, make_phantom
    from cardiomics.tools.imaging._dicom import write_dicom_series

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth_path = out / TRUTH_FILE
    truth: dict[str, dict] = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    bad = set(corrupt)
    for i in range(n):
        name = study_name(i)
        folder = out / name
        expected = n_frames * n_slices
        if name in truth and folder.is_dir() and len(list(folder.iterdir())) == expected and i not in bad:
            continue
        spec = PhantomSpec.random(seed * 100_003 + i, n_frames=n_frames, n_slices=n_slices, rows=size, cols=size)
        ph = make_phantom(spec)
        paths = write_dicom_series(ph.images, ph.spacing_mm, folder, seed=seed * 100_003 + i,
                                   patient_name=f"SYNTHETIC^{i:04d}", patient_id=f"SYN-{i:04d}")
        if i in bad:
            victim = sorted(paths)[len(paths) // 2]
            data = victim.read_bytes()
            victim.write_bytes(data[: len(data) // 2])
        truth[name] = {k: ph.truth[k] for k in _TRUTH_KEYS} | {"corrupt": i in bad}
        log.debug("cohort study written", study=name)
    truth_path.write_text(json.dumps(truth, indent=1, sort_keys=True))
    return out
