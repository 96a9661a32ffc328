"""The on-disk chromadb index of the corpus: built on first use, rebuilt when the corpus changes.

Location: ``$CARDIOMICS_KNOWLEDGE_DIR`` if set, else ``Settings.from_env().home / "knowledge"``;
``KnowledgeIndex(path)`` overrides both (telemetry off). With ``CARDIOMICS_CHROMA_URL`` set the
collection lives on that chromadb server instead (see ``cardiomics.vectorstore``). The collection is named after the corpus hash, so a
changed corpus (or embedding model) gets a fresh collection and stale ones are deleted.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from cardiomics.config import Settings

from ._corpus import Document, load_corpus

log = structlog.get_logger(__name__)
_PREFIX = "cardiomics-kb-"
_OPEN: dict[str, KnowledgeIndex] = {}
_LOCK = threading.Lock()


def default_index_dir() -> Path:
    env = os.environ.get("CARDIOMICS_KNOWLEDGE_DIR")
    return Path(env).expanduser().resolve() if env else Settings.from_env().home / "knowledge"


@dataclass
class Hit:
    document: Document
    score: float  # cosine similarity, 1 = identical direction
    rank: int


class KnowledgeIndex:
    def __init__(self, path: str | Path | None = None, corpus_path: str | Path | None = None) -> None:
        from cardiomics.vectorstore import chroma_client

        from ._embedding import MiniLMOffline  # lazy: chromadb is a heavy import

        self.path = Path(path) if path is not None else default_index_dir()
        self.path.mkdir(parents=True, exist_ok=True)
        self.documents, self.corpus_hash = load_corpus(Path(corpus_path)) if corpus_path else load_corpus()
        self._by_id = {d.id: d for d in self.documents}
        self.client = chroma_client(self.path)  # on disk; a chromadb server when CARDIOMICS_CHROMA_URL is set
        name = _PREFIX + self.corpus_hash[:24]
        for col in self.client.list_collections():
            cname = col if isinstance(col, str) else col.name
            if cname.startswith(_PREFIX) and cname != name:
                self.client.delete_collection(cname)
                log.info("knowledge_index_stale_deleted", collection=cname)
        self.collection = self.client.get_or_create_collection(
            name, embedding_function=MiniLMOffline(), configuration={"hnsw": {"space": "cosine"}},
            metadata={"corpus_hash": self.corpus_hash})
        self.built_now = False
        self.build_seconds = 0.0
        if self.collection.count() != len(self.documents):
            self._build()

    def _build(self) -> None:
        started = time.perf_counter()
        existing = self.collection.get(include=[])["ids"]
        if existing:
            self.collection.delete(ids=existing)
        self.collection.add(ids=[d.id for d in self.documents], documents=[d.embedding_text() for d in self.documents],
                            metadatas=[{"title": d.title, "year": d.citation.year} for d in self.documents])
        self.built_now = True
        self.build_seconds = time.perf_counter() - started
        log.info("knowledge_index_built", n=len(self.documents), seconds=round(self.build_seconds, 2))

    def search(self, query: str, k: int = 5) -> list[Hit]:
        res = self.collection.query(query_texts=[query], n_results=min(k, len(self.documents)), include=["distances"])
        return [Hit(self._by_id[i], 1.0 - float(d), r + 1) for r, (i, d) in enumerate(zip(res["ids"][0], res["distances"][0]))]


def open_index(path: str | Path | None = None) -> KnowledgeIndex:
    """A process-wide cached index for ``path`` (default location when None)."""
    key = str(Path(path).resolve()) if path is not None else str(default_index_dir())
    with _LOCK:
        idx = _OPEN.get(key)
        if idx is None or idx.corpus_hash != load_corpus()[1]:
            idx = _OPEN[key] = KnowledgeIndex(key)
        return idx
