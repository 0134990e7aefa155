"""The operator's commands: ``referral ledger sync|verify|show|checkpoint``, ``trace``, ``flows``,
``tail``.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from kafka import TopicPartition
from kafka.errors import KafkaError
from rich.markup import escape as rich_escape
from rich.table import Table

from broker.config import Settings
from broker.errors import ConfigError, KafkaBrokerError, KafkaUnavailable, UnknownName
from broker.ids import resolve_id, short_id
from broker.kafka import clients
from broker.kafka.reader import TopicReader
from broker.ledger.checkpoint import Checkpointer
from broker.ledger.store import LedgerStore, SyncReport
from broker.ledger.views import (
    Flows,
    HandoverRecord,
    RoleRoute,
    Trace,
)
from broker.operator.access import AccessRecorder
from broker.operator.consultation import TAIL_REVEAL, consultation_reason, consultations
from broker.operator.known_share import KnownShare, known_shares
from broker.operator.since import parse_since
from broker.operator.tail import decoded, record_view
from broker.operator.tail_start import Start, parse_start, positions
from broker.operator.views import (
    flows_view,
    role_routes_since,
    trace_view,
    verify_ledger,
    witness_report,
)
from broker.security.keys import ROUTER, LiveKeys, key_dir
from broker.security.signing import ledger_signer
from broker.wire.codec import Codec
from cli.app import App, cell, console, err_console, escape, print_json, state
from cli.tables import WIDE_OPTION, compact_time, is_narrow, new_table, print_table

__all__ = [
    "flows_cmd",
    "ledger_app",
    "print_flows",
    "print_known_shares",
    "print_trace",
    "tail",
    "trace_cmd",
]

ledger_app = App(help="The materialised, hash-chained handover ledger.")


def sync_if_reachable(settings: Settings, store: LedgerStore) -> str | None:
    """Sync the local ledger store; if no broker is configured or answers, say why (else None).

    ``trace`` and ``flows`` then answer from what the store holds.
    """
    try:
        bootstrap = clients.resolve_bootstrap(settings)
    except ConfigError:
        return "no broker configured"
    try:
        _sync(settings, store)
    except KafkaUnavailable:
        return f"no broker answered at {bootstrap}"
    return None


def local_note(why: str | None) -> None:
    """One line on stderr when an answer comes from the local ledger only."""
    if why is not None:
        err_console.print(
            escape(f"note: from the local ledger only ({why}; not synced)"),
            markup=False,
            soft_wrap=True,
        )


def known_referral(given: str, ids: list[str], why: str | None = None) -> str:
    """The referral id ``given`` names (whole or a prefix); UnknownName if the ledger has none."""
    referral_id = resolve_id(given, ids)
    if referral_id not in set(ids):
        raise UnknownName(
            "referral",
            referral_id,
            ids,
            " in the local ledger" + (f" ({why}; not synced)" if why else ""),
            cutoff=0.8,  # ids differ in every character; only a near-miss is worth naming
            empty="it holds no referral yet (run `referral ledger sync`)",
            list_known=False,
        )
    return referral_id


def _sync(settings: Settings, store: LedgerStore) -> SyncReport:
    return store.sync(settings, Codec.from_settings(settings))


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _span(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{sign}{seconds:.1f}s"
    if seconds < 7200:
        return f"{sign}{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{sign}{seconds / 3600:.1f}h"
    return f"{sign}{seconds / 86400:.1f}d"


def _parties(r: HandoverRecord) -> str:
    if r.from_party or r.to_party:
        return f"{r.from_party or '-'} → {r.to_party or '-'}"
    return ""


# -- ledger -----------------------------------------------------------------------------------


@ledger_app.command("sync")
def ledger_sync(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Copy new ledger records into the local hash-chained store (idempotent)."""
    settings = state(ctx).settings
    with LedgerStore.for_settings(settings) as store:
        report = _sync(settings, store)
        total = len(store)
    if as_json:
        print_json({**report.__dict__, "entries": total})
        return
    console.print(
        f"synced {report.topic}: {report.records} record(s) read, {report.added} entr(ies) "
        f"added, {report.repeated} repeat(s) skipped, {report.undecodable} undecodable; "
        f"{total} entries, next offset {report.next_offset}"
    )


@ledger_app.command("verify")
def ledger_verify(
    ctx: typer.Context,
    offline: bool = typer.Option(
        False, "--offline", help="Only what is held locally: no checkpoints or records from Kafka."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check every entry's signature, the chain, and every checkpoint held locally and on the
    topic; exit 1 naming every entry that fails, one line each."""
    st = state(ctx)
    settings = st.settings
    result = verify_ledger(settings, st.network(), Codec.from_settings(settings), offline=offline)
    witnessed = witness_report(settings, st.network())
    if as_json:
        breach = result.breach
        print_json(
            {
                "intact": result.intact,
                "entries": result.entries,
                "signed": result.signed,
                "checkpoints": result.heads,
                "holders": list(result.holders),
                "ignored_checkpoints": list(result.ignored_heads),
                "breach": None
                if breach is None
                else {"index": breach.index, "kind": breach.kind, "detail": breach.detail},
                "breaches": [
                    {"index": b.index, "kind": b.kind, "detail": b.detail} for b in result.breaches
                ],
                "tree_heads": [
                    {
                        "size": h.size,
                        "root": h.root.hex(),
                        "cosigners": sorted(h.cosigners),
                        "refused_by": sorted(h.refused_by),
                    }
                    for h in witnessed.heads
                ],
                "split_views": sorted(witnessed.splits),
            }
        )
    else:
        for line in str(result).splitlines():
            console.print(escape(line), markup=False, soft_wrap=True)
        for line in result.ignored_heads:
            console.print(escape(f"ignored checkpoint: {line}"), markup=False)
        for line in str(witnessed).splitlines() if result.intact or witnessed.splits else ():
            console.print(escape(line), markup=False, soft_wrap=True)
    if not result.intact or witnessed.splits:
        raise typer.Exit(1)


@ledger_app.command("checkpoint")
def ledger_checkpoint(ctx: typer.Context) -> None:
    """Publish a signed checkpoint of the ledger now, with the router's key (on demand)."""
    settings = state(ctx).settings
    keys = LiveKeys(key_dir(settings, ROUTER), ROUTER)
    if keys.current() is None:
        raise ConfigError(
            f"no router key in {key_dir(settings, ROUTER)} (run `referral keys init router`)"
        )
    producer = clients.producer(settings, role="checkpoint")
    try:
        checkpointer = Checkpointer(
            settings,
            Codec.from_settings(settings),
            keys,
            producer,
            store_path=settings.org_dir(ROUTER) / "ledger.sqlite3",
        )
        checkpoint = checkpointer.publish_now(force=True)
    finally:
        producer.close(10)
    assert checkpoint is not None
    console.print(
        escape(
            f"checkpoint published: {checkpoint.count} entries, head {checkpoint.head[:16]}…, "
            f"ledger offset {checkpoint.ledger_offset}"
        ),
        markup=False,
    )


@ledger_app.command("show")
def ledger_show(
    ctx: typer.Context,
    referral: str | None = typer.Option(
        None, "--referral", help="Only this referral id (or an unambiguous prefix)."
    ),
    consulted: str | None = typer.Option(
        None,
        "--consulted",
        metavar="REFERRAL_ID",
        help="The consultation log of this referral: who opened its body, when, why, how.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    wide: bool = WIDE_OPTION,
) -> None:
    """Show the stored ledger entries (run ``ledger sync`` first for the newest)."""
    settings = state(ctx).settings
    if consulted is not None:
        _show_consulted(settings, consulted, as_json)
        return
    with LedgerStore.for_settings(settings) as store:
        if referral is not None:
            referral = known_referral(referral, store.referral_ids())
        entries = store.entries(referral)
    if as_json:
        print_json([{**e.record.to_json(), "ledger_offset": e.ledger_offset} for e in entries])
        return
    title = f"ledger entries ({len(entries)})" + (f" of referral {referral}" if referral else "")
    narrow = is_narrow(wide)
    table = new_table(title, narrow)
    if narrow:
        for col in ("#", "time", "referral", "event", "actor", "topic"):
            table.add_column(col, overflow="fold")
    else:
        for col in ("#", "time", "event", "actor", "from → to", "topic", "reason", "referral"):
            table.add_column(col)
    now = datetime.now(UTC)
    for e in entries:
        r = e.record
        if narrow:
            table.add_row(
                str(e.index),
                compact_time(r.at, now),
                cell(short_id(r.referral_id)),
                cell(r.event),
                cell(r.actor),
                cell(r.topic),
            )
            continue
        table.add_row(
            str(e.index),
            _when(r.at),
            cell(r.event),
            cell(r.actor),
            cell(_parties(r)),
            cell(r.topic),
            cell(r.reason),
            cell(r.referral_id),
        )
    print_table(table, whole=not narrow)
    if narrow:
        console.print("times UTC, short ids; --wide adds parties, reasons and whole ids")


def _show_consulted(settings: Settings, given: str, as_json: bool) -> None:
    """The consultation log of one referral (Art. 25 LED), from the stored ledger."""
    with LedgerStore.for_settings(settings) as store:
        rid = known_referral(given, store.referral_ids())
        log = consultations(store.records(rid))
    if as_json:
        print_json([c.to_json() for c in log])
        return
    table = new_table(f"consultations of referral {rid} ({len(log)})", False)
    for col in ("time", "who", "path", "why", "copy"):
        table.add_column(col)
    for c in log:
        where = f"{c.topic}/{c.partition}@{c.offset}" if c.topic else "-"
        table.add_row(_when(c.at), cell(c.who), cell(c.path), cell(c.why), cell(where))
    print_table(table, whole=True)


# -- trace ------------------------------------------------------------------------------------


def trace_cmd(
    ctx: typer.Context,
    referral_id: str = typer.Argument(..., help="The referral id (or an unambiguous prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    sync: bool = typer.Option(True, "--sync/--no-sync", help="Sync the ledger store first."),
    wide: bool = WIDE_OPTION,
) -> None:
    """A referral's timeline across organisations and what is still awaited."""
    st = state(ctx)
    settings = st.settings
    network = st.network()
    with LedgerStore.for_settings(settings) as store:
        why = sync_if_reachable(settings, store) if sync else None
        referral_id = known_referral(referral_id, store.referral_ids(), why)
        records = store.records(referral_id)
    local_note(why)
    now = datetime.now(UTC)
    t = trace_view(settings, network, records, referral_id, now)
    if as_json:
        print_json(t.to_json())
        return
    print_trace(t, now, wide=wide)


def print_trace(t: Trace, now: datetime, *, wide: bool = False) -> None:
    """Print a referral's trace for people: its hops, route reasons, status and what is awaited."""
    narrow = is_narrow(wide)
    heads = [f"referral {t.referral_id}", f"case {t.case_id}  origin {t.origin or 'unknown'}"]
    if not narrow:  # narrow: the whole id on a line of its own
        heads = ["  ".join(heads)]
    for line in heads:
        console.print(escape(line), markup=False, soft_wrap=True)
    if len(t.origins) > 1:
        console.print(
            escape(
                f"warning: {len(t.origins)} organisations used this referral id "
                f"({', '.join(t.origins)}); their hops are shown together"
            ),
            markup=False,
        )
    print_table(_hop_table(t, now, narrow), whole=not narrow)
    if narrow:
        console.print("times UTC; --wide adds positions, senders, intervals and reasons")
    _print_trace_notes(t, now)


def _hop_table(t: Trace, now: datetime, narrow: bool) -> Table:
    """The trace's hops as a table (narrow: fewer columns, compact times)."""
    table = new_table(f"{len(t.hops)} hop(s)", narrow)
    if narrow:  # the route reasons follow the table; "since prev" is the least needed
        for col in ("time", "event", "actor", "to", "topic"):
            table.add_column(col, overflow="fold", no_wrap=col in ("time", "topic"))
    else:
        for col in ("#", "time", "since prev", "event", "actor", "from → to", "topic", "reason"):
            table.add_column(col)
    for hop in t.hops:
        r = hop.record
        topic = r.topic or ""
        if hop.jurisdiction and not narrow:
            topic += f" ({hop.jurisdiction})"
        if narrow:
            table.add_row(
                compact_time(r.at, now),
                cell(r.event),
                cell(r.actor),
                cell(", ".join(r.to_orgs)),
                cell(topic),
            )
            continue
        table.add_row(
            str(r.index if r.index is not None else ""),
            _when(r.at),
            _span(hop.since_previous),
            cell(r.event),
            cell(r.actor),
            cell(_parties(r)),
            cell(topic),
            cell(r.reason),
        )
    return table


def _print_trace_notes(t: Trace, now: datetime) -> None:
    """What follows the hops: route reasons, status, versions, items, family, what is awaited."""
    for topic, reason in sorted(t.route_reasons.items()):
        console.print(escape(f"routed to {topic}: {reason}"), markup=False)
    if t.status is not None and t.status_at is not None:
        console.print(
            escape(
                f"status: {t.status} from {t.status_by or '?'} at {_when(t.status_at)} "
                "(current by lifecycle, verified by the origin)"
            ),
            markup=False,
        )
        if len(t.statuses) > 1:
            each = ", ".join(f"{org} {status}" for org, status in sorted(t.statuses.items()))
            console.print(escape(f"statuses: {each}"), markup=False)
    else:
        console.print("status: none yet")
    if t.amendments:
        console.print(
            escape(
                f"version {max(t.amendments)} (amended by the origin: versions 1-"
                f"{max(t.amendments)})"
            ),
            markup=False,
        )
    for org, summary in sorted(t.outcomes.items()):
        console.print(escape(f"items from {org}: {summary}"), markup=False)
    for child in t.children:
        console.print(
            escape(
                f"re-referred: item {short_id(child.item_id)} moved to {child.country}"
                f" -> referral {child.child_referral_id}"
            ),
            markup=False,
            soft_wrap=True,
        )
    if t.parent is not None:
        console.print(
            escape(
                f"re-referral of referral {t.parent.parent_referral_id}"
                f" (item {short_id(t.parent.item_id)} moved)"
            ),
            markup=False,
            soft_wrap=True,
        )
    for org, at in sorted(t.received.items()):
        console.print(escape(f"received by {org} at {_when(at)}"), markup=False)
    if not t.awaited:
        console.print("awaited: nothing")
    for a in t.awaited:
        where = f"{a.topic} ({a.jurisdiction})" if a.jurisdiction else a.topic
        lane = "urgent " if a.urgent else ""
        if a.overdue:
            console.print(
                "[red]OVERDUE[/]: "
                + rich_escape(
                    escape(
                        f"RECEIVED from {a.org} on {where}, {lane}deadline "
                        f"{_when(a.due)}, late by {_span(a.late_by(now))[1:]}"
                    )
                )
            )
        else:
            console.print(
                escape(f"awaited: RECEIVED from {a.org} on {where}, {lane}deadline {_when(a.due)}"),
                markup=False,
            )


# -- flows ------------------------------------------------------------------------------------


def flows_cmd(
    ctx: typer.Context,
    since: str = typer.Option(
        "24h", "--since", help="Referrals first seen this long ago (or 'all')."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    sync: bool = typer.Option(True, "--sync/--no-sync", help="Sync the ledger store first."),
) -> None:
    """The network at a glance: who sends where, how fast, what is overdue or dead-lettered."""
    st = state(ctx)
    settings = st.settings
    network = st.network()
    now = datetime.now(UTC)
    start = parse_since(since, now)
    with LedgerStore.for_settings(settings) as store:
        why = sync_if_reachable(settings, store) if sync else None
        records = store.records()
    local_note(why)
    f = flows_view(settings, network, records, now, start)
    by_role = role_routes_since(network, records, start)
    shares: list[KnownShare] = []
    if network.known is not None:  # known content (issue 24): counts only
        shares, why_not = known_shares(settings, network, sync=sync and why is None)
        if why_not is not None:
            err_console.print(escape(f"note: known content from the local copy ({why_not})"))
    if as_json:
        extra = {"known_content": [s.to_json() for s in shares]} if network.known else {}
        print_json({**f.to_json(), "role_routes": [r.to_json() for r in by_role], **extra})
        return
    print_flows(f, now, since)
    print_role_routes(by_role)
    print_known_shares(shares)


def print_known_shares(shares: list[KnownShare]) -> None:
    """Print the share of known content per origin (all time, counts only)."""
    if not shares:
        return
    table = Table(title="known content per origin (match entries: one per hash or URL)")
    for col in ("origin", "entries", "known before", "share"):
        table.add_column(col, justify="left" if col == "origin" else "right")
    for s in shares:
        table.add_row(cell(s.origin), str(s.entries), str(s.known), f"{s.share:.0%}")
    console.print(table)


def print_role_routes(routes: list[RoleRoute]) -> None:
    """Print who received what by role: sender role → receiver role, on which basis."""
    if not routes:
        return
    table = Table(title="routes by role (the network's role rules at work)")
    for col in ("sender", "basis", "receiver", "referrals", "e.g."):
        table.add_column(col)
    for r in routes:
        more = f" +{len(r.pairs) - 2}" if len(r.pairs) > 2 else ""
        table.add_row(
            cell(r.sender_role),
            cell(r.basis),
            cell(r.receiver_role),
            str(r.referrals),
            cell(", ".join(r.pairs[:2]) + more),
        )
    console.print(table)


def _seconds(value: float | None) -> str:
    return _span(timedelta(seconds=value))[1:] if value is not None else "-"


def print_flows(f: Flows, now: datetime, since: str) -> None:
    """Print the flows view for people: the matrix, handover times, overdue and dead letters."""
    columns = f.columns
    matrix = Table(title=f"referrals since {since}")
    matrix.add_column("origin → jurisdiction")
    for c in columns:
        matrix.add_column(cell(c), justify="right")
    for origin, row in sorted(f.matrix.items()):
        matrix.add_row(cell(origin), *(str(row.get(c, 0)) for c in columns))
    console.print(matrix)
    times = Table(title="handover times per route (p50 / p95)")
    for col in (
        "origin",
        "destination",
        "referrals",
        "published → delivered",
        "delivered → received",
    ):
        times.add_column(col)
    for r in f.routes:
        p2d, d2r = r.to_json()["published_to_delivered"], r.to_json()["delivered_to_received"]
        times.add_row(
            cell(r.origin),
            cell(r.destination),
            str(r.referrals),
            f"{_seconds(p2d['p50_s'])} / {_seconds(p2d['p95_s'])} (n={p2d['n']})",
            f"{_seconds(d2r['p50_s'])} / {_seconds(d2r['p95_s'])} (n={d2r['n']})",
        )
    console.print(times)
    if f.overdue:
        over = Table(title=f"overdue receipts ({len(f.overdue)})")
        for col in ("referral", "awaiting", "topic", "lane", "deadline", "late by"):
            over.add_column(col)
        for a in f.overdue:
            over.add_row(
                cell(a.referral_id),
                cell(a.org),
                cell(a.topic),
                "urgent" if a.urgent else "normal",
                _when(a.due),
                _span(a.late_by(now))[1:],
            )
        console.print(over)
    else:
        console.print("overdue receipts: none")
    if f.dead_letters:
        dead = Table(title="dead letters by reason")
        dead.add_column("reason")
        dead.add_column("count", justify="right")
        for reason, n in sorted(f.dead_letters.items()):
            dead.add_row(cell(reason), str(n))
        console.print(dead)
    else:
        console.print("dead letters: none")
    t = f.totals
    console.print(
        f"totals: published {t.published} = delivered {t.delivered} + dead-lettered "
        f"{t.dead_lettered} + unassigned {t.unassigned} + pending {t.pending}"
    )


# -- tail -------------------------------------------------------------------------------------


def _human(line: dict[str, Any]) -> str:
    head = (
        f"{line['topic']}[{line['partition']}]@{line['offset']} key={line['key']} {line['size']}B"
    )
    info = line.get("value")
    if info is None:
        extra = " ".join(f"{k}={v}" for k, v in line["headers"].items())
        return f"{head} {extra}".rstrip()
    if "undecodable" in info:
        return f"{head} undecodable ({info['size']} bytes): {info['undecodable']}"
    if "events" in info:
        parts = [
            f"{e['event']} {e['referral_id']} by {e['actor']} on {e['topic'] or '-'}"
            for e in info["events"]
        ]
        return f"{head} {info['record']}: " + "; ".join(parts)
    hidden = ("record", "body", "note", "revealed")
    rest = " ".join(f"{k}={v}" for k, v in info.items() if k not in hidden)
    text = f"{head} {info['record']} {rest}"
    if "body" in info:
        text += " body=" + json.dumps(info["body"], sort_keys=True)
    if info.get("note"):
        text += " note=" + json.dumps(info["note"])
    return text


#: kcat's habits on ``tail``: ``-o`` where to start, ``-p`` partitions, ``-c`` count, ``-e`` exit.
_OFFSET: Any = typer.Option(
    None,
    "--offset",
    "-o",
    help="Start at: beginning, end, OFFSET, -N (the last N of each partition) or"
    " s@TIMESTAMP (ms or ISO 8601), as kcat.",
)
_PARTITIONS: Any = typer.Option(
    [], "--partition", "-p", min=0, help="Only this partition (repeatable)."
)
_COUNT: Any = typer.Option(None, "--max", "-c", "--count", min=1, help="Stop after N records.")
_EXIT: Any = typer.Option(
    False, "--exit", "-e", help="Stop at the end of the topic (from the beginning unless -o)."
)


def tail(
    ctx: typer.Context,
    topic: str = typer.Argument(..., help="Topic (the deployment's prefix is added if missing)."),
    decode: bool = typer.Option(False, "--decode", help="Decode values through the registry."),
    body: bool = typer.Option(False, "--body", help="With --decode: include referral bodies."),
    reveal: bool = typer.Option(
        False, "--reveal", help="With --body: show TLP RED / AMBER_STRICT bodies (needs --reason)."
    ),
    reason: str | None = typer.Option(
        None, "--reason", help="Why the restricted bodies are shown; recorded in the ledger."
    ),
    as_org: str | None = typer.Option(
        None,
        "--as",
        help="With --reveal: whose operator reads (that organisation signs the record).",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest."),
    offset: str | None = _OFFSET,
    partitions: list[int] = _PARTITIONS,
    max_records: int | None = _COUNT,
    exit_at_end: bool = _EXIT,
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", help="Stop after this many seconds without records."
    ),
) -> None:
    """Follow a topic; undecodable records are shown with their size, never fatal."""
    st = state(ctx)
    settings = st.settings
    if reveal and not (reason and reason.strip()):
        raise ConfigError('--reveal needs --reason "..." (every revealed body is recorded)')
    if as_org is not None:
        st.network().organisation(as_org)  # UnknownName before the broker is asked
    prefix = settings.topic_prefix
    name = topic if not prefix or topic.startswith(prefix) else prefix + topic
    access = _AccessLog(settings, reason or "", as_org) if reveal else None
    codec = Codec.from_settings(settings) if decode or body else None
    start = parse_start(offset) if offset is not None else None
    if exit_at_end and start is None and not from_beginning:
        start = Start("beginning")  # kcat -e: the whole topic, then stop
    consumer = clients.consumer(settings, group_id=None, role="tail")
    seen = 0
    started_ms = int(time.time() * 1000)
    try:
        parts = consumer.partitions_for_topic(name)
        if not parts:
            on = f" on {clients.resolve_bootstrap(settings)}"
            ours = [t for t in consumer.topics() if t.startswith(prefix)]  # this deployment's
            raise UnknownName("topic", name, ours, on)
        if from_beginning and start is None:
            start = Start("beginning")
        batches = _tail_batches(
            consumer, name, sorted(parts), partitions, start, exit_at_end, idle_exit
        )
        for batch in batches:
            records = sorted(batch, key=lambda r: (r.timestamp, r.partition))
            for record in records:
                # The embedded broker's end offset may lie inside the last batch: skip older ones.
                if start is None and record.timestamp < started_ms:
                    continue
                _show(record, codec, access, body=body, reveal=reveal, as_json=as_json)
                seen += 1
                if max_records is not None and seen >= max_records:
                    break
            if max_records is not None and seen >= max_records:
                break
    except KafkaError as exc:
        raise KafkaBrokerError(f"cannot read {name}: {type(exc).__name__}") from exc
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        if access is not None:
            access.close()


def _tail_batches(
    consumer: Any,
    name: str,
    parts: list[int],
    wanted: list[int],
    start: Start | None,
    exit_at_end: bool,
    idle_exit: float | None,
) -> Iterator[list[Any]]:
    """The record batches ``tail`` shows: the partitions asked for, from ``start``."""
    missing = sorted(set(wanted) - set(parts))
    if missing:
        raise ConfigError(
            f"{name} has no partition {', '.join(map(str, missing))}"
            f" (it has {', '.join(map(str, parts))})"
        )
    tps = [TopicPartition(name, p) for p in parts if not wanted or p in wanted]
    reader = TopicReader(consumer, name, poll_ms=200, timeout=3600.0)
    if exit_at_end:
        return reader.batches(positions(consumer, tps, start or Start("beginning")), partitions=tps)
    if start is None and not wanted:
        return reader.follow(idle_exit=idle_exit)
    begin = positions(consumer, tps, start or Start("end"))
    return reader.follow(idle_exit=idle_exit, start=begin)


def _show(
    record: Any,
    codec: Codec | None,
    access: _AccessLog | None,
    *,
    body: bool,
    reveal: bool,
    as_json: bool,
) -> None:
    """Print one record as ``tail`` shows it, recording a revealed restricted body first."""
    info = decoded(codec, record.value, body=body, reveal=reveal) if codec is not None else None
    if access is not None and info is not None and info.get("revealed"):
        access.accessed(codec, info, record)
    line = record_view(record, info)
    if as_json:
        sys.stdout.write(json.dumps(line, sort_keys=True, default=str) + "\n")
    else:
        console.print(escape(_human(line)), markup=False, soft_wrap=True)
    sys.stdout.flush()


class _AccessLog:
    """Records each revealed restricted body as an ACCESSED handover event in the ledger.

    With an organisation (``--as``) the event is that organisation's, signed with its key;
    without, it is the ``operator``'s and unsigned (fit only where plain referrals are allowed).
    """

    def __init__(self, settings: Settings, reason: str, org: str | None = None) -> None:
        self.settings = settings
        self.reason = " ".join(reason.split())
        self.user = getpass.getuser()
        signer = (
            ledger_signer(LiveKeys(key_dir(settings, org), org), org) if org is not None else None
        )
        self._producer: Any = None
        self._recorder: AccessRecorder | None = None
        self._actor = org or "operator"
        self._signer = signer

    def _open(self) -> Any:
        if self._producer is None:
            self._producer = clients.producer(self.settings, role="tail-access")
        return self._producer

    def accessed(self, codec: Codec | None, info: dict[str, Any], record: Any) -> None:
        """Emit ACCESSED for the referral ``info`` describes (sent before ``close`` returns)."""
        assert codec is not None
        if self._recorder is None:
            ledger = self.settings.topic_names().ledger
            signer = self._signer
            self._recorder = AccessRecorder(
                codec, ledger, self._actor, self._open, signer=lambda: signer
            )
        self._recorder.accessed(
            referral_id=str(info["referral_id"]),
            case_id=str(info["case_id"]),
            at=(record.topic, record.partition, record.offset),
            reason=consultation_reason(TAIL_REVEAL, f"by {self.user}: {self.reason}"),
        )

    def close(self) -> None:
        """Wait until every ACCESSED event is acknowledged."""
        if self._producer is not None:
            try:
                self._producer.flush(30)
            finally:
                self._producer.close(10)
