"""Knowledge tools: a curated, cited cardiac knowledge base searched offline (chromadb + MiniLM).

- ``knowledge_search``: passages with citation, document id and relevance score.
- ``check_citations`` / ``cited_ids`` / ``retrieved_ids``: grounding of a draft's citations in
  the retrievals of the same run.
- ``KnowledgeIndex`` / ``open_index``: the on-disk index (built on first use, rebuilt on change).
"""

from ._corpus import Citation, Document, load_corpus
from ._index import KnowledgeIndex, default_index_dir, open_index
from .grounding import CitationCheck, check_citations, cited_ids, retrieved_ids
from .search import knowledge_search

__all__ = [
    "Citation", "CitationCheck", "Document", "KnowledgeIndex", "check_citations", "cited_ids",
    "default_index_dir", "knowledge_search", "load_corpus", "open_index", "retrieved_ids",
]
