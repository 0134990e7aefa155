"""``referral inbox ORG``: the liaison's list of what the organisation received.

Thin: reads the organisation's inbox store (``connectors/inbox.py``), builds
the pure view (``connectors/inbox_view.py``) and prints a table that fits the
terminal (short ids and compact times; ``--wide`` for everything), or exports
it with ``--json`` / ``--csv``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from broker.errors import ConfigError
from broker.ids import short_id
from broker.known.views import HIDE_HINT, inbox_marks, known_only, mark_lines
from broker.operator.since import parse_since
from broker.receiver.inbox import Inbox
from broker.receiver.inbox_view import InboxEntry, entries, select, to_csv
from broker.requests.store import RequestRow, overdue_owed
from cli.app import NETWORK_OPTION, cell, console, err_console, escape, print_json, state
from cli.tables import WIDE_OPTION, is_narrow, new_table, print_table

__all__ = ["inbox_cmd", "print_inbox", "print_owed_requests"]


def inbox_cmd(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="The receiving organisation."),
    since: str = typer.Option(
        "all", "--since", help="Received this long ago (24h, 7d), since an ISO date, or 'all'."
    ),
    search: str | None = typer.Option(
        None,
        "--search",
        "-s",
        help="Part of a case id or an external reference (ICCAM:123), or an id prefix.",
    ),
    unacknowledged: bool = typer.Option(
        False, "--unacknowledged", "-u", help="Only referrals not answered beyond RECEIVED."
    ),
    overdue: bool = typer.Option(False, "--overdue", help="Only overdue referrals."),
    hide_known: bool = typer.Option(
        False,
        "--hide-known",
        help="Leave out referrals every item of which was assessed before by a member"
        " (exact or confirmed near-duplicate); a line says how many.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV export (header row first)."),
    wide: bool = WIDE_OPTION,
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """What ORG received: urgent, then high priority, first; searchable and exportable."""
    if as_json and as_csv:
        raise ConfigError("--json and --csv: choose one")
    st = state(ctx)
    network = st.network(network_file)
    network.organisation(org)
    path = st.settings.org_dir(org) / "inbox.sqlite3"
    now = datetime.now(UTC)
    start = parse_since(since, now)
    marks: dict[str, list[dict[str, object]]] = {}
    hidden: set[str] = set()
    if not path.exists():
        received = []
    else:
        store = Inbox(path)
        try:
            received = store.received()
            marks = inbox_marks(st.settings, org, store, received)  # known content (issue 24)
            if hide_known:
                counts = {
                    r.referral_id: len(store.item_ids(r.origin_org, r.referral_id))
                    for r in received
                }
                hidden = known_only(marks, counts)
        finally:
            store.close()
    all_entries = entries(received, network.deadlines, now)
    # A search lists every match: an id prefix naming several referrals shows them all.
    shown = select(
        all_entries, since=start, search=search, unacknowledged=unacknowledged, overdue=overdue
    )
    if hide_known:
        kept = [e for e in shown if e.referral_id not in hidden]
        err_console.print(
            f"{len(shown) - len(kept)} referral(s) {HIDE_HINT} hidden (--hide-known)", markup=False
        )
        shown = kept
    if as_json:
        print_json(
            [{**e.to_json(), "previously_assessed": marks.get(e.referral_id, [])} for e in shown]
        )
        return
    if as_csv:
        sys.stdout.write(to_csv(shown))
        return
    print_inbox(shown, org, now, wide=wide)
    for line in mark_lines(marks, [e.referral_id for e in shown]):
        console.print(escape(line), markup=False, soft_wrap=False)
    owed = overdue_owed(st.settings.org_dir(org) / "requests.sqlite3", int(now.timestamp() * 1000))
    print_owed_requests(owed, org, now, listed=overdue, wide=wide)


def print_owed_requests(
    rows: list[RequestRow], org: str, now: datetime, *, listed: bool, wide: bool = False
) -> None:
    """Police requests ``org`` owes past their limit (issue 26): listed, or else one line."""
    if not rows:
        return
    head = f"{org}: {len(rows)} police request(s) owed past their limit"
    if not listed:
        console.print(escape(head + f" (referral inbox {org} --overdue lists them)"), markup=False)
        return
    console.print(escape(head), markup=False)
    table = new_table(None, is_narrow(wide))
    for c in ("request", "asked by", "case", "urgency", "due", "delay"):
        table.add_column(c, no_wrap=c != "case", overflow="fold")
    for r in rows:
        due = datetime.fromtimestamp(r.due_at / 1000, UTC)
        table.add_row(
            cell(r.request_id if wide else short_id(r.request_id)),
            cell(r.counterpart),
            cell(r.case_id),
            cell(("urgent " if r.urgent else "") + r.access.lower()),
            cell(_iso(due) if wide else _compact(due, now)),
            cell(r.delay_reason or "-"),
        )
    print_table(table, whole=not is_narrow(wide))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compact(at: datetime, now: datetime) -> str:
    """``14:03`` today, ``11-22 14:03`` this year, else the date (all UTC)."""
    at, now = at.astimezone(UTC), now.astimezone(UTC)
    if at.date() == now.date():
        return at.strftime("%H:%M")
    if at.year == now.year:
        return at.strftime("%m-%d %H:%M")
    return at.strftime("%Y-%m-%d")


def print_inbox(items: list[InboxEntry], org: str, now: datetime, *, wide: bool = False) -> None:
    """Print the inbox for people; at 80 columns the least important columns are dropped."""
    urgent = sum(e.urgent for e in items)
    late = sum(e.overdue for e in items)
    open_ = sum(not e.acknowledged for e in items)
    console.print(
        escape(
            f"{org}: {len(items)} referral(s), {urgent} urgent,"
            f" {open_} not acknowledged, {late} overdue"
        ),
        markup=False,
    )
    if not items:
        return
    narrow = is_narrow(wide)
    table = new_table(None, narrow)
    cols = ["id", "!", "received", "origin", "case", "status", "due"]
    if not narrow:
        cols += ["external refs", "sinks"]
    for c in cols:
        table.add_column(c, no_wrap=c != "case", overflow="fold")
    for e in items:
        flag = ("U" if e.urgent else "H" if e.high else "") + ("!" if e.overdue else "")
        row = [
            cell(e.referral_id if wide else short_id(e.referral_id)),
            cell(flag),
            cell(
                e.received_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                if wide
                else _compact(e.received_at, now)
            ),
            cell(e.origin_org),
            cell(e.case_id + (f" (v{e.version})" if e.version > 1 else "")),
            cell(e.status),
            cell(_iso(e.due_at) if wide else _compact(e.due_at, now)),
        ]
        if not narrow:
            row += [cell(", ".join(e.external_refs)), cell(", ".join(e.sinks))]
        table.add_row(*row)
    print_table(table, whole=not narrow)
    console.print(
        "U = urgent, H = high priority, ! = overdue, (vN) = amended by its origin;"
        " --wide shows whole ids, times and every column"
    )
