"""LLM-driven planning for the graph, with every guarantee of the deterministic path kept.

An OpenAI-compatible chat model decides which tools each role calls and drafts the narrative;
the executor still enforces each role's allow-list, the registry still validates arguments, the
grounding check still runs on every draft, and a person still approves twice. The model sees only
de-identified derived results; text read from input files reaches it as quoted data.
"""

from .config import LLMConfig, RoleLimits, load_config
from .errors import LLMUnavailable
from .planner import LLMPlanner, planner_from_settings

__all__ = ["LLMConfig", "LLMPlanner", "LLMUnavailable", "RoleLimits", "load_config", "planner_from_settings"]
