"""The review web app: runs, QC overlays, reports with provenance, decisions, versions and exports."""

from .app import create_app

__all__ = ["create_app"]
