"""Where the vector stores live: on disk by default, a shared chromadb server when configured.

One process, one machine: ``chromadb.PersistentClient`` in the data directory. Several processes
or machines (a cohort store shared by batch workers, a knowledge base served to many reviewers):
set ``CARDIOMICS_CHROMA_URL`` (``http://host:8000``, e.g. a ``chroma run --path DIR --port 8000``
server) and every store opens an ``HttpClient`` to it instead. Collections, embedding functions
and queries are the same either way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from cardiomics.errors import InputError

log = structlog.get_logger(__name__)

CHROMA_ENV = "CARDIOMICS_CHROMA_URL"


def chroma_url() -> str | None:
    """The configured chromadb server URL, or None for on-disk stores."""
    url = os.environ.get(CHROMA_ENV, "").strip()
    return url or None


def chroma_client(path: str | Path, url: str | None = None) -> Any:
    """A chromadb client: ``HttpClient`` to ``url`` / ``$CARDIOMICS_CHROMA_URL`` if set, else ``PersistentClient(path)``.

    ``path`` is used only on disk; with a server, the server's ``--path`` holds the data.
    """
    import chromadb  # lazy: heavy import
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    url = url or chroma_url()
    if not url:
        return chromadb.PersistentClient(path=str(path), settings=settings)
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError("bad-chroma-url", f"{CHROMA_ENV}={url!r} is not an http(s)://host:port URL",
                         hint="e.g. http://127.0.0.1:8000 for `chroma run --path DIR --port 8000`")
    ssl = parts.scheme == "https"
    port = parts.port or (443 if ssl else 8000)
    try:
        client = chromadb.HttpClient(host=parts.hostname, port=port, ssl=ssl, settings=settings)
        client.heartbeat()
    except Exception as exc:  # noqa: BLE001 - connection errors come in several types
        raise InputError("chroma-unreachable", f"cannot reach the chromadb server at {parts.scheme}://{parts.hostname}:{port}: "
                         f"{type(exc).__name__}: {str(exc)[:200]}",
                         hint=f"start it with `chroma run --path DIR --port {port}`, or unset {CHROMA_ENV} to use on-disk stores") from None
    log.info("vector store", backend="chroma-server", host=parts.hostname, port=port)
    return client
