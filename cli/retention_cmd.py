"""``referral retention ORG``: apply the network's retention rules to what ORG received."""

from __future__ import annotations

from pathlib import Path

import typer

from broker.ids import short_id
from broker.receiver.erasure import ReceiverEraser, RetentionSweep, shredder_for
from broker.receiver.inbox import Inbox
from cli.app import NETWORK_OPTION, cell, console, print_json, state
from cli.tables import is_narrow, new_table
from connectors.runtime import build_sinks

__all__ = ["retention_cmd"]


def retention_cmd(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="The receiving organisation."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what is due."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Erase what ORG's retention rules make due (the connector does this on its own daily)."""
    st = state(ctx)
    network = st.network(network_file)
    network.organisation(org)
    sinks = build_sinks(st.settings, network, org)
    inbox = Inbox.for_org(st.settings, org)
    shredder = shredder_for(st.settings, network, org)
    for s in sinks:
        s.open()
    try:
        eraser = ReceiverEraser(st.settings, org, sinks, inbox, shredder)
        sweep = RetentionSweep(eraser, network.retention)
        due = sweep.due()
        if not dry_run:
            sweep.sweep()
    finally:
        for s in sinks:
            s.close()
        inbox.close()
        if shredder is not None:
            shredder.close()
    rows = [
        {
            "origin_org": d.candidate.origin_org,
            "referral_id": d.candidate.referral_id,
            "rule_days": d.rule.after_days,
            "since": d.since.isoformat(),
            "erased": not dry_run,
        }
        for d in due
    ]
    if as_json:
        print_json(rows)
        return
    if not network.retention.rules:
        console.print("no [retention] rules in the network file: nothing is due", markup=False)
        return
    table = new_table(f"retention at {org}", is_narrow(False))
    for column in ("referral", "origin", "rule", "since"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            short_id(str(r["referral_id"])),
            cell(str(r["origin_org"])),
            f"{r['rule_days']:g} days",
            str(r["since"])[:16],
        )
    console.print(table)
    verb = "due (dry run, nothing erased)" if dry_run else "erased"
    console.print(f"{len(rows)} referral(s) {verb} at {org}")
