"""The one error that must not end a run: the language model could not be reached.

It is deliberately *not* a ``CardiomicsError``: the graph turns those into a failed run, whereas an
unreachable endpoint is a pause. The exception leaves the node, LangGraph keeps the run at its
last checkpoint, and ``resume`` re-runs the node once the endpoint answers again. It carries the
same ``kind``/``code``/``message``/``hint`` fields as the project's typed errors so every front end
prints it the same way.
"""

from __future__ import annotations

from typing import Any


class LLMUnavailable(RuntimeError):
    kind = "LLMUnavailable"

    def __init__(self, code: str, message: str, hint: str = "", **details: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.hint, self.details = code, message, hint, details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.kind, "code": self.code, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return f"{self.kind}[{self.code}]: {self.message}" + (f"\n  hint: {self.hint}" if self.hint else "")


def is_connection_failure(exc: BaseException) -> bool:
    """Errors of the transport or the endpoint (not of our request): worth a pause and a retry."""
    try:
        import openai
    except ImportError:  # pragma: no cover - langchain-openai depends on openai
        openai = None
    if openai is not None and isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError,
                                               openai.RateLimitError, openai.InternalServerError,
                                               openai.AuthenticationError, openai.PermissionDeniedError,
                                               openai.NotFoundError)):
        return True
    try:
        import httpx

        if isinstance(exc, (httpx.TransportError, httpx.TimeoutException)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, (ConnectionError, TimeoutError))
