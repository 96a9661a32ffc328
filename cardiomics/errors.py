"""Typed errors with a code, a message a person can act on, and a hint.

The CLI prints them without a traceback; agents and MCP clients receive the same fields.
"""

from __future__ import annotations

from typing import Any


class CardiomicsError(Exception):
    """Base of every error the project raises on purpose."""

    kind = "CardiomicsError"

    def __init__(self, code: str, message: str, hint: str = "", **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.kind, "code": self.code, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        text = f"{self.kind}[{self.code}]: {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class StudyError(CardiomicsError):
    """A CMR study cannot be read or is not what the tool expects."""

    kind = "StudyError"


class InputError(CardiomicsError):
    """Arguments or files that fail validation."""

    kind = "InputError"


class ModelError(CardiomicsError):
    """A model, its weights or its card are missing or inconsistent."""

    kind = "ModelError"


class NotFoundError(CardiomicsError):
    """A run, result or report id that does not exist."""

    kind = "NotFoundError"


class PolicyError(CardiomicsError):
    """A call refused by a rule: role allow-list, approval state, authorisation."""

    kind = "PolicyError"


class AuditError(CardiomicsError):
    """The audit trail cannot be written or does not verify."""

    kind = "AuditError"


class ToolFailure(CardiomicsError):
    """A tool failed for a reason it did not foresee; the traceback goes to the log, not the caller."""

    kind = "ToolFailure"
