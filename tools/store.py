"""Content-addressed store of derived artefacts (image stacks, label maps, figures).

Tools exchange ids, not arrays: an MCP client passes ``seg-…`` ids back and forth, and the
arrays stay on this machine. An id is the hash of the content, so the same result gets the same id.
"""

from __future__ import annotations

import io
import json
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from cardiomics.atomicfile import write_atomic
from cardiomics.errors import NotFoundError
from cardiomics.hashing import canonical_json, sha256_array, sha256_text


def write_secret(path: Path, nbytes: int = 32) -> None:
    """Create ``path`` (0600) holding ``nbytes`` random bytes, whole or not at all.

    Never overwritten: of two first writers exactly one wins and the other reads the winner's file.
    """
    try:
        write_atomic(path, secrets.token_bytes(nbytes), mode=0o600, replace=False)
    except FileExistsError:
        pass


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, artefact_id: str, suffix: str) -> Path:
        kind, _, digest = artefact_id.partition("-")
        if not kind.isalpha() or not digest or not all(c in "0123456789abcdef" for c in digest):
            raise NotFoundError("bad-id", f"{artefact_id!r} is not an artefact id", hint="ids look like 'seg-3fa2…'")
        return self.root / kind / f"{digest}{suffix}"

    def put(self, kind: str, arrays: dict[str, np.ndarray], meta: dict[str, Any], key: str | None = None) -> str:
        """Store arrays + JSON metadata; returns ``kind-<hash>``. ``key`` overrides the content hash."""
        if key is None:
            parts = [f"{k}:{sha256_array(v)}" for k, v in sorted(arrays.items())]
            key = sha256_text(canonical_json(meta) + "|".join(parts))[:24]
        artefact_id = f"{kind}-{key}"
        npz = self._path(artefact_id, ".npz")
        if not npz.exists():
            buf = io.BytesIO()
            np.savez(buf, **arrays)  # uncompressed: image stacks are read often and compress poorly
            write_atomic(self._path(artefact_id, ".json"), canonical_json(meta).encode())
            write_atomic(npz, buf.getvalue())
        return artefact_id

    def put_bytes(self, kind: str, data: bytes, suffix: str, key: str) -> Path:
        path = self._path(f"{kind}-{key}", suffix)
        if not path.exists():
            write_atomic(path, data)
        return path

    def get_bytes(self, artefact_id: str, suffix: str) -> bytes:
        path = self._path(artefact_id, suffix)
        if not path.exists():
            raise NotFoundError("unknown-artefact", f"no stored file {artefact_id}{suffix}",
                                hint="ids come from an earlier tool call in the same data directory (CARDIOMICS_HOME)")
        return path.read_bytes()

    def exists(self, artefact_id: str) -> bool:
        return self._path(artefact_id, ".npz").exists()

    def meta(self, artefact_id: str) -> dict[str, Any]:
        path = self._path(artefact_id, ".json")
        if not path.exists():
            raise NotFoundError("unknown-artefact", f"no stored result {artefact_id!r}",
                                hint="ids come from an earlier tool call in the same data directory (CARDIOMICS_HOME)")
        return json.loads(path.read_text())

    def arrays(self, artefact_id: str) -> dict[str, np.ndarray]:
        self.meta(artefact_id)  # raises a clear error when absent
        with np.load(self._path(artefact_id, ".npz")) as data:
            return {k: data[k] for k in data.files}

    @property
    def salt(self) -> bytes:
        """Secret per-deployment salt for study keys; created once beside the artefacts, never logged."""
        path = self.root / ".salt"
        if not path.exists():
            write_secret(path)
        return path.read_bytes()

    def digest(self, artefact_id: str) -> str:
        """The content hash part of an id (what provenance records)."""
        return artefact_id.partition("-")[2]
