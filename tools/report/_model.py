"""The structured report a reviewer signs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..contract import Interval, Provenance, ReferenceRange

Status = Literal["draft", "approved", "rejected"]


class Finding(BaseModel):
    key: str = Field(description="Machine name of the quantity, e.g. 'lv_ef_pct'.")
    label: str
    value: float
    unit: str
    interval: Interval | None = None
    reference: ReferenceRange | None = None
    flag: Literal["normal", "low", "high", "not-assessed"] = "not-assessed"
    section: str = "Cardiac function"
    note: str = Field("", description="What the value is (e.g. 'measured' or 'predicted') and its significance, in words.")
    result_id: str = Field(description="Provenance id of the tool output the value comes from.")


class QcItem(BaseModel):
    stage: str
    check: str
    passed: bool
    detail: str


class Figure(BaseModel):
    id: str
    title: str
    png_base64: str = Field(repr=False)
    result_id: str


class Signature(BaseModel):
    reviewer: str
    decision: Literal["approved", "rejected"]
    at: str
    comment: str = ""
    report_sha256: str = Field(description="SHA-256 of the report JSON without its signature.")


class Report(BaseModel):
    run_id: str
    study_key: str
    version: int = 1
    status: Status = "draft"
    created_at: str
    findings: list[Finding] = Field(default_factory=list)
    qc: list[QcItem] = Field(default_factory=list)
    qc_verdict: Literal["pass", "warn", "fail"] = "pass"
    narrative: str = ""
    grounding_flags: list[str] = Field(default_factory=list, description="Problems the grounding check found in the narrative.")
    limitations: list[str] = Field(default_factory=list)
    figures: list[Figure] = Field(default_factory=list)
    provenance: dict[str, Provenance] = Field(default_factory=dict, description="Tool outputs behind the findings, by result id.")
    signature: Signature | None = None

    def content_sha256(self) -> str:
        """Hash of everything but the signature: what a reviewer signs."""
        from cardiomics.hashing import sha256_json

        return sha256_json(self.model_dump(mode="json", exclude={"signature"}))
