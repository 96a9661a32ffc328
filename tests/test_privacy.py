"""Privacy scan: a full run on a phantom with identifiers planted in every identifying DICOM tag and
in the folder name, through the graph to a signed report plus MCP calls; then every artefact the
project wrote (audit trails, checkpoint database with its blobs, reports, artefact store, any
vector store, MCP responses) is searched for the identifiers. Uses the real segmenter.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
from pathlib import Path

import fastmcp
import pydicom
import pytest

from conftest import FAKE_STRINGS

PLANTED = {
    "PatientName": "DOE^JANE", "PatientID": "MRN-0042", "PatientBirthDate": "19600101", "OtherPatientIDs": "MRN-0042",
    "AccessionNumber": "MRN-0042", "InstitutionName": "DOE^JANE clinic", "ReferringPhysicianName": "DOE^JANE",
    "PatientAddress": "JANE DOE street", "StudyID": "MRN-0042", "PerformingPhysicianName": "DOE^JANE",
    "OperatorsName": "DOE^JANE", "StudyDescription": "MRN-0042 cardiac", "ImageComments": "patient DOE^JANE 1960-01-01",
}
LONG = [s for s in FAKE_STRINGS if len(s) >= 8]  # short strings occur by chance in binary arrays
_BASE64 = re.compile(rb"[A-Za-z0-9+/=]{200,}")  # embedded figures: 'DOE' turns up in base64 by chance


def _plant(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        ds = pydicom.dcmread(p)
        for k, v in PLANTED.items():
            setattr(ds, k, v)
        ds.save_as(p, enforce_file_format=True)


def _scan_file(path: Path, found: list[str]) -> None:
    data = path.read_bytes()
    binary = path.suffix in (".npz", ".sqlite", ".bin", ".pickle", ".parquet") or b"\x00" in data[:4096]
    if not binary:
        data = _BASE64.sub(b"", data)
    for s in (LONG if binary else FAKE_STRINGS):
        if s.encode() in data or (not binary and s.encode("utf-16-le") in data):
            found.append(f"{s!r} in {path}")


@pytest.mark.parametrize("folder_name", [
    "study",
    "DOE_JANE_MRN-0042_19600101",
])
def test_no_identifier_in_any_artefact(settings, phantom_study, tmp_path, folder_name):
    from cardiomics.agents.runs import Runs
    from cardiomics.mcp_server import build_server

    study = tmp_path / folder_name  # archives often name folders after the patient
    _plant(phantom_study[0], study)
    with Runs(settings) as runs:
        st = runs.start(str(study), height_cm=170, weight_kg=70, sex="female")
        assert st.status == "awaiting-qc", st.error
        runs.decide(st.run_id, "dr-qc", "approved")
        st = runs.decide(st.run_id, "dr-sign", "approved", "agree")
        assert st.status == "approved"

    async def mcp_calls():
        async with fastmcp.Client(build_server(settings)) as c:
            loaded = await c.call_tool("load_study", {"path": str(study)})
            seg = await c.call_tool("segment", {"study_id": loaded.structured_content["study_id"], "n_tta": 0})
            func = await c.call_tool("cardiac_function", {"segmentation_id": seg.structured_content["segmentation_id"]})
            reports = await c.read_resource("cardiomics://reports/signed")
            listed = json.loads(reports[0].text)
            signed = await c.read_resource(listed[0]["uri"])
            return [json.dumps(r.structured_content) for r in (loaded, seg, func)] + [reports[0].text, signed[0].text]

    responses = asyncio.run(mcp_calls())
    found: list[str] = []
    for text in responses:
        text = _BASE64.sub(b"", text.encode()).decode()
        for s in FAKE_STRINGS:
            if s in text:
                found.append(f"{s!r} in an MCP response")
    scanned = 0
    for root in (settings.home, settings.audit_dir):
        for p in root.rglob("*"):
            if p.is_file():
                _scan_file(p, found)
                scanned += 1
    db = sqlite3.connect(settings.checkpoint_db)
    dump = "\n".join(db.iterdump())
    for table in ("checkpoints", "writes"):
        for row in db.execute(f"select * from {table}"):
            for v in row:
                if isinstance(v, bytes):
                    dump += v.decode("utf-8", "replace")
    db.close()
    dump = _BASE64.sub(b"", dump.encode("utf-8", "replace")).decode()
    for s in FAKE_STRINGS:
        if s in dump:
            found.append(f"{s!r} in the checkpoint database")
    assert scanned > 10 and any(settings.reports_dir.rglob("v2.json"))
    assert not found, "\n".join(found)
