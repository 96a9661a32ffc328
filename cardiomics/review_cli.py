"""`cardiomics review`: serve the review web app (loopback by default) and manage reviewer accounts."""

from __future__ import annotations

import sys

import typer


def register(app: typer.Typer, *, friendly, out, err) -> None:
    review = typer.Typer(help="Review web app: QC overlays, reports with provenance, decisions and exports.",
                         invoke_without_command=True)
    app.add_typer(review, name="review")

    @review.callback()
    @friendly
    def serve(ctx: typer.Context,
              host: str = typer.Option("127.0.0.1", help="Address to bind (loopback unless --allow-remote)."),
              port: int = typer.Option(8765, help="TCP port."),
              allow_remote: bool = typer.Option(False, "--allow-remote",
                                                help="Allow a non-loopback address (put a TLS reverse proxy in front).")) -> None:
        """Serve the review app on HOST:PORT (127.0.0.1:8765 by default)."""
        if ctx.invoked_subcommand is not None:
            return
        from cardiomics.review.server import is_loopback

        if not is_loopback(host):
            if not allow_remote:
                err.print(f"[bold red]refused[/]: {host} is not a loopback address. The review app serves clinical reports and "
                          "session cookies over plain HTTP; bind 127.0.0.1 and put a TLS reverse proxy in front, or pass "
                          "--allow-remote if you have done so.", highlight=False)
                raise typer.Exit(2)
            err.print(f"[bold yellow]warning[/]: serving on {host}:{port}, reachable from other machines. Use it only behind "
                      "a TLS-terminating reverse proxy on a trusted network.", highlight=False)
        import uvicorn

        from cardiomics.review import create_app
        from cardiomics.review.accounts import Accounts

        application = create_app()
        if not application.state.user_header and not Accounts(application.state.settings.home).names():
            err.print("[yellow]no reviewer accounts yet[/]: create one with `cardiomics review add-user NAME`", highlight=False)
        err.print(f"review app on http://{host}:{port}  (home {application.state.settings.home})", highlight=False)
        # proxy_headers off: the app applies X-Forwarded-For itself, after keeping the proxy's address (app.DirectPeer)
        uvicorn.run(application, host=host, port=port, log_level="warning", proxy_headers=False)

    @review.command("add-user")
    @friendly
    def add_user(name: str = typer.Argument(..., help="Reviewer name, as it will appear in the audit trail."),
                 password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
                 replace: bool = typer.Option(False, "--replace", help="Set a new password for an existing reviewer.")) -> None:
        """Create a local reviewer account (password hashed with scrypt and a per-user salt)."""
        from cardiomics.config import Settings
        from cardiomics.review.accounts import Accounts

        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        settings = Settings.from_env().ensure()
        accounts = Accounts(settings.home, audit_dir=settings.audit_dir)  # the change is written to the access trail
        accounts.add(name, password, replace=replace)
        out.print(f"reviewer {name} saved in {accounts.path}", highlight=False)

    @review.command("remove-user")
    @friendly
    def remove_user(name: str = typer.Argument(..., help="Reviewer name, as `cardiomics review users` lists it."),
                    yes: bool = typer.Option(False, "--yes", help="Remove without asking for confirmation.")) -> None:
        """Remove a reviewer account; that reviewer's open sessions end at their next request."""
        from rich.markup import escape

        from cardiomics.config import Settings
        from cardiomics.review.accounts import Accounts

        settings = Settings.from_env()
        accounts = Accounts(settings.home, audit_dir=settings.audit_dir)  # the removal is written to the access trail
        accounts.require(name)  # before the prompt: nothing to confirm for a name that is not there
        if not yes and not typer.confirm(f"Remove reviewer {name}? Their open review sessions end at their next request."):
            err.print(f"reviewer {escape(name)} kept: nothing changed", highlight=False)
            raise typer.Exit(1)
        accounts.remove(name)
        out.print(f"reviewer {escape(name)} removed from {escape(str(accounts.path))}; "
                  "their open review sessions end at their next request", highlight=False)

    @review.command("users")
    @friendly
    def users() -> None:
        """List reviewer accounts."""
        from cardiomics.config import Settings
        from cardiomics.review.accounts import Accounts

        for name in Accounts(Settings.from_env().home).names():
            out.print(name, highlight=False)
