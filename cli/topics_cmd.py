"""``referral topics provision|list``: topics, message counts and consumer-group lag."""

from __future__ import annotations

from pathlib import Path

import typer

from broker.kafka import clients
from broker.kafka.clients import admin_client, resolve_bootstrap
from broker.kafka.provision import provision
from broker.operator.topics import deployment_topics, topic_stats
from cli.app import NETWORK_OPTION, App, cell, console, print_json, state
from cli.tables import WIDE_OPTION, is_narrow, new_table, print_table

__all__ = ["app", "list_cmd", "provision_cmd"]

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
    counts: bool | None = typer.Option(
        None,
        "--counts/--no-counts",
        help="Message counts and consumer-group lag (default: on for the table; "
        "--json keeps its topic → partitions map unless --counts is given).",
    ),
    exact: bool = typer.Option(
        False, "--exact", help="Count every topic by reading it (small topics always are)."
    ),
    all_topics: bool = typer.Option(
        False, "--all", help="Every topic on the broker, not only this deployment's prefix."
    ),
    wide: bool = WIDE_OPTION,
) -> None:
    """List the broker's topics with partition counts, message counts and group lag."""
    st = state(ctx)
    settings = st.settings
    prefix = settings.topic_prefix
    admin = admin_client(settings)
    try:
        found = deployment_topics(admin, prefix, every=all_topics)
        with_counts = counts if counts is not None else not as_json
        stats = None
        if with_counts:
            consumer = clients.consumer(settings, group_id=None, role="topics-count")
            try:
                stats = topic_stats(admin, consumer, found, group_prefix=prefix, exact=exact)
            finally:
                consumer.close()
    finally:
        admin.close()
    where = resolve_bootstrap(settings)
    if as_json:
        if stats is None:
            print_json(found)
        else:
            print_json({"broker": where, "topics": {t: s.to_json() for t, s in stats.items()}})
        return
    narrow = is_narrow(wide)
    # Narrow: names without this deployment's prefix (the title names it once).
    cut = len(prefix) if narrow and prefix else 0

    def shown(name: str) -> str:
        return name[cut:] if cut and name.startswith(prefix or "") else name

    title = f"topics on {where}" + (f", prefix {prefix}" if cut else "")
    table = new_table(title, narrow)
    table.add_column("topic", overflow="fold")
    table.add_column("parts" if narrow else "partitions", justify="right")
    if stats is None:
        for name, parts in found.items():
            table.add_row(cell(shown(name)), str(parts))
        console.print(table)
        return
    cols = ("messages", "group lag") if narrow else ("messages", "counted by", "group lag")
    for col in cols:
        table.add_column(col, justify="right" if col == "messages" else "left", overflow="fold")
    for name, s in stats.items():
        lag = ", ".join(f"{g}: {n}" for g, n in sorted(s.lag.items())) or "-"
        if narrow:
            table.add_row(cell(shown(name)), str(s.partitions), str(s.messages), cell(lag))
        else:
            table.add_row(cell(name), str(s.partitions), str(s.messages), s.source_label, cell(lag))
    print_table(table, whole=not narrow)
    console.print(
        f"counts from {where}: 'read' = records a consumer read from the start; "
        "'ListOffsets' = the broker's reported offsets (the embedded broker's may omit "
        "the last batch; use --exact)"
    )
    if stats and any(s.lag_error for s in stats.values()):
        console.print(f"group lag unavailable: {next(s.lag_error for s in stats.values())}")
