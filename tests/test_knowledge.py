"""Knowledge base: corpus integrity, offline indexing and search, retrieval accuracy, grounding."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from cardiomics.errors import InputError
from cardiomics.tools import ArtifactStore, ToolContext, call_tool
from cardiomics.tools.knowledge import KnowledgeIndex, check_citations, cited_ids, load_corpus
from cardiomics.tools.knowledge._corpus import CORPUS_PATH

QUESTIONS = Path(__file__).parent / "data" / "knowledge_questions.json"


class _NetworkUsed(AssertionError):
    pass


def _block_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise _NetworkUsed(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """Index built from scratch with every socket connection refused."""
    mp = pytest.MonkeyPatch()
    _block_network(mp)
    try:
        idx = KnowledgeIndex(tmp_path_factory.mktemp("kb"))
        assert idx.built_now and idx.collection.count() == len(idx.documents)
        idx.search("warm-up query about fibrosis", 1)
        yield idx
    finally:
        mp.undo()


def test_corpus_is_curated_and_cited():
    docs, digest = load_corpus()
    assert len(docs) >= 40 and len(digest) == 64
    assert len({d.id for d in docs}) == len(docs)
    for d in docs:
        c = d.citation
        assert c.authors and c.title and c.journal and 1950 <= c.year <= 2026
        assert len(d.text) > 150, d.id
        if c.doi:
            assert re.fullmatch(r"10\.\d{4,9}/\S+", c.doi), d.id
    topics = " ".join(t for d in docs for t in d.topics)
    for needed in ("late gadolinium enhancement", "extracellular volume", "perivascular fat", "hypertrophy",
                   "dilated cardiomyopathy", "hypertrophic cardiomyopathy", "myocarditis", "spatial transcriptomics"):
        assert needed in topics


def test_retrieval_top3_on_questions_written_in_advance(index):
    qs = json.loads(QUESTIONS.read_text())["questions"]
    assert len(qs) == 20
    known = {d.id for d in index.documents}
    hits = 0
    misses = []
    for item in qs:
        assert item["expected"] in known
        top = [h.document.id for h in index.search(item["q"], 3)]
        if item["expected"] in top:
            hits += 1
        else:
            misses.append((item["q"], top))
    assert hits >= 18, f"top-3 hits {hits}/20; misses: {misses}"


def test_search_is_offline_and_scored(index, monkeypatch):
    _block_network(monkeypatch)
    hits = index.search("titin truncation dilated cardiomyopathy", 5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1
    assert hits[0].document.id.startswith("kb:herman2012") or any("ttn" in h.document.id for h in hits[:2])


def test_reopen_does_not_rebuild_and_changed_corpus_rebuilds(index, tmp_path, monkeypatch):
    _block_network(monkeypatch)
    again = KnowledgeIndex(index.path)
    assert not again.built_now
    small = json.loads(CORPUS_PATH.read_text())
    small["documents"] = small["documents"][:4]
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps(small))
    changed = KnowledgeIndex(index.path, corpus_path=path)
    assert changed.built_now and changed.collection.count() == 4
    small["documents"][0]["text"] += " Edited."
    path.write_text(json.dumps(small))
    load_corpus.cache_clear()
    edited = KnowledgeIndex(index.path, corpus_path=path)
    assert edited.built_now and edited.corpus_hash != changed.corpus_hash
    names = [c if isinstance(c, str) else c.name for c in edited.client.list_collections()]
    assert names == ["cardiomics-kb-" + edited.corpus_hash[:24]]  # stale collections deleted
    load_corpus.cache_clear()


def test_tool_returns_citations_and_grounding_check(tmp_path, monkeypatch, index):
    _block_network(monkeypatch)
    monkeypatch.setenv("CARDIOMICS_KNOWLEDGE_DIR", str(index.path))
    ctx = ToolContext(store=ArtifactStore(tmp_path / "store"))
    out = call_tool("knowledge_search", {"query": "ECV and diffuse interstitial fibrosis", "k": 4}, ctx)
    assert out.provenance.tool == "knowledge_search" and out.provenance.parameters["query"].startswith("sha256:")
    assert len(out.passages) == 4 and out.n_documents >= 40
    p = out.passages[0]
    assert p.id.startswith("kb:") and p.citation.journal and p.citation_text
    draft = f"Raised ECV suggests diffuse fibrosis [{p.id}]; see also [kb:herman2012-ttn-truncations-dcm]."
    check = check_citations(cited_ids(draft), [out.model_dump(mode="json")])
    assert not check.ok and check.not_retrieved == ["kb:herman2012-ttn-truncations-dcm"]
    assert check_citations([p.id], [out]).ok
    assert check_citations(["kb:not-a-real-doc"], [out]).unknown == ["kb:not-a-real-doc"]
    with pytest.raises(InputError):
        call_tool("knowledge_search", {"query": ""}, ctx)
