"""Nearest reference patients in the shared latent space, held in an on-disk chromadb collection.

Location: ``$CARDIOMICS_COHORT_DIR`` if set, else ``Settings.from_env().home / "cohort"``;
``CohortIndex(path=...)`` overrides both. Embeddings are given explicitly (no embedding function
is ever called, so nothing is downloaded); the collection is named after the weights' SHA-256, so
new weights get a fresh collection and stale ones are deleted. Distances are Euclidean in the
latent space (chromadb's ``l2`` space returns squared distances; they are square-rooted here).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from cardiomics.config import Settings

from .features import IMAGING_FEATURES

log = structlog.get_logger("cardiomics.models.fusion")
_PREFIX = "cardiomics-cohort-"
_LOCK = threading.Lock()
PHENOTYPES = ("lv_edv_ml", "lv_ef_pct", "lv_mass_g", "rv_edv_ml", "rv_ef_pct", "wall_max_mm", "lge_burden_pct",
              "native_t1_ms", "t2_ms", "ecv_pct", "age_years", "sex_male")


def default_cohort_dir() -> Path:
    env = os.environ.get("CARDIOMICS_COHORT_DIR")
    return Path(env).expanduser().resolve() if env else Settings.from_env().home / "cohort"


@dataclass
class Neighbour:
    patient_id: str
    distance: float
    site: int
    modalities: list[str]
    phenotypes: dict[str, float]
    programme_scores: dict[str, float]  # measured (standardised) where the patient has omics


class CohortIndex:
    """Reference-cohort embeddings + metadata; built on first use from the shipped reference."""

    def __init__(self, reference, path: str | Path | None = None) -> None:
        import chromadb  # lazy: heavy import
        from chromadb.config import Settings as ChromaSettings

        self.ref = reference
        self.path = Path(path) if path is not None else default_cohort_dir()
        self.path.mkdir(parents=True, exist_ok=True)
        name = _PREFIX + reference.card.weights_sha256[:24]
        with _LOCK:
            self.client = chromadb.PersistentClient(path=str(self.path), settings=ChromaSettings(anonymized_telemetry=False))
            for col in self.client.list_collections():
                cname = col if isinstance(col, str) else col.name
                if cname.startswith(_PREFIX) and cname != name:
                    self.client.delete_collection(cname)
            self.collection = self.client.get_or_create_collection(
                name, embedding_function=None, configuration={"hnsw": {"space": "l2"}},
                metadata={"weights_sha256": reference.card.weights_sha256})
            self.built_now = False
            if self.collection.count() != len(reference.data):
                self._build()

    def _metadata(self, i: int) -> dict:
        ref = self.ref
        pid = ref.data.ids[i]
        meta: dict = {"site": int(ref.data.site[i]), "has_imaging": bool(ref.data.has_imaging[i]),
                      "has_omics": bool(ref.data.has_omics[i])}
        row = ref.cohort.imaging.loc[pid]
        for k in PHENOTYPES:
            if not np.isnan(row[k]):
                meta[k] = round(float(row[k]), 2)
        if meta["has_omics"]:
            for j, p in enumerate(ref.pre.programmes):
                meta[f"score_{p}"] = round(float(ref.data.omics[i, j]), 3)
        return meta

    def _build(self) -> None:
        started = time.perf_counter()
        existing = self.collection.get(include=[])["ids"]
        if existing:
            self.collection.delete(ids=existing)
        n, step = len(self.ref.data), 1000
        for b in range(0, n, step):
            rows = range(b, min(n, b + step))
            self.collection.add(ids=[self.ref.data.ids[i] for i in rows],
                                embeddings=[self.ref.embedding[i].tolist() for i in rows],
                                metadatas=[self._metadata(i) for i in rows])
        self.built_now = True
        log.info("cohort_index_built", n=n, seconds=round(time.perf_counter() - started, 2))

    def query(self, embedding: np.ndarray, k: int = 5) -> list[Neighbour]:
        res = self.collection.query(query_embeddings=[np.asarray(embedding, float).tolist()], n_results=k,
                                    include=["distances", "metadatas"])
        out = []
        for pid, d, meta in zip(res["ids"][0], res["distances"][0], res["metadatas"][0]):
            mods = [m for m in ("imaging", "omics") if meta.get(f"has_{m}")]
            out.append(Neighbour(pid, float(np.sqrt(max(d, 0.0))), int(meta["site"]), mods,
                                 {k: float(meta[k]) for k in PHENOTYPES if k in meta},
                                 {k[6:]: float(v) for k, v in meta.items() if k.startswith("score_")}))
        return out


_OPEN: dict[str, CohortIndex] = {}


def cohort_index(reference, path: str | Path | None = None) -> CohortIndex:
    """One open index per folder and process (chromadb clients are not cheap)."""
    key = str(Path(path).resolve() if path is not None else default_cohort_dir())
    if key not in _OPEN:
        _OPEN[key] = CohortIndex(reference, key)
    return _OPEN[key]


assert set(PHENOTYPES) <= set(IMAGING_FEATURES)
