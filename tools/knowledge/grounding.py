"""Citation grounding: a report may cite a knowledge document only if retrieval returned it.

Rule (kept simple on purpose): the ids cited in a draft (``[kb:…]``) must each appear as ``id`` of a
passage in the ``knowledge_search`` outputs of the same run. The caller passes those outputs
(objects or their JSON dicts); nothing is stored between calls, so the check is reproducible
from the audit trail alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from ._corpus import load_corpus

CITATION_ID = re.compile(r"\[(kb:[A-Za-z0-9_.:-]+)\]")


class CitationCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool
    cited: list[str]
    retrieved: list[str]
    not_retrieved: list[str]
    unknown: list[str]


def retrieved_ids(outputs: Iterable[object]) -> list[str]:
    """Citation ids of every passage in ``knowledge_search`` outputs (models or dicts)."""
    ids: list[str] = []
    for out in outputs:
        data = out.model_dump() if isinstance(out, BaseModel) else out
        if isinstance(data, Mapping):
            for p in data.get("passages", []) or []:
                if isinstance(p, Mapping) and isinstance(p.get("id"), str) and p["id"] not in ids:
                    ids.append(p["id"])
    return ids


def cited_ids(text: str) -> list[str]:
    """Knowledge ids cited as ``[kb:…]`` in a draft's text, in order of first mention."""
    return list(dict.fromkeys(CITATION_ID.findall(text)))


def check_citations(cited: Iterable[str], retrieval_outputs: Iterable[object]) -> CitationCheck:
    """``ok`` when every cited id was returned by a retrieval of this run (and exists in the corpus)."""
    cited_list = list(dict.fromkeys(cited))
    got = retrieved_ids(retrieval_outputs)
    known = {d.id for d in load_corpus()[0]}
    unknown = [c for c in cited_list if c not in known]
    missing = [c for c in cited_list if c not in got]
    return CitationCheck(ok=not missing and not unknown, cited=cited_list, retrieved=got,
                         not_retrieved=missing, unknown=unknown)
