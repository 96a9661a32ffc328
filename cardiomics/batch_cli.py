"""`cardiomics batch`: analyse a folder of studies on Dask, resumable, failures collected."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer, *, friendly, out, err) -> None:
    @app.command()
    @friendly
    def batch(studies_dir: Path = typer.Argument(..., help="Folder whose subfolders are studies (a DICOM series or NIfTI each)."),
              out_dir: Path = typer.Option(..., "--out", help="Output folder: phenotypes.parquet, per-study report drafts and audit trails."),
              workers: int = typer.Option(1, "--workers", help="Local worker processes; each runs one study at a time with cores / workers torch threads."),
              address: str | None = typer.Option(None, "--address", help="An existing Dask scheduler (tcp://host:8786) instead of a local "
                                                 "cluster; its workers must see the studies and --out at the same paths."),
              keep_artifacts: bool = typer.Option(False, help="Keep each study's image stacks and label maps under OUT/studies/NAME/artifacts."),
              covariates: str | None = typer.Option(None, "--covariates", help="CSV with a study column and any of height_cm, weight_kg, sex "
                                                    "(blank = unknown): BSA-indexed values and sex-specific ranges.")) -> None:
        """Analyse every study without approval pauses (reports stay drafts); studies already done are skipped
        (with --covariates, only those analysed with the same covariates)."""
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Table

        from cardiomics.batch import not_indexable, run_batch

        counts = {"done": 0, "skipped": 0, "failed": 0}
        # started once the studies are found and the covariates validated, so a refusal is not shown under a progress bar
        progress = Progress(TextColumn("[bold]batch[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.description}"), console=err, transient=False)
        task = progress.add_task("starting workers…", total=None)

        def on_plan(studies, covariates_by_study):
            half = not_indexable(covariates_by_study)
            if half:  # BSA needs both: say so rather than leave the rows silently unindexed
                err.print(f"[yellow]{len(half)} studies have only one of height_cm and weight_kg and will not be BSA-indexed: "
                          f"{escape(', '.join(half[:10]))}{' …' if len(half) > 10 else ''}[/]", highlight=False)
            progress.update(task, total=len(studies))
            progress.start()

        def on_result(outcome, n, total):
            counts[outcome.status] += 1
            progress.update(task, total=total, completed=n,
                            description=escape(f"done {counts['done']} · skipped {counts['skipped']} · failed {counts['failed']} · last {outcome.study}"))

        try:
            summary = run_batch(studies_dir, out_dir, workers=workers, address=address, on_result=on_result, keep_artifacts=keep_artifacts,
                                covariates=covariates, on_plan=on_plan)
        except KeyboardInterrupt:
            if progress.live.is_started:
                progress.stop()
            err.print(f"[yellow]interrupted: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped so far; "
                      "run the same command again to analyse the rest (finished studies are skipped)[/]", highlight=False)
            raise typer.Exit(130) from None
        finally:
            if progress.live.is_started:  # stopping a bar never shown prints a stray blank line above a refusal
                progress.stop()
        rate = f"{summary.studies_per_min:.1f} studies/min" if summary.studies_per_min else "—"
        if summary.failed and summary.done_per_min is not None:
            rate += f", {summary.done_per_min:.1f} done/min"
        out.print(f"{summary.n_studies} studies: [green]{summary.done} done[/], {summary.skipped} skipped (already done), "
                  f"[red]{summary.failed} failed[/] in {summary.wall_s:.1f} s ({rate}, {summary.engine})", highlight=False)
        out.print(f"approvals {summary.approvals}", highlight=False)
        if summary.table:
            out.print(f"phenotypes: {summary.table}", highlight=False)
        if summary.analysed_again:
            out.print("analysed again: " + ", ".join(f"{n} ({escape(why)})" for why, n in sorted(summary.analysed_again.items())), highlight=False)
        if summary.failures:
            table = Table(title="Failed studies (a rerun tries them again: fix what the hint names first)")
            for col in ("study", "error", "message", "hint"):
                table.add_column(col)
            for f in summary.failures:
                table.add_row(escape(f.study), escape(f"{f.error['error']}[{f.error['code']}]"), escape(f.error["message"]),
                              escape(f.error.get("hint") or ""))
            out.print(table)
        out.print(f"summary: {Path(summary.out_dir) / 'batch_summary.json'}", highlight=False)
        if summary.failed:
            raise typer.Exit(1)
