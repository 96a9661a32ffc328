"""Tool ``association_plots``: volcano and forest plots of a stored association scan."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cardiomics.hashing import sha256_bytes

from .._registry import ToolContext, tool
from ..contract import ResultId, ToolOutput


class AssociationPlotsInput(BaseModel):
    results_id: ResultId = Field(description="The results_id returned by association_scan.")
    top_n: int = Field(20, ge=1, le=100, description="Associations shown in the forest plot (smallest p first).")


class Figure(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="Artefact id of the PNG, e.g. 'fig-3fa2…'.")
    path: str = Field(description="Where the PNG lies in the artefact store.")
    kind: str


class AssociationPlots(ToolOutput):
    volcano: Figure
    forest: Figure


def _example(ctx: ToolContext) -> dict:
    from cardiomics.synthetic.assoc_sim import simulate_association_cohort

    from ._table import store_table
    from .association import AssociationScanInput, association_scan

    c = simulate_association_cohort(n=80, n_programmes=3, seed=2)
    out = association_scan(AssociationScanInput(table_id=store_table(ctx.store, c.columns), phenotypes=["lvef_pct"],
                                                 programmes=["prog_*"], covariates=["age", "sex"], control_rounds=1), ctx)
    return {"results_id": out.results_id, "top_n": 5}


@tool(role="analysis", version="1.0.0", example=_example)
def association_plots(inp: AssociationPlotsInput, ctx: ToolContext) -> AssociationPlots:
    """Volcano and forest plots (PNG) of an association scan, for the report.

    Use after ``association_scan`` with its ``results_id``. The volcano plot shows standardised
    beta against -log10 p (the p-value used for FDR), BH-significant tests in red; the forest plot
    shows the ``top_n`` smallest-p associations with 95 % CIs. Returns artefact ids and paths.
    """
    a = ctx.store.arrays(inp.results_id)
    meta = ctx.store.meta(inp.results_id)
    ctx.used_input("association", ctx.store.digest(inp.results_id))
    labels = list(meta["labels"])
    sig = a["significant"].astype(bool)
    figs = {}
    from ._plots import forest, volcano  # lazy: matplotlib costs ~1 s of import for every process otherwise

    for kind, data in (("volcano", volcano(a["beta"], a["p_fdr"], sig, labels, meta["fdr_q"])),
                       ("forest", forest(a["beta"], a["lower"], a["upper"], a["p_fdr"], labels, inp.top_n))):
        key = sha256_bytes(data)[:24]
        path = ctx.store.put_bytes("fig", data, ".png", key)
        figs[kind] = Figure(id=f"fig-{key}", path=str(path), kind=kind)
    return AssociationPlots(**figs)
