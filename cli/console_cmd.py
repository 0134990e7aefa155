"""``referral console``: the web console for one organisation's liaison and the operator."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.app import NETWORK_OPTION, console, escape, service_stop_event, state
from console.auth import OPERATOR, token_env
from console.server import DEFAULT_HOST, DEFAULT_PORT, ConsoleServer, make_console

__all__ = ["console_cmd"]


def console_cmd(
    ctx: typer.Context,
    org: str | None = typer.Option(
        None, "--org", help="Serve this organisation's view (its own keys, its own token)."
    ),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=0, max=65535, help="Port (0: any)."),
    host: str = typer.Option(
        DEFAULT_HOST, "--host", help="Address to bind (default: loopback only)."
    ),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Serve the web console until SIGTERM or Ctrl-C.

    Log in with the organisation's token (``REFERRAL_CONSOLE_TOKEN_<ORG>``, e.g.
    ``REFERRAL_CONSOLE_TOKEN_POLICE_NL``) or the operator's
    (``REFERRAL_CONSOLE_TOKEN_OPERATOR``).
    """
    st = state(ctx)
    network = st.network(network_file)
    settings = st.settings
    if org is not None:
        network.organisation(org)
    server = ConsoleServer(make_console(settings, network, org), host, port)
    stop = service_stop_event()
    server.start()
    views = ([f"{org} ({token_env(org)})"] if org else []) + [f"{OPERATOR} ({token_env(OPERATOR)})"]
    console.print(escape(f"console at {server.url} for {', '.join(views)}"), markup=False)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    console.print("console stopped")
