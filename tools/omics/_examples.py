"""Small simulated inputs for the tool examples (conformance suite) and the demo."""

from __future__ import annotations

from pathlib import Path

from cardiomics.synthetic import omics_sim

from ._genesets import celltype_markers, programme_sets


def markers() -> dict[str, list[str]]:
    return {k: list(v.genes) for k, v in celltype_markers().items()}


def example_spatial(root: Path, seed: int = 0) -> Path:
    path = Path(root) / "examples" / f"omics_spatial_{seed}.h5ad"
    if not path.exists():
        genes = list(programme_sets()["fibrosis_ecm"].genes)
        adata = omics_sim.simulate_spatial(n_side=12, seed=seed, markers=markers(), n_genes=400,
                                           programme_genes=genes, programme_fraction=0.25)
        omics_sim.write(adata, path)
    return path


def example_bulk(root: Path, seed: int = 0) -> Path:
    path = Path(root) / "examples" / f"omics_bulk_{seed}.h5ad"
    if not path.exists():
        genes = list(programme_sets()["fibrosis_ecm"].genes)
        adata = omics_sim.simulate_bulk(n_samples=12, seed=seed, markers=markers(), n_genes=400,
                                        programme_genes=genes)
        omics_sim.write(adata, path)
    return path


def loaded_id(ctx, path: Path) -> str:
    """Validate ``path`` through load_omics (for examples of tools that take an omics_id)."""
    from .load import LoadOmicsInput, load_omics

    return load_omics(LoadOmicsInput(path=str(path)), ctx).omics_id
