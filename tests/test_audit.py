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
    rec = json.loads(ls[n - 1])
    rec["tool"] = "forged"
    ls[n - 1] = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    trail.path.write_text("".join(ls))
    r = verify_file(trail.path)
    assert not r.ok and r.first_bad_line == n and "edited" in r.reason


def test_deletion_detected(trail):
    ls = lines(trail)
    del ls[2]
    trail.path.write_text("".join(ls))
    r = verify_file(trail.path)
    assert not r.ok and r.first_bad_line == 3


def test_reorder_detected(trail):
    ls = lines(trail)
    ls[1], ls[2] = ls[2], ls[1]
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


@pytest.mark.parametrize("size", [10, 8191, 8192, 20_000])
def test_lines_longer_than_a_read_block_chain_and_recover(tmp_path, size):
    # appends read the trail backwards in 8 KiB blocks: lines of any length must still chain
    t = AuditTrail(tmp_path, "run-long")
    t.append("tool_call", "processing", note="x" * size)
    t.append("tool_call", "processing", note="y" * size)
    with open(t.path, "ab") as fh:
        fh.write(b'{"seq":3,"note":"' + b"z" * size)
    t.append("after_crash", "system", note="w" * size)
    recs = t.records()
    assert [r["event"] for r in recs] == ["tool_call", "tool_call", "audit_recovered", "after_crash"]
    assert recs[2]["discarded_bytes"] == size + 17 and [r["seq"] for r in recs] == [1, 2, 3, 4]
    assert verify_file(t.path).ok


def test_append_reads_only_the_end_of_the_trail(tmp_path):
    # a day-long MCP trail grows by a line per call: extending it must not re-read (or re-parse) it all,
    # so an append after an unreadable early line still chains from the last line, and verify names line 1
    t = AuditTrail(tmp_path, "run-tail")
    for i in range(3):
        t.append("tool_call", "processing", i=i)
    ls = t.path.read_text().splitlines(keepends=True)
    t.path.write_text("not json at all\n" + "".join(ls[1:]))
    rec = t.append("tool_call", "processing", i=3)
    assert rec["seq"] == 4 and rec["prev_hash"] == json.loads(ls[2])["hash"]
    r = verify_file(t.path)
    assert not r.ok and r.first_bad_line == 1


def test_once_key_writes_once(tmp_path):
    t = AuditTrail(tmp_path, "run-once")
    t.append("approval", "dr-a", once_key="approval:qc:1")
    t.append("approval", "dr-a", once_key="approval:qc:1")
    assert len(t.records()) == 1


def test_bad_run_id_refused(tmp_path):
    from cardiomics.errors import AuditError

    with pytest.raises(AuditError):
        AuditTrail(tmp_path, "../escape")
