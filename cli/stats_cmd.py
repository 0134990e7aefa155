"""``referral stats [verify]``: the takedown figures from the signed ledger, and their check."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from typing import Any

import typer

from broker.errors import ConfigError
from broker.ledger.store import LedgerStore
from broker.operator.since import parse_since
from broker.security.keys import load_trust
from broker.takedown.figures import GROUPS, art22_report
from broker.takedown.stats import read_facts, store_figures, verify_figures
from broker.wire.codec import Codec
from cli.app import cell, console, escape, print_json, state
from cli.operator_cmd import local_note, sync_if_reachable
from cli.tables import new_table

__all__ = ["COLUMNS", "stats_cmd"]

#: The figures of a group, in the order the table and the CSV show them.
COLUMNS = (
    "items",
    "removed",
    "median_hours",
    "p90_hours",
    "removed_within_2_5d",
    "removed_within_3d",
    "removed_within_7d",
    "police_within_3d",
    "notices",
    "escalated",
    "not_illegal",
    "moved",
    "still_online",
)
_HEAD = ("items", "removed", "median h", "p90 h", "≤2.5d %", "≤3d %", "≤7d %", "police ≤3d %")


def _rows(figures: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    rows = [("overall", "all", figures["overall"])]
    for group in GROUPS:
        rows += [(group, key, row) for key, row in figures[f"by_{group}"].items()]
    return rows


def _print_tables(figures: dict[str, Any]) -> None:
    if not figures["overall"]["items"]:
        console.print("no takedown trail in the ledger yet", markup=False)
        return
    for group in ("overall", *GROUPS):
        table = new_table(f"time to removal: {group}", console.width < 100)
        table.add_column(group if group != "overall" else "")
        for head in _HEAD:
            table.add_column(head, justify="right")
        for name, key, row in _rows(figures):
            if name == group:
                cells = [row[c] for c in COLUMNS[: len(_HEAD)]]
                table.add_row(cell(key), *(cell("–" if v is None else v) for v in cells))
        console.print(table)


def _print_art22(report: dict[str, Any]) -> None:
    table = new_table("notices by provider (DSA Art. 22)", console.width < 100)
    for head in ("provider", "items", "notices", "actions", "median h to action"):
        table.add_column(head)
    for provider, row in report["providers"].items():
        notices = ", ".join(f"{k.lower()} {v}" for k, v in sorted(row["notices"].items()))
        actions = ", ".join(f"{k.lower()} {v}" for k, v in sorted(row["actions"].items()))
        hours = row["median_hours_to_action"]
        table.add_row(
            cell(provider),
            cell(row["items_notified"]),
            cell(notices),
            cell(actions),
            cell("–" if hours is None else hours),
        )
    console.print(table)


def _verify(ctx: typer.Context, as_json: bool) -> None:
    st = state(ctx)
    settings, network = st.settings, st.network()
    codec = Codec.from_settings(settings)
    with LedgerStore.for_settings(settings) as store:
        local_note(sync_if_reachable(settings, store))
        trust = load_trust(network, settings.network_file)
        result = verify_figures(store, trust, codec=codec, allow_plain=network.network.allow_plain)
    if as_json:
        print_json(
            {
                "intact": result.intact,
                "entries": result.entries,
                "trail_events": result.events,
                "altered": [
                    {
                        "index": a.index,
                        "event_id": a.event_id,
                        "referral_id": a.referral_id,
                        "kind": a.kind,
                        "detail": a.detail,
                    }
                    for a in result.altered
                ],
                "changed": [{"figure": n, "store": s, "signed": g} for n, s, g in result.changed],
                "other_breaches": result.other_breaches,
                "figures": result.figures,
            }
        )
    else:
        for line in result.lines():
            console.print(escape(line), markup=False, soft_wrap=True)
    if not result.intact:
        raise typer.Exit(1)


def stats_cmd(
    ctx: typer.Context,
    what: str | None = typer.Argument(
        None, help="`verify`: recompute every figure from the signed events."
    ),
    since: str = typer.Option(
        "all", "--since", help="Items opened this long ago (24h, 7d, a date) or 'all'."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    as_csv: bool = typer.Option(False, "--csv", help="One CSV row per group."),
    art22: bool = typer.Option(
        False, "--dsa-art22", help="A trusted flagger's report: notices by provider and action."
    ),
    sync: bool = typer.Option(True, "--sync/--no-sync", help="Sync the ledger store first."),
) -> None:
    """Time to removal and reporting to police, by provider, hosting country, route and hotline."""
    if what not in (None, "verify"):
        raise ConfigError(f"stats: unknown {escape(what)!r} (expected `verify` or nothing)")
    if as_json and as_csv:
        raise ConfigError("stats: give --json or --csv, not both")
    if what == "verify":
        _verify(ctx, as_json)
        return
    st = state(ctx)
    settings = st.settings
    start = parse_since(since, datetime.now(UTC))
    since_ms = None if start is None else int(start.timestamp() * 1000)
    with LedgerStore.for_settings(settings) as store:
        local_note(sync_if_reachable(settings, store) if sync else None)
        path = store.path
    if art22:
        report = art22_report(read_facts(path), since_ms)
        print_json(report) if as_json else _print_art22(report)
        return
    figures = store_figures(path, since_ms)
    if as_json:
        print_json(figures)
    elif as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(("group", "key", *COLUMNS))
        for name, key, row in _rows(figures):
            writer.writerow((name, key, *("" if row[c] is None else row[c] for c in COLUMNS)))
    else:
        _print_tables(figures)
