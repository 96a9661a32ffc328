"""Tool ``association_scan``: imaging phenotypes vs molecular programmes across a cohort."""

from __future__ import annotations

from typing import Literal

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cardiomics.errors import InputError

from .._registry import ToolContext, tool
from ..contract import Estimate, Interval, ResultId, ToolOutput
from ._controls import permuted_labels, shuffled_locations
from ._linear import covariate_design, zscore
from ._scan import scan
from ._table import TableInput, expand_names, load_table, numeric
from ._text import quote_name
from ._transform import SHAPIRO_P, SKEW_LIMIT, normality_rule, rank_inverse_normal

log = structlog.get_logger(__name__)

CHI2_1_MEDIAN = 0.454936423119572  # scipy.stats.chi2.ppf(0.5, 1); a literal so importing the tool needs no scipy.stats
PERMUTATION_SCHEME = (
    "Freedman-Lane: residuals of the covariate-only model are permuted (within exchangeability blocks "
    "when given) and added back to its fitted values; the t statistic of the programme is recomputed. "
    "It keeps the covariate-phenotype relation, so confounded programmes do not gain false significance "
    "(Freedman & Lane 1983; Winkler et al. 2014). p = (1 + #|t*| >= |t|) / (B + 1); the same "
    "permutations serve every test."
)


class AssociationScanInput(TableInput):
    phenotypes: list[str] = Field(min_length=1, description="Imaging phenotype columns (outcomes), e.g. ['lvef_pct', 'lv_mass_g', 'lge_burden_pct']; "
                                                            "shell wildcards allowed ('emb_*', 'thickness_seg*').")
    programmes: list[str] = Field(min_length=1, description="Molecular programme / module-score / gene columns (predictors), wildcards allowed.")
    covariates: list[str] = Field(default_factory=list, description="Adjustment columns, e.g. ['age', 'sex', 'bsa_m2', 'site']. "
                                                                    "Text columns are categorical (dummy-coded).")
    categorical: list[str] = Field(default_factory=list, description="Numeric covariates to treat as categorical anyway (e.g. a site coded 1/2/3).")
    transform: Literal["auto", "rank_int", "none"] = Field("auto", description="'auto': rank inverse-normal transform of a variable when "
                                                                               "Shapiro-Wilk p < 0.05 and |skewness| > 1; 'rank_int': always; 'none': never.")
    n_permutations: int = Field(1000, ge=1000, le=100_000, description="Freedman-Lane permutations per test (seeded by the context seed). "
                                                                       "The smallest attainable p is 1/(B+1).")
    permute_within: str | None = Field(None, description="Column whose levels are exchangeability blocks (e.g. 'site'): permutations stay within each block.")
    p_value_for_fdr: Literal["permutation", "asymptotic"] = Field("permutation", description="Which p-value enters Benjamini-Hochberg.")
    fdr_q: float = Field(0.05, gt=0, lt=1, description="Benjamini-Hochberg FDR level.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Nominal level for negative controls and assumption checks.")
    coordinates: list[str] | None = Field(None, min_length=2, max_length=2, description="Two columns with spot/region coordinates (e.g. ['x_um', 'y_um']): "
                                                                                        "enables the shuffled-location spatial control.")
    control_rounds: int = Field(20, ge=1, le=200, description="Label-permutation rounds of the negative control.")
    max_tests: int = Field(20_000, ge=1, le=200_000, description="Refuse scans larger than this (phenotypes x programmes).")

    @field_validator("fdr_q", "alpha")
    @classmethod
    def _level(cls, v: float) -> float:
        if v > 0.5:
            raise ValueError("levels above 0.5 are not meaningful")
        return v


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransformRecord(_Part):
    variable: str
    role: Literal["phenotype", "programme"]
    n: int
    shapiro_p: float | None
    skewness: float
    transformed: bool


class AssumptionChecks(_Part):
    residual_normality_test: str
    residual_normality_p: float
    max_cooks_distance: float
    n_influential: int = Field(description="Rows with Cook's distance > 4/n.")
    influential_threshold: float
    residual_morans_i: float | None = None
    residual_morans_p: float | None = None
    ok: bool = Field(description="Residuals not detectably non-normal at alpha, no Cook's distance > 1, and (spatial) no residual autocorrelation at alpha.")


class AssociationTest(_Part):
    phenotype: str
    programme: str
    n: int
    beta_std: Estimate = Field(description="Standardised coefficient (SD of phenotype per SD of programme, adjusted), with its 95 % CI.")
    se: float
    t: float
    df: int
    p_asymptotic: float
    p_permutation: float
    q_value: float = Field(description="Benjamini-Hochberg adjusted p-value of the p-value chosen for FDR.")
    significant: bool
    assumptions: AssumptionChecks


class PermutedLabelControl(_Part):
    rounds: int
    alpha: float
    expected_fraction: float
    observed_fraction: float
    tolerance: float
    mean_fdr_significant: float = Field(description="Mean number of BH-significant tests per permuted round (expected about 0).")
    clean: bool
    p_value: str


class ShuffledLocationControl(_Part):
    n_tests: int
    k_neighbours: int
    n_permutations: int
    shuffles: int = Field(description="Random reassignments of locations to rows in the shuffled control.")
    alpha: float
    median_morans_i: float
    fraction_autocorrelated: float = Field(description="Tests whose residuals show Moran's I p < alpha at the real locations.")
    fraction_autocorrelated_shuffled: float = Field(description="The same after shuffling spot locations, averaged over shuffles (expected about alpha).")
    tolerance: float
    clean: bool


class NegativeControls(_Part):
    permuted_labels: PermutedLabelControl
    shuffled_locations: ShuffledLocationControl | None = None
    all_clean: bool
    summary: str


class AssociationScan(ToolOutput):
    results_id: ResultId = Field(description="Stored result table; pass it to association_plots.")
    n_rows: int
    n_rows_used: int = Field(description="Rows with every covariate present.")
    n_tests: int
    n_significant: int
    p_value_for_fdr: str
    fdr_q: float
    genomic_inflation_lambda: float = Field(description="median(chi2 of asymptotic p) / 0.455; about 1 when most of many tests are null "
                                                        "and the test is calibrated (uninformative with a handful of tests).")
    covariate_terms: list[str]
    permutation_scheme: str
    transforms: list[TransformRecord]
    negative_controls: NegativeControls
    tests: list[AssociationTest]
    warnings: list[str]


def _example(ctx: ToolContext) -> dict:
    from cardiomics.synthetic.assoc_sim import simulate_association_cohort

    c = simulate_association_cohort(n=120, n_programmes=4, seed=1)
    return {"columns": c.columns, "phenotypes": ["lvef_pct", "lge_burden_pct"], "programmes": ["prog_0*"],
            "covariates": c.covariates, "control_rounds": 2}


def _transform(table, names, role, mode) -> tuple[np.ndarray, list[TransformRecord]]:
    cols, records = [], []
    for name in names:
        v = table[name]
        p, skew, rule = normality_rule(v)
        do = mode == "rank_int" or (mode == "auto" and rule)
        cols.append(rank_inverse_normal(v) if do else v)
        records.append(TransformRecord(variable=quote_name(name), role=role, n=int(np.isfinite(v).sum()),
                                       shapiro_p=None if np.isnan(p) else p, skewness=skew, transformed=do))
    return np.column_stack(cols), records


def _fit_one(y, x, z, alpha) -> tuple:
    """statsmodels OLS of standardised y on [x, Z]; returns (result, AssumptionChecks)."""
    exog = np.column_stack([zscore(x), z])
    import statsmodels.api as sm  # lazy: 1-2 s of import paid only when a scan runs
    from scipy import stats

    res = sm.OLS(zscore(y), exog).fit()
    resid = res.resid
    n = resid.size
    if n <= 5000:
        test, pnorm = "Shapiro-Wilk", float(stats.shapiro(resid).pvalue)
    else:
        test, pnorm = "D'Agostino-Pearson", float(stats.normaltest(resid).pvalue)
    cooks = res.get_influence().cooks_distance[0]
    thr = 4.0 / n
    checks = AssumptionChecks(residual_normality_test=test, residual_normality_p=pnorm,
                              max_cooks_distance=float(np.nanmax(cooks)), n_influential=int((cooks > thr).sum()),
                              influential_threshold=thr, ok=bool(pnorm >= alpha and np.nanmax(cooks) <= 1.0))
    return res, checks


@tool(role="analysis", version="1.0.0", example=_example)
def association_scan(inp: AssociationScanInput, ctx: ToolContext) -> AssociationScan:
    """Radiogenomic association scan: does each imaging phenotype go with each molecular programme?

    Fits ``phenotype ~ programme + covariates`` (OLS, statsmodels) for every pair across a cohort
    table (one row per patient, or per spot for spatial data), with age / sex / body size / site
    as covariates (text columns are categorical). Skewed variables are rank inverse-normal
    transformed by a recorded rule. Reports per test: standardised beta with 95 % CI, asymptotic
    and Freedman-Lane permutation p-values (>= 1,000 seeded permutations), Benjamini-Hochberg
    q-values, and assumption checks (residual normality, Cook's distance). Negative controls run
    every time: permuted labels (fraction significant should be about alpha) and, when
    ``coordinates`` are given, residual Moran's I at real vs shuffled spot locations; the output
    says plainly whether they came out clean. Use after imaging phenotypes and omics programme
    scores are computed and joined per patient; pass the returned ``results_id`` to
    ``association_plots`` for volcano and forest plots. Association, not causation.
    """
    table = load_table(inp, ctx)
    n_rows = len(next(iter(table.values())))
    phen = expand_names(inp.phenotypes, table, "phenotypes")
    prog = expand_names(inp.programmes, table, "programmes")
    covs = expand_names(inp.covariates, table, "covariates") if inp.covariates else []
    overlap = set(phen) & set(prog) | (set(phen) | set(prog)) & set(covs)
    if overlap:
        raise InputError("overlapping-columns", f"columns used in two roles: {sorted(map(quote_name, overlap))}",
                         hint="a column is a phenotype, a programme or a covariate, not several")
    if len(phen) * len(prog) > inp.max_tests:
        raise InputError("too-many-tests", f"{len(phen)} x {len(prog)} tests exceed max_tests={inp.max_tests}",
                         hint="narrow the column patterns or raise max_tests")
    for field, names in (("phenotypes", phen), ("programmes", prog)):
        for name in names:
            v = numeric(table, name, field)
            if np.unique(v[np.isfinite(v)]).size < 3:
                raise InputError("constant-column", f"{field}: column {quote_name(name)!r} has fewer than 3 distinct values",
                                 hint="drop constant or binary columns from the scan (use a covariate or a group comparison instead)")
    Y, t_phen = _transform(table, phen, "phenotype", inp.transform)
    X, t_prog = _transform(table, prog, "programme", inp.transform)
    design = covariate_design(table, covs, set(inp.categorical))
    Z = design.matrix
    cov_ok = np.isfinite(Z).all(axis=1)
    if cov_ok.sum() < len(design.names) + 4:
        raise InputError("too-few-rows", f"only {int(cov_ok.sum())} rows have every covariate ({len(design.names)} terms)",
                         hint="fill missing covariates or use fewer covariates / site levels")
    blocks = None
    if inp.permute_within:
        if inp.permute_within not in table:
            raise InputError("unknown-column", f"permute_within: no column {quote_name(inp.permute_within)!r}",
                             hint="name a column of the table, e.g. 'site'")
        blocks = np.unique(table[inp.permute_within].astype(str), return_inverse=True)[1]
    coords = None
    if inp.coordinates:
        coords = np.column_stack([numeric(table, c, "coordinates") for c in expand_names(inp.coordinates, table, "coordinates")])

    rng = np.random.default_rng(ctx.seed)
    res = scan(Y, X, Z, n_perm=inp.n_permutations, rng=rng, blocks=blocks, keep_residuals=coords is not None)
    warnings: list[str] = []
    tested = [(j, k) for j in range(len(phen)) for k in range(len(prog)) if np.isfinite(res.t[j, k])]
    skipped = len(phen) * len(prog) - len(tested)
    if skipped:
        warnings.append(f"{skipped} test(s) skipped: too few complete rows for the model")
    if not tested:
        raise InputError("no-testable-pairs", "no phenotype-programme pair has enough complete rows",
                         hint="check missing values in phenotypes, programmes and covariates")

    # Reported coefficients, CIs and asymptotic p-values come from statsmodels; the vectorised path
    # supplies the permutation distribution and must agree with it.
    fits = {}
    for j, k in tested:
        rows = res.rows[(j, k)]
        sm_res, checks = _fit_one(Y[rows, j], X[rows, k], Z[rows], inp.alpha)
        if not np.isclose(sm_res.tvalues[0], res.t[j, k], rtol=1e-6, atol=1e-8):
            warnings.append(f"vectorised and statsmodels t differ for {quote_name(phen[j])} ~ {quote_name(prog[k])}")
        fits[(j, k)] = (sm_res, checks)
    p_asym = np.array([fits[jk][0].pvalues[0] for jk in tested])
    p_perm = np.array([res.p_perm[jk] for jk in tested])
    p_fdr = p_perm if inp.p_value_for_fdr == "permutation" else p_asym
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    reject, qvals, _, _ = multipletests(p_fdr, alpha=inp.fdr_q, method="fdr_bh")
    lam = float(np.median(stats.chi2.isf(p_asym, 1)) / CHI2_1_MEDIAN)

    controls_rng = np.random.default_rng([ctx.seed, 1])
    lab = permuted_labels(Y, X, Z, rounds=inp.control_rounds, alpha=inp.alpha, q=inp.fdr_q, rng=controls_rng)
    spatial = None
    moran: dict[tuple[int, int], tuple[float, float]] = {}
    if coords is not None:
        keys, cols = [], []
        for j, (ks, E) in res.full_residuals.items():
            keys += [(j, k) for k in ks]
            cols.append(E)
        if cols and np.isfinite(coords).all():
            sp = shuffled_locations(np.column_stack(cols), coords, alpha=inp.alpha, rng=controls_rng)
            moran = {key: (float(i), float(p)) for key, i, p in zip(keys, sp.pop("morans_i"), sp.pop("morans_p"))}
            spatial = ShuffledLocationControl(**sp)
        else:
            warnings.append("spatial control skipped: coordinates or rows incomplete")

    tests = []
    for idx, (j, k) in enumerate(tested):
        sm_res, checks = fits[(j, k)]
        lo, hi = sm_res.conf_int(0.05)[0]
        if (j, k) in moran:
            mi, mp = moran[(j, k)]
            checks = checks.model_copy(update={"residual_morans_i": mi, "residual_morans_p": mp,
                                               "ok": checks.ok and mp >= inp.alpha})
        tests.append(AssociationTest(
            phenotype=quote_name(phen[j]), programme=quote_name(prog[k]), n=int(sm_res.nobs),
            beta_std=Estimate(value=float(sm_res.params[0]), unit="SD per SD",
                              interval=Interval(lower=float(lo), upper=float(hi), level=0.95, method="OLS t-distribution")),
            se=float(sm_res.bse[0]), t=float(sm_res.tvalues[0]), df=int(round(sm_res.df_resid)),
            p_asymptotic=float(p_asym[idx]), p_permutation=float(p_perm[idx]), q_value=float(qvals[idx]),
            significant=bool(reject[idx]), assumptions=checks))

    clean = lab["clean"] and (spatial is None or spatial.clean)
    parts = [f"Permuted labels: {lab['observed_fraction']:.3f} of tests had p < {inp.alpha} "
             f"(expected {inp.alpha}, tolerance +{lab['tolerance']:.3f}) -> {'clean' if lab['clean'] else 'NOT clean: p-values look miscalibrated'}."]
    if spatial is not None:
        parts.append(f"Shuffled locations: residual autocorrelation in {spatial.fraction_autocorrelated:.3f} of tests at real "
                     f"locations, {spatial.fraction_autocorrelated_shuffled:.3f} after shuffling -> "
                     + ("clean." if spatial.clean else "NOT clean: neighbouring rows are dependent, p-values are anti-conservative; "
                        "use a spatial model or spatially blocked permutations."))
    n_bad = sum(not t.assumptions.ok for t in tests)
    if n_bad:
        warnings.append(f"{n_bad} of {len(tests)} tests fail an assumption check (see assumptions per test)")
    arrays = {"beta": np.array([t.beta_std.value for t in tests]), "lower": np.array([t.beta_std.interval.lower for t in tests]),
              "upper": np.array([t.beta_std.interval.upper for t in tests]), "p_fdr": p_fdr, "q": qvals,
              "significant": reject.astype(np.int8)}
    results_id = ctx.store.put("assoc", arrays, {
        "labels": [f"{t.phenotype} ~ {t.programme}" for t in tests], "p_value_for_fdr": inp.p_value_for_fdr,
        "fdr_q": inp.fdr_q, "seed": ctx.seed})
    log.info("association_scan", n_tests=len(tests), n_significant=int(reject.sum()), lambda_gc=round(lam, 3), controls_clean=clean)
    return AssociationScan(
        results_id=results_id, n_rows=n_rows, n_rows_used=int(cov_ok.sum()), n_tests=len(tests),
        n_significant=int(reject.sum()), p_value_for_fdr=inp.p_value_for_fdr, fdr_q=inp.fdr_q,
        genomic_inflation_lambda=lam, covariate_terms=[quote_name(c) for c in design.names],
        permutation_scheme=PERMUTATION_SCHEME + (f" Rule for transforms: Shapiro-Wilk p < {SHAPIRO_P} and |skew| > {SKEW_LIMIT}."),
        transforms=t_phen + t_prog,
        negative_controls=NegativeControls(permuted_labels=PermutedLabelControl(**lab), shuffled_locations=spatial,
                                           all_clean=clean, summary=" ".join(parts)),
        tests=tests, warnings=warnings)
