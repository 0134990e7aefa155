"""``referral demo``: start the embedded broker, provision the demo network, show it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from broker.clients import admin_client
from broker.config import Settings
from broker.embedded import EmbeddedBroker
from broker.provision import provision
from cli.app import NETWORK_OPTION, console, state


def demo(ctx: typer.Context, network_file: Path | None = NETWORK_OPTION) -> None:
    """Run the demo on a fresh embedded broker, then stop it."""
    st = state(ctx)
    network = st.network(network_file)
    st.settings.state_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=st.settings.state_dir / "demo-broker.log") as broker:
        console.print(f"embedded broker started at {broker.bootstrap}")
        settings = Settings(**{**st.settings.model_dump(), "bootstrap_servers": broker.bootstrap})
        admin = admin_client(settings)
        try:
            report = provision(admin, network, st.settings.topic_names())
        finally:
            admin.close()
        table = Table(title=f"{network.network.name}: provisioned topics")
        table.add_column("topic")
        table.add_column("partitions", justify="right")
        for name, parts in sorted({**report.created, **report.existing}.items()):
            table.add_row(name, str(parts))
        console.print(table)
    console.print("embedded broker stopped")
