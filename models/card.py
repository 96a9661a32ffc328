"""Model cards: what a shipped model is, what it was trained on, how well it does, and its terms.

Generic across the project's models (segmenter now, fusion models later). A card lives next to its
weights as ``card.json``; ``verify_card`` checks the weights' SHA-256 against the card before use.

Metrics are a flat list of ``MetricRecord`` rows (name, value, unit, and optional structure / phase /
group / statistic), so any model can publish any metric and tools can look them up with
``ModelCard.metric(...)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cardiomics.errors import ModelError
from cardiomics.hashing import sha256_file

ACDC_CITATION = (
    "O. Bernard, A. Lalande, C. Zotti, F. Cervenansky, et al. Deep Learning Techniques for Automatic MRI "
    "Cardiac Multi-Structures Segmentation and Diagnosis: Is the Problem Solved? IEEE Transactions on "
    "Medical Imaging 37(11):2514-2525, 2018. doi:10.1109/TMI.2018.2837502"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class InputSpec(_Strict):
    modality: str = Field(description="e.g. 'cine bSSFP short-axis MRI'")
    array: str = Field(
        description="Shape and dtype the API takes, e.g. '(N, R, C) float, any range'"
    )
    spacing: str = Field(
        description="Spacing the caller must give and what the model does with it"
    )
    preprocessing: list[str] = Field(
        description="Steps applied inside the model, in order"
    )
    postprocessing: list[str] = Field(default_factory=list)


class Split(_Strict):
    method: str
    seed: int
    train: list[str]
    validation: list[str]
    test: list[str] = Field(default_factory=list)


class DataSource(_Strict):
    name: str
    description: str
    n_cases: int
    licence: str = ""
    citation: str = ""


class TrainingData(_Strict):
    sources: list[DataSource]
    split: Split
    seed: int
    notes: list[str] = Field(default_factory=list)


class Training(_Strict):
    command: str = Field(
        description="The call that reproduces the weights from the data and seed"
    )
    epochs: float
    iterations: int
    batch_size: int
    optimiser: str
    loss: str
    augmentation: list[str]
    wall_time_s: float
    hardware: str
    torch_version: str


class MetricRecord(_Strict):
    name: str = Field(description="e.g. 'dice', 'hd95', 'lvef_mae'")
    value: float | None = Field(
        description="None where undefined (e.g. HD95 with an empty mask)"
    )
    unit: str = ""
    structure: str | None = None
    phase: str | None = None
    group: str | None = Field(
        default=None, description="Subgroup (e.g. diagnostic group); None = all"
    )
    statistic: str = Field(
        default="mean", description="mean, sd, median, mae, bias, ..."
    )
    n: int | None = None


class Target(_Strict):
    name: str
    description: str
    threshold: float
    comparison: Literal[">=", "<="]
    achieved: float | None
    met: bool


class Metrics(_Strict):
    dataset: str
    split: str
    n_cases: int
    records: list[MetricRecord]
    targets: list[Target] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class Licence(_Strict):
    code: str
    weights: str
    citations: list[str]


class ModelCard(_Strict):
    id: str
    version: str
    task: str
    weights_file: str
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    weights_bytes: int | None = None
    architecture: str
    architecture_config: dict[str, Any] = Field(default_factory=dict)
    parameters: int = Field(gt=0)
    labels: dict[str, str] = Field(description="label value (as string) -> name")
    input: InputSpec
    training_data: TrainingData
    training: Training | None = None
    intended_use: str
    out_of_scope: list[str]
    metrics: list[Metrics]
    known_failure_modes: list[str]
    inference: dict[str, Any] = Field(
        default_factory=dict, description="Measured speed, batch behaviour"
    )
    licence: Licence
    created: str = ""

    @property
    def ref(self) -> dict[str, str]:
        return {
            "id": self.id,
            "version": self.version,
            "weights_sha256": self.weights_sha256,
        }

    def metric(
        self,
        name: str,
        *,
        structure: str | None = None,
        phase: str | None = None,
        group: str | None = None,
        statistic: str = "mean",
        dataset: str | None = None,
    ) -> float | None:
        """Look up one metric value; raises ModelError when the card has no such record."""
        for block in self.metrics:
            if dataset and block.dataset != dataset:
                continue
            for r in block.records:
                if (r.name, r.structure, r.phase, r.group, r.statistic) == (
                    name,
                    structure,
                    phase,
                    group,
                    statistic,
                ):
                    return r.value
        raise ModelError(
            "metric_missing",
            f"Model card {self.id} has no metric {name!r} "
            f"(structure={structure}, phase={phase}, group={group}, statistic={statistic}).",
        )


def load_card(path: str | Path) -> ModelCard:
    """Read and validate a card.json (a file, or a folder holding card.json)."""
    p = Path(path)
    if p.is_dir():
        p = p / "card.json"
    if not p.is_file():
        raise ModelError(
            "card_missing",
            f"No model card at {p}.",
            hint="Reinstall the package or retrain the model.",
        )
    try:
        return ModelCard.model_validate(json.loads(p.read_text(encoding="utf-8")))
    except (ValidationError, json.JSONDecodeError) as exc:
        raise ModelError(
            "card_invalid", f"Model card {p} does not validate: {exc}"
        ) from exc


def write_card(card: ModelCard, path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "card.json"
    p.write_text(
        json.dumps(card.model_dump(mode="json"), indent=2, sort_keys=False) + "\n",
        encoding="utf-8",
    )
    return p


def verify_card(card_dir: str | Path) -> None:
    """Raise ModelError unless card.json validates and the weights file matches its SHA-256."""
    card_dir = Path(card_dir)
    card = load_card(card_dir)
    weights = card_dir / card.weights_file
    if not weights.is_file():
        raise ModelError(
            "weights_missing",
            f"Weights {weights} named by the card of {card.id} are missing.",
        )
    digest = sha256_file(weights)
    if digest != card.weights_sha256:
        raise ModelError(
            "weights_mismatch",
            f"Weights {weights.name} of {card.id} {card.version} do not match the card "
            f"(sha256 {digest[:12]}... != {card.weights_sha256[:12]}...).",
            hint="The weights or the card were changed separately: retrain or restore both.",
        )
