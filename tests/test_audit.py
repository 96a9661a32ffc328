"""The audit chain detects any edit, deletion, insertion or reordering, and names the line."""

from __future__ import annotations

import json

import pytest

from cardiomics.audit import AuditTrail, verify_file


@pytest.fixture
def trail(tmp_path):
    t = AuditTrail(tmp_path, "run-test")
    for i in range(6):
        t.append("tool_call", "processing", tool=f"t{i}", args_sha256="a" * 64)
    return t


def lines(t):
    return t.path.read_text().splitlines(keepends=True)


def test_intact_chain_verifies(trail):
    r = verify_file(trail.path)
    assert r.ok and r.lines == 6
    recs = trail.records()
    assert [x["seq"] for x in recs] == list(range(1, 7))
    assert all(recs[i]["prev_hash"] == recs[i - 1]["hash"] for i in range(1, 6))


@pytest.mark.parametrize("n", [1, 3, 6])
def test_edit_names_the_line(trail, n):
    ls = lines(trail)
    rec = json.loads(ls[n - 1]); rec["tool"] = "forged"
    ls[n - 1] = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    trail.path.write_text("".join(ls))
    r = verify_file(trail.path)
    assert not r.ok and r.first_bad_line == n and "edited" in r.reason


def test_deletion_detected(trail):
    ls = lines(trail); del ls[2]
    trail.path.write_text("".join(ls))
    r = verify_file(trail.path)
    assert not r.ok and r.first_bad_line == 3


def test_reorder_detected(trail):
    ls = lines(trail); ls[1], ls[2] = ls[2], ls[1]
    trail.path.write_text("".join(ls))
    r = verify_file(trail.path)
    assert not r.ok and r.first_bad_line == 2


def test_insertion_with_recomputed_hash_detected(trail):
    from cardiomics.audit import line_hash

    ls = lines(trail)
    prev = json.loads(ls[2])
    fake = {"event": "approval", "actor": "mallory", "seq": 4, "prev_hash": prev["hash"], "run_id": "run-test", "ts": prev["ts"]}
    fake["hash"] = line_hash(fake)
    ls.insert(3, json.dumps(fake, sort_keys=True, separators=(",", ":")) + "\n")
    trail.path.write_text("".join(ls))
    r = verify_file(trail.path)
    assert not r.ok and r.first_bad_line == 5  # the forged line chains; the next one no longer does


def test_torn_write_leaves_verifiable_prefix_and_is_recorded(trail):
    with open(trail.path, "ab") as fh:
        fh.write(b'{"seq":7,"event":"tool_ca')
    r = verify_file(trail.path)
    assert not r.ok and r.torn_tail and r.first_bad_line == 7
    trail.append("after_crash", "system")
    r = verify_file(trail.path)
    assert r.ok
    events = [x["event"] for x in trail.records()]
    assert events[-2:] == ["audit_recovered", "after_crash"]


def test_once_key_writes_once(tmp_path):
    t = AuditTrail(tmp_path, "run-once")
    t.append("approval", "dr-a", once_key="approval:qc:1")
    t.append("approval", "dr-a", once_key="approval:qc:1")
    assert len(t.records()) == 1


def test_bad_run_id_refused(tmp_path):
    from cardiomics.errors import AuditError

    with pytest.raises(AuditError):
        AuditTrail(tmp_path, "../escape")
