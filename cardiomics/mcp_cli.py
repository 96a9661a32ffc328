"""`cardiomics mcp`: serve every registered tool over MCP; `cardiomics mcp token ...`: bearer tokens.

Heavy imports (fastmcp, the tool registry, uvicorn) happen inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer, *, friendly, out, err) -> None:
    mcp_app = typer.Typer(help="Serve the tools over MCP (stdio by default, --http for remote agents) and manage tokens.",
                          invoke_without_command=True, no_args_is_help=False)
    token_app = typer.Typer(help="Bearer tokens for `cardiomics mcp --http`.", no_args_is_help=True)
    mcp_app.add_typer(token_app, name="token")
    app.add_typer(mcp_app, name="mcp")

    @mcp_app.callback()
    @friendly
    def mcp(ctx: typer.Context,
            http: bool = typer.Option(False, "--http", help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio."),
            host: str = typer.Option("127.0.0.1", help="Address to bind (HTTP)."),
            port: int = typer.Option(8766, help="Port (HTTP)."),
            no_auth: bool = typer.Option(False, "--no-auth", help="HTTP without bearer tokens: loopback addresses only."),
            root: Annotated[Path | None, typer.Option(help="Folder remote callers may name files under "
                                                           "(default: $CARDIOMICS_MCP_ROOT or the working directory).")] = None,
            ) -> None:
        """Serve every registered tool over MCP (stdio by default)."""
        if ctx.invoked_subcommand is not None:
            return
        _serve(http=http, host=host, port=port, no_auth=no_auth, root=root, err=err)

    @token_app.command("create")
    @friendly
    def token_create(name: str = typer.Argument(..., help="Who or what will hold the token (recorded in the audit trail)."),
                     expires_days: Annotated[str | None, typer.Option(
                         "--expires-days", metavar="N",
                         help="Days until the token expires, 0..3650 (default 90); 0 means it never expires.")] = None,
                     ) -> None:
        """Create a token and print it once; only its SHA-256 is stored."""
        from rich.markup import escape

        from cardiomics.config import Settings
        from cardiomics.mcp_auth import DEFAULT_EXPIRY_DAYS, TokenStore, expiry_days

        # read as text so that "abc" or "1.5" get the same typed error as an out-of-range number
        days = DEFAULT_EXPIRY_DAYS if expires_days is None else expiry_days(expires_days)
        store = TokenStore(Settings.from_env().ensure())
        token = store.create(name, expires_days=days)
        entry = next(e for e in store.list() if e.name == name)
        expiry = f"expires {entry.expires_at}" if entry.expires_at else "never expires"
        err.print(f"token [bold]{escape(name)}[/] created ({expiry}); it is shown once, store it now:", highlight=False)
        out.print(token, highlight=False, soft_wrap=True)

    @token_app.command("list")
    @friendly
    def token_list() -> None:
        """List token names, creation and expiry times (never the tokens)."""
        from rich.table import Table

        from cardiomics.config import Settings
        from cardiomics.mcp_auth import TokenStore

        store = TokenStore(Settings.from_env())
        entries = store.list()
        if not entries:
            out.print("no MCP tokens; create one with `cardiomics mcp token create NAME`")
            return
        now = store.now()
        table = Table()
        for col in ("name", "created", "expires", "sha256 (prefix)"):
            table.add_column(col)
        for e in entries:
            expires = "never" if e.expires_at is None else e.expires_at + (" expired" if e.expired(now) else "")
            table.add_row(e.name, e.created_at, expires, e.sha256[:12] + "…")
        out.print(table)

    @token_app.command("revoke")
    @friendly
    def token_revoke(name: str = typer.Argument(..., help="Name of the token to revoke.")) -> None:
        """Revoke a token; a running server refuses it from its next request."""
        from cardiomics.config import Settings
        from cardiomics.mcp_auth import TokenStore

        TokenStore(Settings.from_env()).revoke(name)
        out.print(f"revoked {name}", highlight=False)


EXPIRY_WARNING_DAYS = 7


def _warn_expiring(store, err) -> None:
    """Name the tokens that stop working within a week, so their holders are not cut off without notice."""
    from datetime import timedelta

    soon = store.now() + timedelta(days=EXPIRY_WARNING_DAYS)
    for entry in store.usable():
        expiry = entry.expiry()
        if expiry is not None and expiry <= soon:
            err.print(f"[yellow]token {entry.name} expires {entry.expires_at}; create its successor with "
                      f"`cardiomics mcp token create NAME`[/]", highlight=False)


def _serve(*, http: bool, host: str, port: int, no_auth: bool, root: Path | None, err) -> None:
    from cardiomics.config import Settings
    from cardiomics.mcp_auth import LOOPBACK, TokenStore

    if not http:
        if no_auth or root is not None:
            err.print("--no-auth and --root apply to --http only")
            raise typer.Exit(2)
        from cardiomics.mcp_server import build_server

        build_server().run(transport="stdio", show_banner=False)  # stdout belongs to the protocol
        return

    settings = Settings.from_env().ensure()
    if no_auth:
        if host not in LOOPBACK:
            err.print(f"[bold red]refused[/]: --no-auth binds to loopback only (127.0.0.1, ::1), not {host}.", highlight=False)
            raise typer.Exit(2)
        err.print(f"[bold yellow]WARNING: MCP over HTTP WITHOUT AUTHENTICATION on {host}:{port}. Any local process or "
                  f"user can call every tool. Calls are audited as 'mcp-http-anonymous'.[/]", highlight=False)
    else:
        store = TokenStore(settings)
        if not store.list():
            err.print("[bold red]refused[/]: no MCP tokens exist; create one with `cardiomics mcp token create NAME` "
                      "(or use --no-auth on 127.0.0.1 for local experiments)", highlight=False)
            raise typer.Exit(2)
        if not store.usable():
            err.print("[bold red]refused[/]: every MCP token has expired; create a new one with "
                      "`cardiomics mcp token create NAME` (see `cardiomics mcp token list`; revoke the expired ones)",
                      highlight=False)
            raise typer.Exit(2)
        _warn_expiring(store, err)
        if host not in LOOPBACK:
            err.print(f"[yellow]serving on {host}: tokens travel in clear over plain HTTP; put a TLS proxy in front[/]", highlight=False)

    import uvicorn

    from cardiomics.mcp_server import http_app, remote_root

    confined_to = remote_root(root)  # a PolicyError for the filesystem root, which would confine nothing
    app = http_app(settings, host=host, no_auth=no_auth, root=confined_to)
    err.print(f"MCP over HTTP: http://{host}:{port}/mcp  (health: /health; files confined to {confined_to})",
              highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
