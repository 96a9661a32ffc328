"""``cardiomics chat``: register the command; the session lives in ``cardiomics.chat``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer, *, friendly, out, err) -> None:
    @app.command()
    @friendly
    def chat(llm_config: Path | None = typer.Option(None, "--llm-config", help="TOML file with base_url, model, api_key "
                                                        "(default: <CARDIOMICS_HOME>/llm.toml, then OPENAI_BASE_URL, "
                                                        "OPENAI_API_KEY, CARDIOMICS_LLM_MODEL)."),
             run: str | None = typer.Option(None, "--run", help="Continue the conversation on this run.")) -> None:
        """Talk to the graph: analyse a study, ask about it, approve it. Without a model: guided commands."""
        from cardiomics.chat import open_session, run_repl

        session = open_session(llm_config=str(llm_config) if llm_config else None, console=out,
                               ask=lambda prompt: out.input(prompt))
        try:
            if run:
                session.show(session.handle(f"use {run}"))
            run_repl(session, lambda prompt: out.input(f"[bold]{prompt}[/]"))
        finally:
            session.close()
