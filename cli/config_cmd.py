"""``referral config show`` and ``referral network check``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from broker.config import setting_sources
from broker.kafka.clients import embedded_bootstrap
from broker.network import load_network
from cli.app import App, cell, console, print_json, state

__all__ = ["app", "check", "network_app", "show"]

app = App(help="Show the effective configuration.")
network_app = App(help="Validate the network file.")


@app.command("show")
def show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print the effective settings (secrets masked) and where each came from."""
    settings = state(ctx).settings
    masked = settings.masked()
    sources: dict[str, str] = dict(setting_sources(settings))
    if not settings.bootstrap_servers:
        embedded = embedded_bootstrap(settings.state_dir)
        if embedded:
            masked["bootstrap_servers"] = embedded
            sources["bootstrap_servers"] = "state directory"
    if as_json:
        print_json({k: {"value": v, "from": sources[k]} for k, v in masked.items()})
        return
    table = Table(title="effective settings")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("from")
    for key, value in sorted(masked.items()):
        table.add_row(cell(key), cell("" if value is None else str(value)), sources[key])
    console.print(table)


@network_app.command("check")
def check(
    ctx: typer.Context,
    path: Path | None = typer.Argument(None, help="Network file (default: the configured one)."),
) -> None:
    """Validate a network file: one line per problem, exit 2 if there are any."""
    target = path if path is not None else state(ctx).settings.network_file
    network = load_network(target)
    rules = network.routing.rules
    routing = "flat routing" if rules is None else f"routing by role ({len(rules)} rules)"
    console.print(
        f"{target}: ok — {len(network.organisations)} organisations, "
        f"{len(network.served())} served jurisdictions, {routing}, "
        f"fallback {network.routing.fallback}",
        markup=False,
        soft_wrap=True,
    )
