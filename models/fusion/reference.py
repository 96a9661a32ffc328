"""The shipped reference: a synthetic cohort regenerated from its seed, plus the trained MVAE.

Why regenerate instead of shipping data: the cohort is a pure function of ``REFERENCE`` (seed,
size), so only the small weights file is committed; the cohort, its split, its embeddings and the
conformal calibration are rebuilt deterministically on first use and cached per process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cardiomics.errors import ModelError
from cardiomics.models.card import ModelCard, load_card, verify_card
from cardiomics.synthetic.cohort import Cohort, CohortSpec, simulate_cohort

from .conformal import ConformalPredictor
from .features import FusionData, Preprocessor
from .mvae import MVAE

MODEL_DIR = Path(__file__).resolve().parent
WEIGHTS_PATH = MODEL_DIR / "weights.pt"
CARD_PATH = MODEL_DIR / "card.json"
REFERENCE = CohortSpec(n_patients=5000, seed=7, world_seed=0)
HELD_OUT = CohortSpec(n_patients=1000, seed=8, world_seed=0)
SPLIT_SEED = 0
TRAIN_FRACTION = 0.8


def split(n: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, calibration) row indices of the reference cohort."""
    perm = np.random.default_rng(seed).permutation(n)
    k = int(TRAIN_FRACTION * n)
    return np.sort(perm[:k]), np.sort(perm[k:])


def fit_preprocessor(cohort: Cohort, rows: np.ndarray) -> Preprocessor:
    ids = [cohort.patients.index[i] for i in rows]
    img = cohort.imaging.loc[ids].dropna(how="all")
    counts = cohort.counts.loc[[i for i in ids if i in cohort.counts.index]]
    return Preprocessor.fit(img, counts, cohort.gene_sets, cohort.spec.n_sites)


def save_weights(model: MVAE, pre: Preprocessor, path: Path, extra: dict) -> None:
    pre_state = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in pre.state().items()}
    blob = {"model": model.state(), "preprocessor": pre_state, "reference": REFERENCE.model_dump(), **extra}
    torch.save(blob, path)


def load_weights(path: Path) -> tuple[MVAE, Preprocessor, dict]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    pre = Preprocessor.from_state({k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in blob["preprocessor"].items()})
    return MVAE.from_state(blob["model"]), pre, blob


@dataclass
class Reference:
    model: MVAE
    pre: Preprocessor
    card: ModelCard
    cohort: Cohort
    data: FusionData
    embedding: np.ndarray  # (n, d) posterior means, all available modalities
    embedding_sd: np.ndarray
    conformal: ConformalPredictor

    @property
    def ref(self) -> dict[str, str]:
        return self.card.ref


@functools.lru_cache(maxsize=1)
def load_reference(model_dir: str | None = None) -> Reference:
    """Verify the card, load the weights, regenerate the reference cohort and embed it (cached)."""
    folder = Path(model_dir) if model_dir else MODEL_DIR
    if not (folder / "card.json").is_file():
        raise ModelError("card_missing", f"No fusion model card in {folder}.",
                         hint="Train it: python -m cardiomics.models.fusion.train")
    verify_card(folder)
    card = load_card(folder)
    model, pre, blob = load_weights(folder / card.weights_file)
    spec = CohortSpec.model_validate(blob["reference"])
    cohort = simulate_cohort(spec)
    data = pre.transform_cohort(cohort)
    _, cal = split(len(data))
    enc = model.encode(data)
    return Reference(model, pre, card, cohort, data, enc.mean, enc.sd, ConformalPredictor(model, data.subset(cal), len(pre.programmes)))
