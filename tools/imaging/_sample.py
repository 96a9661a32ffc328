"""The shipped sample: a synthetic cine SAX phantom written as a real DICOM series.

Generated here, never downloaded. It carries fake identifiers on purpose, so every run shows
that they are dropped on load.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SAMPLE_IDENTIFIERS = {"patient_name": "PHANTOM^DEMO", "patient_id": "CMX-DEMO-0001", "birth_date": "19700101"}


def ensure_sample(folder: str | Path, *, n_frames: int = 25, n_slices: int = 10, size: int = 192, seed: int = 7) -> Path:
    """Create (or find) the phantom DICOM series in ``folder/dicom``; ground truth in ``folder/truth.json``."""
    from cardiomics.synthetic.phantom import PhantomSpec, make_phantom

    from ._dicom import write_dicom_series

    folder = Path(folder)
    dicom_dir, truth_path = folder / "dicom", folder / "truth.json"
    if truth_path.exists() and dicom_dir.is_dir():
        return dicom_dir
    log.info("writing sample phantom", frames=n_frames, slices=n_slices)
    spec = PhantomSpec(n_frames=n_frames, n_slices=n_slices, rows=size, cols=size, seed=seed)
    phantom = make_phantom(spec)
    tmp = folder / ".partial"
    write_dicom_series(phantom.images, phantom.spacing_mm, tmp / "dicom", series_description="SAX cine (cardiomics phantom)",
                       seed=seed, **SAMPLE_IDENTIFIERS)
    truth = {k: (float(v) if not isinstance(v, (list, tuple)) else [float(x) for x in v]) for k, v in phantom.truth.items()}
    (tmp / "truth.json").write_text(json.dumps({"spec": spec.model_dump(), "truth": truth}, indent=2))
    folder.mkdir(parents=True, exist_ok=True)
    (tmp / "dicom").rename(dicom_dir)  # written complete before it becomes visible
    (tmp / "truth.json").rename(truth_path)
    tmp.rmdir()
    return dicom_dir
