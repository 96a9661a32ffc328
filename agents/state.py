"""The graph's state: ids and tool outputs only, never pixels or identifiers."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, Field

Status = Literal["processing", "awaiting-qc", "analysis", "explanation", "awaiting-signoff", "approved", "rejected", "failed"]


def merge(left: dict, right: dict) -> dict:
    return {**(left or {}), **(right or {})}


class RunState(TypedDict, total=False):
    run_id: str
    inputs_sha256: str  # the input paths themselves stay in runs/inputs/<run_id>.json, never in the checkpoint
    patient: dict[str, Any]
    results: Annotated[dict[str, Any], merge]  # tool name -> output (JSON, with provenance)
    status: Status
    report_version: int
    decisions: Annotated[list[dict[str, Any]], operator.add]
    change_requests: Annotated[list[str], operator.add]
    error: dict[str, Any] | None


class Decision(BaseModel):
    """A reviewer's decision at an approval checkpoint."""

    reviewer: str = Field(min_length=1, max_length=120)
    decision: Literal["approved", "rejected", "changes-requested"]
    comment: str = Field("", max_length=4000)
