"""``referral topics provision|list``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from broker.clients import admin_client, resolve_bootstrap
from broker.provision import describe_topics, provision
from cli.app import NETWORK_OPTION, App, console, print_json, state

app = App(help="Provision and list the network's topics.")


@app.command("provision")
def provision_cmd(
    ctx: typer.Context,
    network_file: Path | None = NETWORK_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create every topic the network needs; a second run changes nothing."""
    st = state(ctx)
    network = st.network(network_file)
    admin = admin_client(st.settings)
    try:
        report = provision(admin, network, st.settings.topic_names())
    finally:
        admin.close()
    if as_json:
        print_json(
            {"created": report.created, "existing": report.existing, "changed": report.changed}
        )
        return
    for name, parts in report.created.items():
        console.print(f"created  {name} ({parts} partitions)")
    for name, (want, have) in report.mismatched.items():
        console.print(f"[yellow]warning[/]: {name} has {have} partitions, network wants {want}")
    if report.changed:
        console.print(
            f"{len(report.created)} topic(s) created, {len(report.existing)} already present "
            f"on {resolve_bootstrap(st.settings)}"
        )
    else:
        console.print(
            f"nothing to do: all {len(report.existing)} topics already exist "
            f"on {resolve_bootstrap(st.settings)}"
        )


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the broker's topics with partition counts."""
    st = state(ctx)
    admin = admin_client(st.settings)
    try:
        found = describe_topics(admin)
    finally:
        admin.close()
    if as_json:
        print_json(found)
        return
    table = Table(title=f"topics on {resolve_bootstrap(st.settings)}")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    for name, parts in found.items():
        table.add_row(name, str(parts))
    console.print(table)
