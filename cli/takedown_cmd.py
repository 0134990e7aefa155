"""``referral takedown status ORG``: a hotline's takedown desk, items by step (ids, no URLs)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer

from broker.errors import ConfigError
from broker.takedown.desk_store import DESK_FILE, PLACES, DeskItem, DeskStore
from cli.app import App, cell, console, print_json, state
from cli.tables import new_table

__all__ = ["app", "status_cmd"]

app = App(help="The takedown desk: notices to hosting providers until items are gone.")


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _row(s: DeskItem) -> dict[str, Any]:
    return {
        "item_id": s.item.item_id,
        "referral_id": s.item.referral_id,
        "provider": s.item.provider,
        "country": s.item.country,
        "route": s.item.route,
        "step": s.where,
        "cadence_step": s.step,
        "opened": _when(s.opened_ms),
        "due": _when(s.due_ms),
        "first_notice": _when(s.first_notice_ms),
        "last_notice": _when(s.last_notice_ms),
    }


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="The hotline whose desk to list."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every item on the desk by step: ids, provider, times (never a URL)."""
    path = state(ctx).settings.org_dir(org) / DESK_FILE
    if not path.exists():
        raise ConfigError(f"{org} has no takedown desk yet ({path} does not exist)")
    store = DeskStore(path)
    try:
        items = list(store.load())
    finally:
        store.close()
    rows = sorted((_row(s) for s in items), key=lambda r: (PLACES.index(r["step"]), r["opened"]))
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"{org}: no item on the takedown desk", markup=False)
        return
    table = new_table(f"takedown desk of {org}", console.width < 120)
    for head in ("step", "item", "referral", "provider", "cc", "opened", "due", "last notice"):
        table.add_column(head)
    for r in rows:
        step = r["step"] + (f" {r['cadence_step']}" if r["step"] == "notified" else "")
        values = (step, r["item_id"], r["referral_id"], r["provider"], r["country"])
        table.add_row(*(cell(v) for v in (*values, r["opened"], r["due"], r["last_notice"])))
    console.print(table)
