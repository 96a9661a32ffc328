"""The three agent roles and the tools each may call.

A tool's own ``role`` puts it on that role's list; the extras below are deliberate grants.
"""

from __future__ import annotations

from functools import cache

from cardiomics.tools import registry

ROLES = ("processing", "analysis", "explanation")
_EXTRA: dict[str, frozenset[str]] = {
    # the explanation agent may look up literature, but never compute imaging numbers
    "explanation": frozenset({"knowledge_search"}),
}


@cache
def allowed_tools(role: str) -> frozenset[str]:
    tools = registry()
    own = {name for name, spec in tools.items() if spec.role == role}
    return frozenset(own | (_EXTRA.get(role, frozenset()) & set(tools)))
