"""A chromadb server (`chroma run`) on loopback: stores opened through CARDIOMICS_CHROMA_URL use it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cardiomics.review.server import free_port


def _chroma_cli() -> str | None:
    beside = Path(sys.executable).with_name("chroma")
    return str(beside) if beside.exists() else shutil.which("chroma")


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    cli = _chroma_cli()
    if cli is None:
        pytest.skip("the `chroma` command (shipped by the chromadb package) is not installed")
    data, port = tmp_path_factory.mktemp("chroma-server"), free_port()
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen([cli, "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (data / "server.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "chroma server did not answer within 60 s"
            time.sleep(0.2)
        yield url, data / "db"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).tolist()


def test_collection_created_over_http_and_queried(chroma_server, tmp_path, monkeypatch):
    from cardiomics.vectorstore import chroma_client

    url, server_db = chroma_server
    monkeypatch.setenv("CARDIOMICS_CHROMA_URL", url)
    client = chroma_client(tmp_path / "unused-on-disk")
    assert not (tmp_path / "unused-on-disk").exists(), "with a server configured nothing is written locally"
    assert client.get_settings().chroma_api_impl == "chromadb.api.fastapi.FastAPI"  # the HTTP client, not the embedded one

    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 16))
    col = client.get_or_create_collection("cohort-test", configuration={"hnsw": {"space": "cosine"}})
    col.add(ids=[f"patient-{i}" for i in range(5)], embeddings=[_unit(b) for b in base],
            metadatas=[{"site": i % 2} for i in range(5)], documents=[f"doc {i}" for i in range(5)])

    # a second client (as another process would) sees the same collection on the server
    other = chroma_client(tmp_path / "elsewhere", url=url)
    col2 = other.get_collection("cohort-test")
    assert col2.count() == 5
    query = base[3] + 0.05 * rng.normal(size=16)
    res = col2.query(query_embeddings=[_unit(query)], n_results=2, include=["distances", "metadatas"])
    assert res["ids"][0][0] == "patient-3"
    assert res["metadatas"][0][0] == {"site": 1}
    assert 0.0 <= res["distances"][0][0] < 0.05
    filtered = col2.query(query_embeddings=[_unit(query)], n_results=5, where={"site": 0})
    assert set(filtered["ids"][0]) == {"patient-0", "patient-2", "patient-4"}
    assert server_db.exists() and any(server_db.iterdir()), "the server holds the data in its --path"


def test_default_is_on_disk(tmp_path, monkeypatch):
    from cardiomics.vectorstore import chroma_client

    monkeypatch.delenv("CARDIOMICS_CHROMA_URL", raising=False)
    client = chroma_client(tmp_path / "store")
    client.get_or_create_collection("on-disk").add(ids=["a"], embeddings=[[1.0, 0.0]])
    assert (tmp_path / "store" / "chroma.sqlite3").exists()


def test_unreachable_server_is_a_typed_error(tmp_path):
    from cardiomics.errors import InputError
    from cardiomics.vectorstore import chroma_client

    with pytest.raises(InputError) as info:
        chroma_client(tmp_path, url=f"http://127.0.0.1:{free_port()}")
    assert info.value.code == "chroma-unreachable"
    with pytest.raises(InputError) as bad:
        chroma_client(tmp_path, url="ftp://example")
    assert bad.value.code == "bad-chroma-url"
