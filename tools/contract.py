"""The tool contract: typed outputs that carry provenance, estimates with uncertainty and flags."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ResultId = Annotated[str, Field(pattern=r"^[a-z]+-[0-9a-f]{16,64}$", description="Id of a stored result, e.g. 'seg-3fa2...'.")]
StudyKey = Annotated[str, Field(pattern=r"^study-[0-9a-f]{16,64}$", description="De-identified study key returned by load_study.")]


class ModelRef(BaseModel):
    """The model card behind a result."""

    id: str
    version: str
    weights_sha256: str


class Provenance(BaseModel):
    """Where a result came from: enough to reproduce and to audit it."""

    tool: str
    tool_version: str
    result_id: str = Field(description="Content hash of this output (without provenance timing).")
    models: list[ModelRef] = Field(default_factory=list)
    input_hashes: dict[str, str] = Field(default_factory=dict, description="SHA-256 of every input artefact and of the arguments.")
    parameters: dict = Field(default_factory=dict)
    seed: int | None = None
    duration_s: float = 0.0


class ToolOutput(BaseModel):
    """Base of every tool output. The registry fills ``provenance``; a tool never sets it."""

    model_config = ConfigDict(extra="forbid")
    provenance: Provenance | None = None


class ReferenceRange(BaseModel):
    lower: float
    upper: float
    population: str = Field(description="Who the range applies to, e.g. 'adult men, SSFP'.")
    source: str = Field(description="Citation of the published range.")
    inclusive: bool = Field(False, description=(
        "False: lower-upper is a published normal interval, its limits still normal (low below lower, high above upper). "
        "True: lower and upper are published diagnostic cut-offs that count as abnormal themselves "
        "(low at or below lower, high at or above upper)."))


class Interval(BaseModel):
    lower: float
    upper: float
    level: float = Field(0.95, description="Coverage of the interval, e.g. 0.95.")
    method: str = Field(description="How it was obtained, e.g. 'test-time augmentation spread'.")


Flag = Literal["normal", "low", "high", "not-assessed"]


class Estimate(BaseModel):
    """A number with its unit, uncertainty and published reference range."""

    value: float
    unit: str
    interval: Interval | None = None
    reference: ReferenceRange | None = None
    flag: Flag = "not-assessed"

    @classmethod
    def of(cls, value: float, unit: str, reference: ReferenceRange | None = None,
           interval: Interval | None = None, ndigits: int = 1) -> Estimate:
        """The value rounded to ``ndigits``, flagged against ``reference`` as shown.

        The flag judges the value the reader sees, so the two never disagree: 14.96 mm shows as 15.0
        and has reached a 15 mm cut-off; an LVEF of 56.96 % shows as 57.0 and is inside 57-77 %.
        """
        shown = round(float(value), ndigits)
        flag: Flag = "not-assessed"
        if reference is not None:
            if reference.inclusive:
                low, high = shown <= reference.lower, shown >= reference.upper
            else:
                low, high = shown < reference.lower, shown > reference.upper
            flag = "low" if low else "high" if high else "normal"
        return cls(value=shown, unit=unit, interval=interval, reference=reference, flag=flag)


class QcCheck(BaseModel):
    """One quality-control check a reviewer sees at the QC checkpoint."""

    check: str
    passed: bool
    detail: str
