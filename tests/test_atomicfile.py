"""Files published under a name are whole: the shared atomic writer and the artefact store under
concurrent writers (the MCP server runs tools in threads, a batch in processes)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from cardiomics.atomicfile import replacing, write_atomic
from cardiomics.tools.store import ArtifactStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _run_at_once(n: int, target) -> list[BaseException]:
    """``target(i)`` in ``n`` threads released together; the exceptions they raised."""
    barrier, errors = threading.Barrier(n), []

    def run(i: int) -> None:
        barrier.wait()
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_text_and_bytes_land_whole_with_no_temporary_left(tmp_path):
    target = tmp_path / "sub" / "report.json"
    write_atomic(target, '{"lvef": 59.6}')
    assert target.read_text() == '{"lvef": 59.6}'
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_modes(tmp_path):
    secret = write_atomic(tmp_path / "tokens.json", "{}", mode=0o600)
    assert _mode(secret) == 0o600
    read_only = write_atomic(tmp_path / "v1.json", "{}", mode=0o444)
    assert _mode(read_only) == 0o444
    os.chmod(secret, 0o640)  # its owner let a group read it: a rewrite keeps that
    write_atomic(secret, '{"a": 1}', keep_permissions=True)
    assert _mode(secret) == 0o640 and secret.read_text() == '{"a": 1}'
    plain = write_atomic(tmp_path / "plain.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert _mode(plain) == 0o666 & ~umask


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_rewrite_by_root_keeps_the_owner(tmp_path):
    """An administrator running a command as root must not leave a service's file (0600) to root."""
    target = write_atomic(tmp_path / "reviewers.json", "{}", mode=0o600)
    os.chown(target, 4321, 4322)
    write_atomic(target, '{"users": {}}', mode=0o600, keep_permissions=True)
    st = os.stat(target)
    assert (st.st_uid, st.st_gid, _mode(target)) == (4321, 4322, 0o600)
    write_atomic(target, "{}", mode=0o600)  # without keep_permissions the writer owns the new file
    assert os.stat(target).st_uid == 0


def test_no_replace_keeps_the_first_file(tmp_path):
    target = write_atomic(tmp_path / "salt", b"first", replace=False)
    with pytest.raises(FileExistsError):
        write_atomic(target, b"second", replace=False)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["salt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_atomic(tmp_path / "table.json", "old")
    with pytest.raises(TypeError):
        write_atomic(target, 12345)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]


def test_a_writer_that_needs_a_file_name_publishes_on_success_only(tmp_path):
    import nibabel as nib

    target = tmp_path / "labels.nii.gz"
    img = nib.Nifti1Image(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.eye(4))
    with replacing(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path  # nibabel picks gzip from the suffix
        nib.save(img, str(tmp))
        assert not target.exists()  # not published before the block ends
    assert np.array_equal(np.asarray(nib.load(str(target)).dataobj), img.get_fdata().astype(np.uint8))
    before = target.read_bytes()
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz"]


def test_threads_writing_one_name_each_publish_a_whole_file(tmp_path):
    target = tmp_path / "shared.bin"
    bodies = [bytes([i]) * 200_000 for i in range(8)]
    errors = _run_at_once(8, lambda i: write_atomic(target, bodies[i]))
    assert errors == []
    assert target.read_bytes() in bodies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.bin"]


def test_store_puts_of_the_same_artefact_from_threads_all_succeed(tmp_path):
    """Two MCP clients asking for the same result at once store the same content-addressed artefact."""
    store = ArtifactStore(tmp_path / "store")
    images = np.arange(20 * 64 * 64, dtype=np.float32).reshape(20, 64, 64)
    ids: list[str] = []
    errors = _run_at_once(8, lambda i: ids.append(store.put("img", {"images": images}, {"spacing_mm": [1.5, 1.5, 8.0]})))
    assert errors == []
    assert len(set(ids)) == 1
    assert np.array_equal(store.arrays(ids[0])["images"], images)
    assert store.meta(ids[0]) == {"spacing_mm": [1.5, 1.5, 8.0]}
    leftovers = [p.name for p in (tmp_path / "store").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_store_salt_is_created_once_under_concurrent_first_use(tmp_path):
    stores = [ArtifactStore(tmp_path / "store") for _ in range(6)]
    salts: list[bytes] = []
    errors = _run_at_once(6, lambda i: salts.append(stores[i].salt))
    assert errors == []
    assert len(set(salts)) == 1 and len(salts[0]) == 32
    assert _mode(tmp_path / "store" / ".salt") == 0o600


def _report(narrative: str):
    from cardiomics.tools.report import Report

    return Report(run_id="run-1", study_key="sk-1", version=2, created_at="2026-11-23T10:00:00+00:00", narrative=narrative)


def test_a_report_version_is_written_once_and_read_only(tmp_path):
    from cardiomics.agents.reports import ReportStore
    from cardiomics.errors import PolicyError

    store = ReportStore(tmp_path)
    path = store.save(_report("LVEF 59.6 %"))
    assert store.save(_report("LVEF 59.6 %")) == path  # a resumed node writing the same version again
    with pytest.raises(PolicyError) as refused:
        store.save(_report("LVEF 35.0 %"))
    assert refused.value.code == "version-exists"
    assert store.load("run-1", 2).narrative == "LVEF 59.6 %"
    assert "LVEF 59.6 %" in path.with_suffix(".html").read_text()
    assert _mode(path) == _mode(path.with_suffix(".html")) == 0o444


def test_two_writers_of_one_version_leave_one_report_and_its_own_page(tmp_path):
    """Two reviewers saving an edit at once: one version wins, the other is refused, and the page shown
    for the version is the winner's, not the loser's."""
    from cardiomics.agents.reports import ReportStore
    from cardiomics.errors import PolicyError

    for attempt in range(5):
        store = ReportStore(tmp_path / str(attempt))
        texts = [f"edit by reviewer {i}" for i in range(6)]
        errors = _run_at_once(6, lambda i, store=store, texts=texts: store.save(_report(texts[i])))
        assert len(errors) == 5 and all(isinstance(e, PolicyError) and e.code == "version-exists" for e in errors)
        winner = store.load("run-1", 2).narrative
        page = (tmp_path / str(attempt) / "run-1" / "v2.html").read_text()
        assert [t for t in texts if t in page] == [winner]


def test_a_file_system_without_hard_links_still_publishes_new_files(tmp_path, monkeypatch):
    """Network shares without hard links: a report version or a salt is still written, and still never overwritten."""
    import errno

    def no_links(src, dst, *a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = write_atomic(tmp_path / "v1.json", b"first", mode=0o444, replace=False)
    assert target.read_bytes() == b"first" and _mode(target) == 0o444
    with pytest.raises(FileExistsError):
        write_atomic(target, b"second", replace=False)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1.json"]
