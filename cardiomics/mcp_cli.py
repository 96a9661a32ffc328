"""`cardiomics mcp`: serve every registered tool over MCP."""

from __future__ import annotations

import typer


def register(app: typer.Typer, *, friendly, out, err) -> None:
    @app.command()
    @friendly
    def mcp(http: bool = typer.Option(False, "--http", help="Serve streamable HTTP instead of stdio."),
            host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8766)) -> None:
        """Serve every registered tool over MCP (stdio by default)."""
        from cardiomics.mcp_server import build_server

        if http and host not in ("127.0.0.1", "localhost", "::1"):
            err.print("[bold red]refused[/]: MCP over HTTP has no authentication yet; bind it to loopback (127.0.0.1) only.")
            raise typer.Exit(2)
        server = build_server()
        if http:
            err.print(f"[yellow]MCP over HTTP on {host}:{port} without authentication (loopback only)[/]")
            server.run(transport="http", host=host, port=port, show_banner=False)
        else:
            server.run(transport="stdio", show_banner=False)  # stdout belongs to the protocol
