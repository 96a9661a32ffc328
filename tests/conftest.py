"""Shared fixtures: an isolated data/audit directory per test and one small phantom study per session."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_IDENTIFIERS = {"patient_name": "DOE^JANE", "patient_id": "MRN-0042", "birth_date": "19600101"}
# every spelling an identifier could leak in
FAKE_STRINGS = ["DOE^JANE", "DOE", "JANE", "MRN-0042", "19600101", "1960-01-01"]


def shared_data() -> Path | None:
    path = Path(os.environ.get("CARDIOMICS_DATA", ROOT.parent / "shared" / "data"))
    return path if path.is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    path = shared_data()
    if path is None:
        pytest.skip("real data folder not found (set CARDIOMICS_DATA)")
    return path


@pytest.fixture(scope="session")
def knowledge_dir(tmp_path_factory) -> Path:
    """One knowledge index for the session: building it embeds the whole corpus."""
    return tmp_path_factory.mktemp("knowledge")


@pytest.fixture
def settings(tmp_path, monkeypatch, knowledge_dir):
    from cardiomics.config import Settings

    monkeypatch.setenv("CARDIOMICS_KNOWLEDGE_DIR", str(knowledge_dir))
    monkeypatch.setenv("CARDIOMICS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CARDIOMICS_AUDIT_DIR", str(tmp_path / "audit"))
    return Settings.from_env().ensure()


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory) -> tuple[Path, dict]:
    """A 16-frame, 8-slice phantom written as DICOM with fake identifiers, and its ground truth."""
    from cardiomics.synthetic.phantom import PhantomSpec, make_phantom
    from cardiomics.tools.imaging._dicom import write_dicom_series

    folder = tmp_path_factory.mktemp("phantom") / "dicom"
    spec = PhantomSpec(n_frames=16, n_slices=8, rows=160, cols=160, seed=11)
    ph = make_phantom(spec)
    write_dicom_series(ph.images, ph.spacing_mm, folder, series_description="SAX cine", seed=11, **FAKE_IDENTIFIERS)
    return folder, {k: v for k, v in ph.truth.items()}


_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{200,}")


def assert_no_identifiers(text: str, where: str) -> None:
    """No fake identifier in ``text``; long base64 runs (inline PNGs) are skipped: 'DOE' occurs in them by chance."""
    text = _BASE64_RUN.sub("", text)
    for s in FAKE_STRINGS:
        assert s not in text, f"identifier {s!r} found in {where}"


def access_lines(audit_dir: Path) -> list[dict]:
    """Every record of the daily access trails in ``audit_dir``, oldest day first."""
    from cardiomics.audit import AuditTrail

    return [r for p in sorted(Path(audit_dir).glob("access-*.jsonl")) for r in AuditTrail(audit_dir, p.stem).records()]
