"""The ``referral`` command: global options and the command groups."""

from __future__ import annotations

from pathlib import Path

import typer

import cli.connector_cmd as connector_cmd
import cli.operator_cmd as operator_cmd
import cli.show_cmd as show_cmd
from cli import (
    broker_cmd,
    config_cmd,
    console_cmd,
    demo_cmd,
    erase_cmd,
    inbox_cmd,
    keys_cmd,
    known_cmd,
    receipt_cmd,
    request_cmd,
    retention_cmd,
    router_cmd,
    schema_cmd,
    stats_cmd,
    takedown_cmd,
    topics_cmd,
)
from cli.app import App, CliState, configure_logging, fit_consoles

__all__ = ["app", "main"]

app = App(help="referral-broker: cross-border case referrals over Kafka, traced end to end.")
app.add_typer(broker_cmd.app, name="broker")
app.add_typer(topics_cmd.app, name="topics")
app.add_typer(schema_cmd.app, name="schema")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(known_cmd.app, name="known")
app.add_typer(config_cmd.app, name="config")
app.add_typer(config_cmd.network_app, name="network")
app.command("demo")(demo_cmd.demo)
app.command("route")(router_cmd.route)
app.add_typer(router_cmd.dlq_app, name="dlq")
app.add_typer(connector_cmd.app, name="connector")
app.command("publish")(connector_cmd.publish)
app.command("check")(connector_cmd.check)
app.command("outbox")(connector_cmd.outbox)
app.command("status")(connector_cmd.status)
app.command("inbox")(inbox_cmd.inbox_cmd)
app.command("retention")(retention_cmd.retention_cmd)
app.command("erase")(erase_cmd.erase_cmd)
app.command("show")(show_cmd.show_cmd)
app.add_typer(operator_cmd.ledger_app, name="ledger")
app.command("trace")(operator_cmd.trace_cmd)
app.command("receipt")(receipt_cmd.receipt_cmd)
app.command("flows")(operator_cmd.flows_cmd)
app.command("tail")(operator_cmd.tail)
app.command("console")(console_cmd.console_cmd)
app.add_typer(request_cmd.app, name="request")
app.command("stats")(stats_cmd.stats_cmd)
app.add_typer(takedown_cmd.app, name="takedown")


@app.callback()
def root(
    ctx: typer.Context,
    bootstrap_servers: str | None = typer.Option(
        None,
        "--bootstrap-servers",
        "-b",
        envvar="REFERRAL_BOOTSTRAP_SERVERS",
        help="Kafka bootstrap servers (host:port,...). Default: the detached embedded broker.",
    ),
    network_file: Path | None = typer.Option(
        None,
        "--network",
        "-n",
        envvar="REFERRAL_NETWORK_FILE",
        help=(
            "Network file (TOML). Default: the state directory's network.toml, "
            "else examples/network.toml."
        ),
    ),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", envvar="REFERRAL_STATE_DIR", help="State directory. Default: .referral"
    ),
) -> None:
    """Global options; every command reads its settings from here."""
    configure_logging()
    fit_consoles()
    ctx.obj = CliState(
        overrides={
            "bootstrap_servers": bootstrap_servers,
            "network_file": network_file,
            "state_dir": state_dir,
        }
    )


def main() -> None:
    """Console-script entry point."""
    app(prog_name="referral")
