"""``score_programmes``: cardiac programme and cell-type marker scores with a matched null."""

from __future__ import annotations

from typing import Literal

import numpy as np
import structlog
from pydantic import BaseModel, Field, field_validator

from cardiomics.errors import InputError

from .._registry import ToolContext, tool
from ..contract import Estimate, Interval, ToolOutput
from . import _examples, _handle, _ulm
from ._genesets import celltype_markers, programme_sets
from ._text import quote

log = structlog.get_logger(__name__)
METHOD = ("decoupler ULM t-value (Badia-i-Mompel et al. 2022) on log-normalised expression; "
          "null: random gene sets matched in size, weights and expression bin (scanpy score_genes bins)")


class ScoreProgrammesInput(BaseModel):
    omics_id: str = Field(description="Dataset id from load_omics or omics_qc.")
    collection: Literal["programmes", "celltype_markers", "all"] = Field(
        "programmes", description="Shipped gene sets to score: cardiac programmes, cell-type markers, or both.")
    names: list[str] | None = Field(None, description="Score only these sets of the collection (default: all).")
    custom_sets: dict[str, list[str]] | None = Field(
        None, description="Extra gene sets {name: [gene symbols]} scored the same way (unit weights).")
    n_null: int = Field(200, ge=0, le=2000, description="Random matched gene sets per score for the empirical null (0: no null).")
    n_bins: int = Field(25, ge=2, le=100, description="Expression bins for matching null genes.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Level for calling an observation's programme active.")
    min_genes: int = Field(3, ge=2, description="Sets with fewer genes present in the data are not scored.")

    @field_validator("custom_sets")
    @classmethod
    def _small(cls, v):
        if v is not None and (len(v) > 50 or any(len(g) > 2000 for g in v.values())):
            raise ValueError("at most 50 custom sets of at most 2000 genes each")
        return v


class ObsScore(BaseModel):
    index: int = Field(description="Row position of the observation in the dataset.")
    score: float
    z: float
    p_empirical: float


class ProgrammeScore(BaseModel):
    name: str
    collection: Literal["programmes", "celltype_markers", "custom"]
    citation: str
    n_genes: int = Field(description="Genes in the shipped set.")
    n_genes_found: int = Field(description="Genes of the set present in the data.")
    scored: bool
    mean_score: Estimate | None = Field(None, description="Mean ULM t over observations, 95% CI (normal approximation).")
    z: float | None = Field(None, description="Mean observed score vs the random sets' mean scores, in null SDs.")
    p_empirical: float | None = Field(None, description="One-sided empirical p of the mean score against the matched null.")
    fraction_active: float | None = Field(None, description="Fraction of observations with per-observation empirical p < alpha.")
    p_fraction_active: float | None = Field(None, description="One-sided binomial p of that fraction against alpha "
                                            "(assumes independent observations; spatial neighbours are not).")
    per_obs: list[ObsScore] | None = Field(None, description="Per-observation results (only when there are <= 200 observations).")


class ProgrammeScores(ToolOutput):
    scores_id: str = Field(description="Stored per-observation arrays: score, z, p (obs x sets).")
    kind: str
    n_obs: int
    n_null: int
    alpha: float
    method: str
    normalisation: str
    programmes: list[ProgrammeScore]


def _example(ctx: ToolContext) -> dict:
    return {"omics_id": _examples.loaded_id(ctx, _examples.example_bulk(ctx.store.root)), "n_null": 50}


def _collect(inp: ScoreProgrammesInput):
    chosen: dict[str, tuple[str, object]] = {}
    if inp.collection in ("programmes", "all"):
        chosen.update({k: ("programmes", v) for k, v in programme_sets().items()})
    if inp.collection in ("celltype_markers", "all"):
        chosen.update({k: ("celltype_markers", v) for k, v in celltype_markers().items()})
    if inp.names is not None:
        unknown = [n for n in inp.names if n not in chosen]
        if unknown:
            raise InputError("unknown-gene-set", f"no gene set {quote(unknown[0])!r} in collection {inp.collection!r}",
                             hint=f"available: {', '.join(sorted(chosen))}")
        chosen = {k: chosen[k] for k in inp.names}
    return chosen


def score_dataset(ds: _handle.Dataset, sets: dict[str, tuple[list[str], list[float]]], n_null: int,
                  n_bins: int, seed: int) -> _ulm.ScoreResult:
    """Score named (genes, weights) sets on a dataset in row chunks (two passes when n_null > 0)."""
    genes = ds.genes()
    n_obs = ds.meta["n_obs"]
    means = None
    if n_null > 0:
        means, _ = _ulm.gene_means_of(ds.iter_lognorm(), len(genes))
    return _ulm.score_sets(ds.iter_lognorm(), n_obs, genes, sets, means, n_null, n_bins, seed)


@tool(role="analysis", example=_example)
def score_programmes(inp: ScoreProgrammesInput, ctx: ToolContext) -> ProgrammeScores:
    """Score cardiac gene programmes (or cell-type markers) per sample, cell or spot, with significance.

    Use after load_omics (or omics_qc). Shipped programmes, each with its citation: fibrosis_ecm,
    inflammation, hypertrophy_fetal, cardiomyocyte_stress, angiogenesis, oxidative_phosphorylation,
    heart_failure_reheat (ReHeaT consensus, signed); cell-type markers: cardiomyocyte, fibroblast,
    endothelial, smooth_muscle, pericyte, myeloid, lymphoid. Score = decoupler ULM t-value on
    log-normalised expression. Each score is tested against random gene sets matched in size and
    expression bin (seeded): per observation an empirical p and z, and for the dataset the mean
    score's empirical p and z. Per-observation arrays are stored (scores_id).
    """
    ds = _handle.resolve(ctx.store, inp.omics_id)
    _handle.used(ctx, ds)
    chosen = _collect(inp)
    sets = {k: (list(v.genes), list(v.weights)) for k, (_c, v) in chosen.items()}
    for name, genes in (inp.custom_sets or {}).items():
        key = quote(name, 64)
        sets[key] = ([str(g) for g in genes], [1.0] * len(genes))
        chosen[key] = ("custom", None)
    if not sets:
        raise InputError("no-gene-sets", "no gene set selected", hint="choose a collection or pass custom_sets")
    genes = set(ds.genes())
    found = {k: sum(g in genes for g in gs) for k, (gs, _w) in sets.items()}
    scorable = {k: v for k, v in sets.items() if found[k] >= inp.min_genes}
    res = score_dataset(ds, scorable, inp.n_null, inp.n_bins, ctx.seed) if scorable else None
    n_obs = ds.meta["n_obs"]
    results = []
    for name, (gs, _w) in sets.items():
        coll, gset = chosen[name]
        entry = dict(name=name, collection=coll, citation=gset.citation if gset else "user-supplied set",
                     n_genes=len(gs), n_genes_found=found[name], scored=name in scorable)
        if name in scorable:
            j = res.names.index(name)
            s = res.score[:, j].astype(np.float64)
            mean, se = float(s.mean()), float(s.std(ddof=1) / np.sqrt(n_obs)) if n_obs > 1 else 0.0
            entry["mean_score"] = Estimate.of(mean, "ULM t-value", ndigits=4, interval=Interval(
                lower=round(mean - 1.96 * se, 4), upper=round(mean + 1.96 * se, 4),
                method="normal approximation over observations"))
            if inp.n_null > 0:
                null = res.agg_null_means[j]
                sd = float(null.std(ddof=1))
                entry["z"] = round((mean - float(null.mean())) / sd, 4) if sd > 0 else 0.0
                entry["p_empirical"] = round((1 + int((null >= mean).sum())) / (inp.n_null + 1), 6)
                n_active = int((res.p[:, j] < inp.alpha).sum())
                entry["fraction_active"] = round(n_active / n_obs, 6)
                from scipy.stats import binomtest  # lazy: scipy.stats costs ~0.5 s of import

                entry["p_fraction_active"] = float(f"{binomtest(n_active, n_obs, inp.alpha, alternative='greater').pvalue:.4g}")
                if n_obs <= 200:
                    entry["per_obs"] = [ObsScore(index=i, score=round(float(s[i]), 4), z=round(float(res.z[i, j]), 4),
                                                 p_empirical=round(float(res.p[i, j]), 6)) for i in range(n_obs)]
        results.append(ProgrammeScore(**entry))
    names = res.names if res else []
    arrays = {"score": res.score, "z": res.z, "p": res.p} if res else {"score": np.zeros((n_obs, 0), np.float32)}
    scores_id = ctx.store.put("omsc", arrays, {"omics_id": inp.omics_id, "sets": names, "n_null": inp.n_null,
                                               "seed": ctx.seed, "method": METHOD})
    log.info("omics.scored", n_sets=len(names), n_obs=n_obs)
    norm = ("as stored by omics_qc" if ds.processed else
            f"normalize_total(target_sum={_handle.TARGET_SUM[ds.kind]:g}) + log1p on the fly" if ds.meta["counts_elem"]
            else "values used as given (log scale)" if ds.meta["log_input"] else "log1p of the values given")
    return ProgrammeScores(scores_id=scores_id, kind=ds.kind, n_obs=n_obs, n_null=inp.n_null, alpha=inp.alpha,
                           method=METHOD, normalisation=norm, programmes=results)
