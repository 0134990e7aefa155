"""``referral show ID``: one received referral in full, without its content.

Its body is opened, so each run is on the consultation log (path ``show``).

The envelope, every item with its whole id (what ``referral status --item``
takes), the version and the earlier ones kept, and the handover history the
organisation took part in: the console's referral page (``console.liaison``)
for the terminal. URLs and hashes are never printed.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from broker.errors import ConfigError
from broker.ids import resolve_id, short_id
from broker.known.index import PreviouslyAssessed
from broker.known.views import hidden_items, item_marks
from broker.network import Network
from broker.operator.consultation import SHOW
from broker.receiver.inbox import Inbox
from broker.wire.codec import Codec
from cli.app import NETWORK_OPTION, cell, console, escape, print_json, state
from cli.tables import compact_time, new_table, print_table
from console.liaison import LiaisonDesk, ReferralView

__all__ = ["print_referral", "show_cmd"]


def _holders(settings: Any, network: Network, given: str) -> tuple[str, list[str]]:
    """The referral id ``given`` names and the organisations here whose inbox holds it."""
    held: dict[str, list[str]] = {}
    for org in network.organisations:
        path = settings.org_dir(org.id) / "inbox.sqlite3"
        if not path.exists():
            continue
        inbox = Inbox(path)
        try:
            for rid in inbox.referral_ids():
                held.setdefault(rid, []).append(org.id)
        finally:
            inbox.close()
    rid = resolve_id(given, held)
    if rid not in held:
        raise ConfigError(f"no organisation here received referral {given}")
    return rid, held[rid]


def show_cmd(
    ctx: typer.Context,
    referral_id: str = typer.Argument(..., help="The referral id (or an unambiguous prefix)."),
    org: str | None = typer.Option(
        None, "--as", help="The receiving organisation (if several here received it)."
    ),
    hide_known: bool = typer.Option(
        False,
        "--hide-known",
        help="Leave out the items a member assessed before (exact or confirmed near-duplicate).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """One referral in full: envelope, items with their ids, versions and history."""
    st = state(ctx)
    network = st.network(network_file)
    settings = st.settings
    if org is not None:
        network.organisation(org)  # UnknownName naming the nearest
    rid, holders = _holders(settings, network, referral_id)
    if org is None:
        if len(holders) > 1:
            raise ConfigError(
                f"referral {rid} was received by {', '.join(holders)}: choose one with --as"
            )
        org = holders[0]
    elif org not in holders:
        raise ConfigError(f"{org} has not received referral {rid} ({', '.join(holders)} did)")
    desk = LiaisonDesk(settings, network, org, Codec.from_settings(settings))
    try:
        view = desk.referral(rid, path=SHOW, why=f"referral show by {getpass.getuser()}")
    finally:
        desk.close()
    known = item_marks(settings, org, rid)  # known content (issue 24)
    hidden = hidden_items(known) if hide_known else set()
    if as_json:
        print_json(_to_json(view, org, known, hidden))
        return
    print_referral(view, org, datetime.now(UTC), known, hidden=hidden)


def _to_json(
    view: ReferralView,
    org: str,
    known: Mapping[str, PreviouslyAssessed],
    hidden: AbstractSet[str] = frozenset(),
) -> dict[str, Any]:
    env = view.envelope
    return {
        "referral_id": env.get("referral_id"),
        "received_by": org,
        "envelope": env,
        "version": view.version,
        "status": view.current.value if view.current else "RECEIVED",
        "allowed_next": [s.value for s in view.allowed],
        "items": [
            {
                "item_id": i.item_id,
                "media_type": i.media_type,
                "legal_status": i.legal_status,
                "hosting_country": i.hosting_country,
                "outcome": i.outcome,
                "moved_to": i.moved_to,
                "previously_assessed": (known[i.item_id].to_json() if i.item_id in known else None),
            }
            for i in view.items
            if i.item_id not in hidden
        ],
        "known_items_hidden": len(hidden),
        "earlier_versions": [v.version for v in view.earlier],
        "history": [r.to_json() for r in view.history],
    }


def _line(text: str) -> None:
    console.print(escape(text), markup=False, soft_wrap=True)


def _facts(view: ReferralView, org: str) -> list[tuple[str, str]]:
    env = view.envelope
    handling = env.get("handling") or {}
    refs = ", ".join(f"{r.get('system')}:{r.get('id')}" for r in env.get("external_refs") or [])
    places = ", ".join(
        f"{j.get('country')} ({j.get('basis')})" for j in env.get("jurisdictions") or []
    )
    version = f"v{view.version}" + (
        " (earlier kept: " + ", ".join(f"v{v.version}" for v in view.earlier) + ")"
        if view.earlier
        else ""
    )
    facts = [
        ("case", str(env.get("case_id") or "")),
        ("origin", f"{env.get('origin_org')} ({env.get('origin_country')})"),
        ("priority", str(env.get("priority") or "")),
        ("handling", f"TLP:{view.tlp} {handling.get('handling_code') or ''}".strip()),
        ("jurisdictions", places or "-"),
        ("external refs", refs or "-"),
        ("received by", f"{org} on {view.record.topic}"),
        ("version", version),
        ("status", view.current.value if view.current else "RECEIVED"),
        ("allowed next", ", ".join(s.value for s in view.allowed) or "nothing (final)"),
    ]
    if view.parent is not None:
        facts.append(("re-referral of", view.parent.referral_id))
    facts += [(f"item {c.item_id} moved", f"{c.country}: {c.referral_id}") for c in view.children]
    return facts


def print_referral(
    view: ReferralView,
    org: str,
    now: datetime,
    known: Mapping[str, PreviouslyAssessed] | None = None,
    *,
    hidden: AbstractSet[str] = frozenset(),
) -> None:
    """Print a referral for people: facts, items (whole ids), what was known, its history;
    the ``hidden`` items (known before) left out, with a line saying how many."""
    _line(f"referral {view.envelope.get('referral_id')}")
    facts = _facts(view, org)
    pad = max(len(k) for k, _ in facts)
    for key, value in facts:
        _line(f"  {key:<{pad}}  {value}")
    listed = [i for i in view.items if i.item_id not in hidden]
    items = new_table(f"{len(view.items)} item(s)", narrow=True)
    for col in ("item", "media", "legal status", "host", "outcome"):
        items.add_column(col, no_wrap=True)
    for i in listed:
        outcome = (i.outcome or "-") + (f" (moved to {i.moved_to})" if i.moved_to else "")
        items.add_row(
            cell(i.item_id),
            cell(i.media_type),
            cell(i.legal_status),
            cell(i.hosting_country or "-"),
            cell(outcome),
        )
    print_table(items, whole=True)
    if hidden:
        _line(f"{len(hidden)} item(s) assessed before hidden (--hide-known)")
    for i in listed:
        hit = (known or {}).get(i.item_id)
        if hit is not None:
            _line(f"item {short_id(i.item_id)}: {hit.line()}")
    history = new_table(f"history ({len(view.history)} hop(s))", narrow=True)
    for col in ("time", "event", "actor", "to", "topic"):
        history.add_column(col, no_wrap=col != "to")  # several recipients wrap, ids stay whole
    for r in sorted(view.history, key=lambda h: h.at):
        history.add_row(
            compact_time(r.at, now),
            cell(r.event),
            cell(r.actor),
            cell(", ".join(r.to_orgs)),
            cell(r.topic or ""),
        )
    console.print(history)
    _line("item ids are what `referral status ORG ID STATUS --item ITEM_ID=OUTCOME` takes")
