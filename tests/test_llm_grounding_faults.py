"""Planted faults against the grounding check: every wrong number and unsupported citation is caught.

The suite (tests/llm_faults/faults.json) varies the unit, the rounding and the position of the
planted error; the controls are correct texts that must pass, so the check is not simply strict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cardiomics.agents.grounding import check, numeric_values

DATA = Path(__file__).parent / "llm_faults"
SUITE = json.loads((DATA / "faults.json").read_text(encoding="utf-8"))
VALUES = [v for r in json.loads((DATA / "results.json").read_text(encoding="utf-8"))["results"].values() for v in numeric_values(r)]


def _norm(s: str) -> str:
    return s.replace("−", "-")


def test_suite_is_large_and_varied():
    faults = SUITE["faults"]
    assert len(faults) >= 30
    assert len({f["category"] for f in faults}) >= 20
    assert {f["kind"] for f in faults} == {"number", "citation"}


@pytest.mark.parametrize("fault", SUITE["faults"], ids=[f["id"] + "-" + f["category"] for f in SUITE["faults"]])
def test_planted_fault_is_caught_for_the_right_reason(fault):
    problems = check(fault["text"], VALUES, fault["retrieved"])
    assert any(_norm(fault["planted"]) in _norm(p) for p in problems), (fault["text"], problems)


@pytest.mark.parametrize("control", SUITE["controls"], ids=[f"control-{i}" for i in range(len(SUITE["controls"]))])
def test_correct_text_passes(control):
    assert check(control["text"], VALUES, control["retrieved"]) == []
