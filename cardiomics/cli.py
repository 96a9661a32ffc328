"""The ``cardiomics`` command. Heavy modules are imported inside commands so ``--help`` is fast."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from functools import wraps
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Imaging-anchored multiomics for cardiology: analyse a CMR study, serve the tools over MCP, review audited reports.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
audit_app = typer.Typer(help="Audit trail commands.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
out = Console()
err = Console(stderr=True)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress at info level on stderr.")) -> None:
    from cardiomics.logging import configure

    configure(verbose)


def friendly(fn):
    """Print typed errors as 'Kind[code]: message / hint' without a traceback; exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        from cardiomics.errors import CardiomicsError

        try:
            return fn(*args, **kwargs)
        except CardiomicsError as exc:
            _print_error(exc.to_dict())
            raise typer.Exit(2) from None

    return wrapper


def _print_error(e: dict) -> None:
    """'Kind[code]: message' and the hint; escaped, since messages quote file names and input text."""
    from rich.markup import escape

    err.print(f"[bold red]{escape(e['error'])}\\[{escape(e['code'])}][/]: {escape(e['message'])}", highlight=False)
    if e.get("hint"):
        err.print(f"  hint: {escape(e['hint'])}", highlight=False)


def _runs():
    from cardiomics.agents.runs import Runs

    return Runs()


def _print_status(st) -> None:
    out.print(f"run [bold]{st.run_id}[/]  status: [bold]{st.status}[/]", highlight=False)
    if st.study_key:
        out.print(f"study key: {st.study_key}", highlight=False)
    if st.waiting_for == "qc-approval":
        out.print("waiting for QC approval of the segmentation:", highlight=False)
        out.print(f"  cardiomics approve {st.run_id} --reviewer NAME   [or --reject]", highlight=False)
    elif st.waiting_for == "sign-off":
        out.print(f"draft report v{st.report_version} waiting for sign-off:", highlight=False)
        out.print(f"  cardiomics report {st.run_id} --format html", highlight=False)
        out.print(f"  cardiomics approve {st.run_id} --reviewer NAME   [--reject | --request-changes] [--comment TEXT]", highlight=False)
    elif st.status == "interrupted":
        out.print(f"the run stopped between steps; continue it with: cardiomics resume {st.run_id}", highlight=False)
    if st.error:
        _print_error(st.error)


def _findings_table(runs, run_id: str) -> None:
    from rich.table import Table

    snap = runs.graph.get_state(runs._config(run_id))
    func = (snap.values.get("results") or {}).get("cardiac_function")
    if not func:
        return
    table = Table(title="Cardiac function (draft, awaiting review)")
    for col in ("measure", "value", "interval", "reference", "flag"):
        table.add_column(col)
    for key in ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_pct", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct"):
        e = func[key]
        iv = f"{e['interval']['lower']:.1f}–{e['interval']['upper']:.1f}" if e.get("interval") else "—"
        ref = f"{e['reference']['lower']:g}–{e['reference']['upper']:g}" if e.get("reference") else "—"
        table.add_row(key, f"{e['value']:.1f} {e['unit']}", iv, ref, e["flag"])
    out.print(table)


@app.command()
@friendly
def demo() -> None:
    """Create the shipped phantom study (if absent) and analyse it up to QC approval."""
    from cardiomics.tools.imaging import ensure_sample
    from cardiomics.tools.omics._examples import example_spatial

    with _runs() as runs:
        with err.status("Writing the sample: phantom cine study (DICOM) and simulated spatial transcriptomics…"):
            folder = ensure_sample(runs.settings.home / "sample")
            omics = example_spatial(runs.settings.home / "sample", seed=7)
        with err.status("Analysing the sample study: load, QC, segment, cardiac and regional function…"):
            st = runs.start(str(folder), omics_path=str(omics), height_cm=172, weight_kg=70, sex="female")
        _findings_table(runs, st.run_id)
        truth = json.loads((folder.parent / "truth.json").read_text())["truth"]
        out.print(f"phantom ground truth: LVEDV {truth['lv_edv_ml']:.1f} ml, LVESV {truth['lv_esv_ml']:.1f} ml, "
                  f"LVEF {truth['lv_ef_pct']:.1f} %, LV mass {truth['lv_mass_g']:.1f} g", highlight=False)
        _print_status(st)


@app.command()
@friendly
def analyse(study: Path = typer.Argument(..., help="DICOM series folder, NIfTI file, or folder of per-frame NIfTI files."),
            omics: Path | None = typer.Option(None, help="An .h5ad file with the patient's transcriptomics."),
            height: float | None = typer.Option(None, help="Height in cm (for BSA indexing)."),
            weight: float | None = typer.Option(None, help="Weight in kg (for BSA indexing)."),
            sex: str | None = typer.Option(None, help="male or female (sex-specific reference ranges).")) -> None:
    """Run the graph on one study; stops at the QC approval checkpoint."""
    with _runs() as runs:
        with err.status("Analysing: load, QC, segment, cardiac function…"):
            st = runs.start(str(study), omics_path=str(omics) if omics else None, height_cm=height, weight_kg=weight, sex=sex)
        _findings_table(runs, st.run_id)
        _print_status(st)
        if st.status == "failed":
            raise typer.Exit(2)


@app.command()
@friendly
def approve(run_id: str, reviewer: str = typer.Option(..., help="Name of the reviewer taking the decision."),
            reject: bool = typer.Option(False, "--reject", help="Reject instead of approving."),
            request_changes: bool = typer.Option(False, "--request-changes", help="Send the draft back to the explanation step."),
            comment: str = typer.Option("", help="Comment recorded with the decision.")) -> None:
    """Record a decision at the checkpoint the run waits at and resume it to the next checkpoint or the end."""
    if reject and request_changes:
        err.print("choose one of --reject and --request-changes")
        raise typer.Exit(2)
    decision = "rejected" if reject else "changes-requested" if request_changes else "approved"
    with _runs() as runs:
        with err.status("Resuming the run…"):
            st = runs.decide(run_id, reviewer, decision, comment)
        _print_status(st)


@app.command()
@friendly
def resume(run_id: str) -> None:
    """Continue a run that stopped between checkpoints (a crash, an unreachable model)."""
    with _runs() as runs:
        with err.status("Resuming the run…"):
            st = runs.resume(run_id)
        _print_status(st)


@app.command("runs")
@friendly
def list_runs() -> None:
    """List runs with their status and what they wait for."""
    from rich.table import Table

    with _runs() as runs:
        table = Table()
        for col in ("run", "created", "status", "waiting for", "study key", "report"):
            table.add_column(col)
        for st in runs.list():
            table.add_row(st.run_id, st.created_at, st.status, st.waiting_for or "—", st.study_key or "—",
                          f"v{st.report_version}" if st.report_version else "—")
        out.print(table)


class Format(StrEnum):
    json = "json"
    html = "html"


@app.command()
@friendly
def report(run_id: str, format: Format = typer.Option(Format.html, "--format", help="json or html."),
           version: int | None = typer.Option(None, help="Report version (default: the latest)."),
           output: Path | None = typer.Option(None, "--out", help="Write to this file instead of printing its path.")) -> None:
    """Show where a run's report is, or write it to --out."""
    from cardiomics.agents.reports import ReportStore
    from cardiomics.config import Settings

    store = ReportStore(Settings.from_env().reports_dir)
    rep = store.load(run_id, version)
    path = store.path(run_id, rep.version, f".{format.value}")
    if output:
        from cardiomics.atomicfile import write_atomic

        write_atomic(output, path.read_bytes())
        out.print(f"wrote {output} (report v{rep.version}, {rep.status})", highlight=False)
    else:
        out.print(str(path), highlight=False)


@app.command()
@friendly
def segment(image: Path = typer.Argument(..., help="NIfTI volume (ACDC layout) or DICOM series folder."),
            out_path: Path = typer.Option(..., "--out", help="Label map to write (.nii.gz)."),
            frame: int | None = typer.Option(None, help="Only this frame (default: all; 4D output when several)."),
            overwrite: bool = typer.Option(False, help="Replace --out if it exists.")) -> None:
    """Segment a CMR image and write LV/myocardium/RV labels (ACDC values 1 RV, 2 myo, 3 LV) on the input grid."""
    from cardiomics.config import Settings
    from cardiomics.tools import ArtifactStore, ToolContext, call_tool

    ctx = ToolContext(store=ArtifactStore(Settings.from_env().ensure().artifacts_dir))
    with err.status("Segmenting…"):
        res = call_tool("segment_file", {"path": str(image), "out_path": str(out_path), "frame": frame, "overwrite": overwrite}, ctx)
    model = res.provenance.models[0]
    out.print(f"wrote {out_path}: shape {res.shape}, voxel {res.zooms_mm} mm; model {model.id} {model.version} "
              f"(weights {model.weights_sha256[:12]}…); voxels {res.voxels_per_structure}; "
              f"{res.provenance.duration_s:.2f} s", highlight=False)


@app.command("train-segmenter")
@friendly
def train_segmenter(data: Path = typer.Option(None, help="Real data folder (default: $CARDIOMICS_DATA or ../shared/data)."),
                    out_dir: Path = typer.Option(Path("models/segmenter"), "--out", help="Where weights.pt and card.json go."),
                    seed: int = typer.Option(0),
                    iterations: int | None = typer.Option(None, help="Exact iteration count (the card records the shipped value)."),
                    minutes: float = typer.Option(29.5, help="Time budget when --iterations is not given."),
                    lr: float = typer.Option(2e-3, help="Peak learning rate (the shipped later stages used 5e-4)."),
                    init_weights: Path | None = typer.Option(None, help="Continue from these weights (the later stages of the shipped recipe)."),
                    rv_weight: float = typer.Option(1.0, help="Weight of the RV term in the Dice loss (the later stages used 2.0)."),
                    in_channels: int = typer.Option(1, help="1: 2D; 3: 2.5D (each slice with its neighbours). A 2D --init-weights net is widened."),
                    small_rv_boost: float = typer.Option(1.0, help="Sampling weight multiplier for slices with a small RV."),
                    threads: int = typer.Option(1, help="torch threads for training.")) -> None:
    """Train the CMR segmentation network on ACDC + phantoms and write weights and model card.

    The shipped weights come from a staged recipe; the card's training.command records every stage, each
    one call of this command (later stages with --init-weights <previous stage's weights.pt>):
    stage 1 --iterations 1918; stage 2 --iterations 1435 --lr 5e-4 --rv-weight 2; then the 2.5D stages
    with --in-channels 3 --lr 5e-4 --rv-weight 2 (iterations as the card records).
    """
    from cardiomics.models.segmenter.train import train

    result = train(_data_dir(data), out_dir, seed=seed, iterations=iterations, time_budget_min=minutes, lr=lr,
                   init_weights=init_weights, rv_weight=rv_weight, in_channels=in_channels, small_rv_boost=small_rv_boost,
                   threads=threads)
    out.print(json.dumps({k: result[k] for k in ("iterations", "train_wall_s", "parameters", "weights_bytes") if k in result}), highlight=False)


@app.command("evaluate-segmenter")
@friendly
def evaluate_segmenter(data: Path = typer.Option(None, help="Real data folder (default: $CARDIOMICS_DATA or ../shared/data)."),
                       patients: str | None = typer.Option(None, help="Comma-separated patient ids (default: the card's validation split).")) -> None:
    """Dice and HD95 per structure and phase, per-patient EF error, per diagnostic group, against expert labels."""
    from cardiomics.models.segmenter.evaluate import evaluate

    res = evaluate(_data_dir(data), patients.split(",") if patients else None)
    out.print_json(json.dumps(res, default=str))


@app.command("train-fusion")
@friendly
def train_fusion(out_dir: Path = typer.Option(Path("models/fusion"), "--out", help="Where weights.pt and card.json go."),
                 epochs: int = typer.Option(300, help="MVAE training epochs (the card records the shipped value).")) -> None:
    """Train the fusion model on the simulated reference cohort, evaluate it on the held-out cohort, write weights and card."""
    from cardiomics.models.fusion.train import train

    with err.status(f"Training the fusion model ({epochs} epochs)…"):
        result = train(out_dir, epochs)
    out.print(json.dumps(result), highlight=False)


def _data_dir(data: Path | None) -> Path:
    import os

    from cardiomics.errors import InputError

    path = data or Path(os.environ.get("CARDIOMICS_DATA", "../shared/data"))
    if not path.is_dir():
        raise InputError("no-data", f"data folder {path} not found", hint="pass --data or set CARDIOMICS_DATA")
    return path


@audit_app.command("verify")
@friendly
def audit_verify(run_id: str | None = typer.Argument(None, help="One run; every trail when omitted.")) -> None:
    """Recompute the hash chain of audit trails and check reports against them; exit 1 naming the first bad line."""
    from cardiomics.audit import verify_dir
    from cardiomics.config import Settings

    settings = Settings.from_env()
    results = verify_dir(settings.audit_dir, run_id)
    if not results:
        out.print(f"no audit trails in {settings.audit_dir}")
    bad = 0
    for r in results:
        if r.ok:
            out.print(f"[green]ok[/]   {r.run_id}: {r.lines} lines, chain intact", highlight=False)
        else:
            bad += 1
            out.print(f"[bold red]FAIL[/] {r.run_id}: line {r.first_bad_line}: {r.reason}", highlight=False)
    if run_id is None or run_id.startswith("run-"):  # signed and draft reports against their trail
        from cardiomics.audit_reports import print_checks

        bad += print_checks(out, settings, run_id)
    if bad:
        raise typer.Exit(1)


# Commands owned by other modules register themselves; each keeps heavy imports inside its commands.
_COMMAND_MODULES = ("cardiomics.mcp_cli", "cardiomics.review_cli", "cardiomics.chat_cli", "cardiomics.batch_cli")


def _register_commands() -> None:
    import importlib
    import importlib.util

    for name in _COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(app, friendly=friendly, out=out, err=err)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
