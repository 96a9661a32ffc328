"""Tool ``knowledge_search``: cited passages on cardiac pathways, cell states and imaging-omics links."""

from __future__ import annotations

import structlog
from pydantic import BaseModel, ConfigDict, Field

from cardiomics.errors import InputError
from cardiomics.hashing import sha256_text

from .._registry import ToolContext, tool
from ..contract import ToolOutput
from ._corpus import EMBEDDING_MODEL, Citation
from ._index import open_index

log = structlog.get_logger(__name__)


class KnowledgeSearchInput(BaseModel):
    query: str = Field(min_length=3, max_length=1000, description="A question or keywords, e.g. 'which molecular programme goes with mid-wall LGE in DCM?'.")
    k: int = Field(5, ge=1, le=20, description="Number of passages to return, best first.")


class Passage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="Document / citation id, e.g. 'kb:kuppe2022-mi-spatial-atlas'; cite it in a report as [kb:…].")
    rank: int
    score: float = Field(description="Relevance: cosine similarity of query and document embeddings (higher is closer).")
    title: str
    text: str
    topics: list[str]
    citation: Citation
    citation_text: str = Field(description="Formatted reference.")


class KnowledgeSearch(ToolOutput):
    passages: list[Passage]
    corpus_hash: str
    n_documents: int
    embedding_model: str


@tool(role="analysis", version="1.0.0", private=("query",),
      example=lambda ctx: {"query": "late gadolinium enhancement and fibroblast activation", "k": 3})
def knowledge_search(inp: KnowledgeSearchInput, ctx: ToolContext) -> KnowledgeSearch:
    """Retrieve cited background knowledge from the curated cardiac knowledge base.

    Searches a local, offline vector index of short curated documents (pathways, cardiac cell
    states, imaging-molecular links such as LGE and fibroblast activation, T1/ECV and diffuse
    fibrosis, perivascular fat attenuation and coronary inflammation, hypertrophy and the fetal gene
    programme, DCM and HCM genetics, myocarditis, the ReHeaT heart-failure signature, the spatial MI
    atlas, and the statistics used by the analysis tools). Each passage carries its document id,
    full literature citation and a relevance score. Use it to explain a finding (e.g. 'why might
    high ECV go with a collagen programme?'); cite passages as ``[id]`` (e.g. ``[kb:kuppe2022-mi-spatial-atlas]``), since the report's grounding
    check accepts only ids returned by this tool in the same run. No network access is used.
    """
    query = inp.query.strip()
    if len(query) < 3:
        raise InputError("empty-query", "the query is blank", hint="ask a question or give keywords")
    idx = open_index()
    ctx.used_input("corpus", idx.corpus_hash)
    hits = idx.search(query, inp.k)
    log.info("knowledge_search", query_sha256=sha256_text(query)[:16], top=hits[0].document.id if hits else None)
    return KnowledgeSearch(
        passages=[Passage(id=h.document.id, rank=h.rank, score=round(h.score, 6), title=h.document.title,
                          text=h.document.text, topics=list(h.document.topics), citation=h.document.citation,
                          citation_text=h.document.citation.formatted()) for h in hits],
        corpus_hash=idx.corpus_hash, n_documents=len(idx.documents), embedding_model=EMBEDDING_MODEL)
