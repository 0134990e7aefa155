"""``referral connector run``, ``referral publish``, ``referral outbox``, ``referral status``."""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker.config import Settings
from broker.errors import ConfigError, UnknownName, ValidationFailed
from broker.ids import resolve_id, short_id
from broker.kafka import clients
from broker.known.check import KnownUnreachable, check_known, checks_known
from broker.metrics import setup_metrics
from broker.network import Network
from broker.origin.erase_request import ErasureBook, erasure_rows
from broker.origin.outbox import Outbox, PendingReferral
from broker.origin.publisher import BatchResult, Publisher, Rejected
from broker.origin.sent_view import item_report
from broker.origin.status_log import StatusLog
from broker.outcomes import parse_item_specs, summarise
from broker.receiver.inbox import Inbox, InboxRecord
from broker.receiver.statuses import new_status_update, send_status_update
from broker.tracing import setup_tracing
from broker.wire.codec import Codec
from broker.wire.models import ItemOutcome, ReferralStatus, StatusUpdate, utc_now_ms
from cli.app import (
    NETWORK_OPTION,
    App,
    cell,
    console,
    err_console,
    escape,
    print_json,
    service_stop_event,
    state,
)
from cli.tables import WIDE_OPTION, is_narrow, new_table, print_table
from connectors.formats import name_fields, read_referral_file
from connectors.known_index import known_for_publish, known_lines
from connectors.runtime import ConnectorRuntime

__all__ = ["app", "outbox", "publish", "status"]

app = App(help="Run an organisation's connectors.")

#: Rows per produce batch in ``referral publish`` (the progress bar advances per batch).
PUBLISH_CHUNK = 200


@app.command("run")
def run(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="Organisation id from the network file."),
    network_file: Path | None = NETWORK_OPTION,
    republish_after: float | None = typer.Option(
        None, "--republish-after", help="Seconds before a pending referral is sent again."
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve Prometheus /metrics on 127.0.0.1 at this port (REFERRAL_METRICS_PORT).",
    ),
) -> None:
    """Run every connector configured for ORG until SIGTERM or Ctrl-C."""
    st = state(ctx)
    network = st.network(network_file)
    network.organisation(org)  # UnknownName before anything starts
    settings = st.settings
    stop = service_stop_event()
    metrics = setup_metrics(
        metrics_port if metrics_port is not None else settings.metrics_port,
        f"connectors-{org}",
        settings,
    )
    try:
        runtime = ConnectorRuntime(
            settings,
            network,
            org,
            Codec.from_settings(settings),
            republish_after=republish_after,
            metrics=metrics,
        )
        runtime.start()
    except BaseException:
        metrics.shutdown()
        raise
    kinds = ", ".join(network.organisation(org).connectors) or "none configured"
    console.print(f"connectors of {org} running ({kinds})")
    if runtime.http_port is not None:
        console.print(f"http intake listening on port {runtime.http_port}")
    if metrics.port is not None:
        console.print(f"metrics on http://127.0.0.1:{metrics.port}/metrics")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        try:
            runtime.stop()
        finally:
            metrics.shutdown()
    console.print(f"connectors of {org} stopped")


def publish(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="Referral files (.json, .jsonl, .csv)."),
    as_org: str = typer.Option(..., "--as", help="The publishing organisation's id."),
    network_file: Path | None = NETWORK_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    amend: bool = typer.Option(
        False,
        "--amend",
        help="Send referrals ORG already published with other content as their next version.",
    ),
) -> None:
    """Validate and publish referral files once (same checks and outbox as the sources).

    A referral already published with the same content is a repeat (not sent
    again); with other content it is refused unless ``--amend`` is given, which
    sends it as the next version of the same referral (signed, to the
    recipients its envelope routes to; they keep the earlier versions as history).
    """
    st = state(ctx)
    network = st.network(network_file)
    settings = st.settings
    known_org(network, as_org, "--as")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ConfigError("\n".join(f"{m}: no such file" for m in missing))
    tracing = setup_tracing(settings, f"publish-{as_org}")
    producer = clients.producer(settings, role=f"publish-{as_org}")
    outbox = Outbox.for_org(settings, as_org)
    results: dict[str, BatchResult] = {}
    publisher: Publisher | None = None
    known = known_for_publish(settings, network, as_org, producer)  # issue 24; None if off
    try:
        publisher = Publisher(
            settings,
            network,
            as_org,
            Codec.from_settings(settings),
            producer,
            outbox,
            tracing=tracing,
            known=known.hook if known is not None else None,
        )
        rows_by_file = {f: read_referral_file(f) for f in files}
        total = sum(len(r) for r in rows_by_file.values())
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=as_json or total < PUBLISH_CHUNK,
        ) as progress:
            task = progress.add_task("publishing", total=total)
            for path, rows in rows_by_file.items():
                result = BatchResult()
                for i in range(0, len(rows), PUBLISH_CHUNK):
                    chunk = rows[i : i + PUBLISH_CHUNK]
                    result.extend(publisher.publish(chunk, amend=amend))
                    progress.advance(task, len(chunk))
                results[str(path)] = name_fields(result, path.suffix)
    finally:
        try:
            producer.close(10)
        finally:
            if publisher is not None:
                publisher.close()
            if known is not None:
                known.close()
            outbox.close()
            # The root spans of the published referrals' traces: exported before exiting.
            tracing.shutdown()
    _report_publish(results, as_json)
    if not as_json:
        for line in known_lines(results.values()):
            console.print(escape(line), markup=False, soft_wrap=False)


def _report_publish(results: dict[str, BatchResult], as_json: bool) -> None:
    rejected = sum(len(r.rejected) for r in results.values())
    if as_json:
        print_json(
            {
                name: {
                    "published": [
                        {
                            "row": p.label,
                            "referral_id": p.referral_id,
                            "sent": p.sent,
                            "repeat": p.repeat,
                            "version": p.version,
                        }
                        for p in r.published
                    ],
                    "rejected": [
                        {"row": x.label, "problems": list(x.problems), "kind": x.kind}
                        for x in r.rejected
                    ],
                }
                for name, r in results.items()
            }
        )
    else:
        for name, r in results.items():
            repeats = sum(1 for p in r.published if p.repeat)
            unsent = sum(1 for p in r.published if not p.sent and not p.repeat)
            line = (
                f"{name}: {len(r.published) - repeats} published, {repeats} repeat(s), "
                f"{len(r.rejected)} rejected"
            )
            if unsent:
                line += f" ({unsent} not acknowledged yet; held in the outbox)"
            console.print(escape(line), markup=False, soft_wrap=True)
            for p in r.published:
                what = (
                    f"repeat of referral {p.referral_id} (already published, not sent again)"
                    if p.repeat
                    else f"referral {p.referral_id} version {p.version} (amendment)"
                    if p.version > 1
                    else f"referral {p.referral_id}"
                )
                console.print(escape(f"{name} {p.label}: {what}"), markup=False, soft_wrap=True)
            for rej in r.rejected:
                for problem in rej.problems:
                    err_console.print(
                        escape(f"{name} {rej.label}: {problem}"), markup=False, soft_wrap=True
                    )
    if rejected:
        raise typer.Exit(1)


def check(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="Referral files (.json, .jsonl, .csv)."),
    as_org: str = typer.Option(..., "--as", help="The publishing organisation's id."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Validate referral files as ORG would publish them, without a broker.

    Prints one line per valid row (its referral id) and one line per problem on
    stderr (file, row, column or field, message); exits 1 if there is any problem.
    With the ``known`` kind, the valid rows' items are also looked up (through the
    evaluator, blinded): one line per item another member assessed before.
    """
    st = state(ctx)
    network = st.network(network_file)
    settings = st.settings
    known_org(network, as_org, "--as")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ConfigError("\n".join(f"{m}: no such file" for m in missing))
    bad = 0
    valid: list[tuple[str, str, dict[str, Any]]] = []  # for known content (issue 24)
    with tempfile.TemporaryDirectory(prefix="referral-check-") as scratch:
        outbox = Outbox(Path(scratch) / "outbox.sqlite3")
        publisher = Publisher(
            settings,
            network,
            as_org,
            Codec.from_settings(settings),
            None,
            outbox,  # type: ignore[arg-type]
        )
        try:
            for path in files:
                result = BatchResult()
                for label, row in read_referral_file(path):
                    if isinstance(row, ValidationFailed):
                        result.rejected.append(Rejected(label, tuple(row.problems)))
                        continue
                    try:
                        prepared = publisher.prepare(row)
                    except ValidationFailed as exc:
                        result.rejected.append(Rejected(label, tuple(exc.problems)))
                        continue
                    console.print(
                        escape(f"{path} {label}: ok, referral {prepared.referral_id}"),
                        markup=False,
                        soft_wrap=True,
                    )
                    if prepared.facts.document is not None:
                        doc = prepared.facts.document
                        valid.append((f"{path} {label}", prepared.referral_id, doc))
                for rej in name_fields(result, path.suffix).rejected:
                    for problem in rej.problems:
                        bad += 1
                        err_console.print(
                            escape(f"{path} {rej.label}: {problem}"), markup=False, soft_wrap=True
                        )
        finally:
            publisher.close()
            outbox.close()
    _check_known(settings, network, as_org, valid)
    if bad:
        raise typer.Exit(1)


def _check_known(
    settings: Any, network: Network, org: str, rows: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """Which valid rows hold known content, or on stderr why that was not checked."""
    if not rows or not checks_known(network, org):
        return
    try:
        found = check_known(settings, network, org, rows)
    except KnownUnreachable as exc:
        err_console.print(escape(f"known content not checked: {exc}"), markup=False)
        return
    for k in found:
        holds = "holds" if k.hit.assessed else "may hold"  # a possible near-duplicate
        line = f"{k.label}: item {short_id(k.item_id)} {holds} known content: {k.hit.line()}"
        console.print(escape(line), markup=False, soft_wrap=True)
    if not found:
        console.print(f"known content: none of {len(rows)} row(s) matched", markup=False)


def outbox(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="Organisation id."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    show_all: bool = typer.Option(
        False, "--all", help="Every referral ORG published, also those every destination has."
    ),
    wide: bool = WIDE_OPTION,
) -> None:
    """List ORG's referrals still waiting for a RECEIVED, or refused, and how often each was sent.

    A referral is ``pending`` while some destination has neither received nor
    refused it (it is sent again, less and less often), ``refused`` once every
    destination left has refused it for good (it is not sent again), ``done``
    (with ``--all``) once every destination received it. Below the table: what
    the recipients reported of single items (verified), the re-referrals of
    moved items and the current version of amended referrals.
    """
    st = state(ctx)
    st.network().organisation(org)  # UnknownName naming the nearest
    settings = st.settings
    box = Outbox.for_org(settings, org)
    status_log = StatusLog.for_org(settings, org)
    book = ErasureBook.for_org(settings, org)
    try:
        erasures = erasure_rows(book)
        erasing = {str(e["referral_id"]) for e in erasures}
        pending, refused = box.pending(), box.refused()
        listed = box.all() if show_all else [*pending, *refused]
        listed = [p for p in listed if p.referral_id not in erasing]
        items = {
            p.referral_id: item_report(box, status_log, p.referral_id).to_json() for p in listed
        }
    finally:
        box.close()
        status_log.close()
        book.close()
    now = time.time()
    if as_json:
        print_json([*({**p.to_json(now), **items[p.referral_id]} for p in listed), *erasures])
        return
    title = f"outbox of {org}: {len(pending)} pending, {len(refused)} refused"
    if show_all:
        title += f", {len(listed) - len(pending) - len(refused)} done"
    narrow = is_narrow(wide)
    print_table(_outbox_table(title, listed, now, narrow), whole=not narrow)
    _print_outbox_notes(listed, items)
    if erasures:
        print_erasures(org, erasures, narrow)


def _outbox_table(title: str, listed: list[Any], now: float, narrow: bool) -> Table:
    """The outbox table: narrow (80 columns) drops the age and columns that say nothing."""
    columns = ["referral", "case", "state", "waiting for", "received by", "refused by"]
    columns += ["last sent", "sends"] if narrow else ["age", "last sent", "sends"]
    rows = [
        [
            short_id(p.referral_id) if narrow else p.referral_id,
            p.case_id,
            p.state,
            ", ".join(p.waiting_for) or "-",
            ", ".join(p.received_by) or "-",
            ", ".join(f"{r.org_id} ({r.reason})" for r in p.refused_by) or "-",
            *([] if narrow else [_age(p.age(now))]),
            _age(now - p.last_sent_at) + ("" if narrow else " ago"),
            str(p.attempts),
        ]
        for p in listed
    ]
    # Narrow (an 80-column terminal): short ids, no age, and no column that says nothing.
    keep = [
        i
        for i, col in enumerate(columns)
        if not narrow or col not in ("waiting for", "refused by") or any(r[i] != "-" for r in rows)
    ]
    table = new_table(title, narrow)
    for i in keep:
        right = columns[i] in ("age", "last sent", "sends")
        # A long word (a refusal reason) folds onto the next line rather than being cut.
        table.add_column(
            columns[i],
            justify="right" if right else "left",
            overflow="ellipsis" if right else "fold",
        )
    for r in rows:
        table.add_row(*(cell(r[i]) for i in keep))
    return table


def print_erasures(org: str, erasures: list[dict[str, Any]], narrow: bool) -> None:
    """The erasures ORG asked for: who has erased, who has not yet."""
    waiting = sum(1 for e in erasures if e["state"] == "erasing")
    table = new_table(
        f"erasures by {org}: {waiting} erasing, {len(erasures) - waiting} erased", narrow
    )
    for column in ("referral", "state", "reason", "erased by", "not yet"):
        table.add_column(column, overflow="fold")
    for e in erasures:
        rid = str(e["referral_id"])
        table.add_row(
            cell(short_id(rid) if narrow else rid),
            cell(str(e["state"])),
            cell(str(e["reason"])),
            cell(", ".join(e["erased_by"]) or "-"),
            cell(", ".join(e["waiting_for_erasure"]) or "-"),
        )
    print_table(table, whole=not narrow)


def _print_outbox_notes(listed: list[PendingReferral], items: dict[str, Any]) -> None:
    """Below the outbox table: versions, item reports, re-referrals, parents."""
    for p in listed:
        report = items[p.referral_id]
        lines = []
        if p.version > 1:
            lines.append(f"version {p.version} (amended)")
        if report["items"]:
            lines.append(report["items"])
        lines += [
            f"item {short_id(c['item_id'])} moved to {c['country']}: re-referred as"
            f" {c['referral_id']}" + ("" if c["published"] else " (queued)")
            for c in report["children"]
        ]
        if p.parent_referral_id:
            lines.append(f"re-referral of {p.parent_referral_id}")
        for line in lines:
            console.print(
                escape(f"{short_id(p.referral_id)}: {line}"), markup=False, soft_wrap=True
            )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


#: The statuses ``referral status`` takes, for its help (words, so never cut mid-name).
_STATUSES = ", ".join(member.value for member in ReferralStatus)


def status(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="The organisation reporting the status."),
    referral_id: str = typer.Argument(
        ..., help="The referral the status is about (or an unambiguous prefix)."
    ),
    new_status: ReferralStatus = typer.Argument(
        ...,
        metavar="STATUS",
        show_choices=False,
        help=f"One of {_STATUSES}.",
    ),
    note: str | None = typer.Option(None, "--note", help="Free-text note (no personal data)."),
    reason_code: str | None = typer.Option(None, "--reason", help="Machine-readable reason code."),
    destination: str | None = typer.Option(
        None, "--destination", help="For REROUTED: the organisation it was passed to."
    ),
    origin: str | None = typer.Option(
        None, "--origin", help="The referral's origin (if several used the same referral id)."
    ),
    items: list[str] = typer.Option(
        [],
        "--item",
        metavar="ITEM=OUTCOME",
        help="An item's outcome, ITEM_ID=OUTCOME[:KEY=VALUE,...]: OUTCOME one of REMOVED,"
        " STILL_ONLINE, NOT_FOUND, NOT_ILLEGAL; keys ip, country, provider, under;"
        " repeatable; id prefixes work.",
    ),
    new_ip: str | None = typer.Option(
        None, "--new-ip", help="Where the one STILL_ONLINE item is hosted now (IP)."
    ),
    new_country: str | None = typer.Option(
        None, "--new-country", help="Where the one STILL_ONLINE item is hosted now (country)."
    ),
    assessed_under: str | None = typer.Option(
        None, "--assessed-under", help="Whose law the one NOT_ILLEGAL item was assessed under."
    ),
    observed_at: str | None = typer.Option(
        None,
        "--observed-at",
        help="When the item outcomes were observed, ISO 8601 (e.g. 2026-11-23T09:30:00Z);"
        " default now.",
    ),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Send a status update about a referral ORG received, signed by ORG, back to its origin.

    The status must follow the referral's current status in the lifecycle
    (``broker/lifecycle.py``); otherwise one line names the allowed next statuses.
    ``--item`` adds what became of single items (the same signed update); the
    origin re-refers an item that moved to a host in another served jurisdiction.
    """
    st = state(ctx)
    network = st.network(network_file)
    network.organisation(org)  # UnknownName naming the nearest
    if destination is not None:
        known_org(network, destination, "--destination")
    if origin is not None:
        known_org(network, origin, "--origin")
    settings = st.settings
    record, outcomes, update = _status_update(
        settings,
        org,
        referral_id,
        new_status,
        origin,
        items,
        _ItemFacts(new_ip, new_country, assessed_under, observed_at),
        note=note,
        reason_code=reason_code,
        destination=destination,
    )
    referral_id = record.referral_id
    _send_status(settings, network, org, update)
    line = f"{new_status.value} for {referral_id} sent to {record.origin_org}"
    if outcomes:
        line += f" with {summarise(outcomes)}"
    console.print(escape(line), markup=False, soft_wrap=True)


@dataclass(frozen=True)
class _ItemFacts:
    """The ``--new-ip``, ``--new-country``, ``--assessed-under`` and ``--observed-at`` values."""

    new_ip: str | None
    new_country: str | None
    assessed_under: str | None
    observed_at: str | None


def _status_update(
    settings: Settings,
    org: str,
    referral_id: str,
    new_status: ReferralStatus,
    origin: str | None,
    items: list[str],
    facts: _ItemFacts,
    *,
    note: str | None,
    reason_code: str | None,
    destination: str | None,
) -> tuple[InboxRecord, list[ItemOutcome], StatusUpdate]:
    """The inbox record the status is about, its item outcomes and the signed-to-be update."""
    inbox = Inbox.for_org(settings, org)
    try:
        referral_id = resolve_id(referral_id, inbox.referral_ids())
        origins = inbox.origins_of(referral_id)
        if origin is None and len(origins) > 1:
            raise ConfigError(
                f"referral id {referral_id} came from {len(origins)} origins "
                f"({', '.join(origins)}); name one with --origin"
            )
        record = inbox.lookup(referral_id, origin)
        if record is None and not origins:
            raise UnknownName(
                "referral",
                referral_id,
                inbox.referral_ids(),
                f" in the inbox of {org}",
                cutoff=0.8,
                empty=f"{org} has received nothing yet",
                list_known=False,
            )
        if record is None:
            raise ConfigError(f"{org} has not received referral {referral_id} (not in its inbox)")
        outcomes = parse_item_specs(
            items,
            inbox.item_ids(record.origin_org, referral_id),
            _observed_at(facts.observed_at),
            new_ip=facts.new_ip,
            new_country=facts.new_country,
            assessed_under=facts.assessed_under,
        )
        try:
            update = new_status_update(
                inbox,
                org,
                record,
                new_status,
                outcomes,
                note=note,
                reason_code=reason_code,
                destination=destination,
            )
        except ValidationFailed as exc:
            raise in_flags(exc) from None
    finally:
        inbox.close()
    return record, outcomes, update


#: The status update's fields as ``referral status`` spells them.
_FLAGS = {"reason_code": "--reason", "destination_org": "--destination", "note": "--note"}
_FIELD = re.compile(r"\b(?:an? )?(" + "|".join(_FLAGS) + r")\b")


def in_flags(exc: ValidationFailed) -> ValidationFailed:
    """``exc`` with the model's field names replaced by the flags that set them."""
    problems = [
        _FIELD.sub(lambda m: _FLAGS[m.group(1)], p.removeprefix("(record): ")) for p in exc.problems
    ]
    return ValidationFailed("\n".join(problems), problems)


def known_org(network: Network, org: str, flag: str) -> None:
    """UnknownName (one line, naming ``flag`` and the nearest) unless ``org`` is in the network."""
    if not network.has_organisation(org):
        raise UnknownName(
            "organisation", org, (o.id for o in network.organisations), hint=f" for {flag}"
        )


def _send_status(settings: Settings, network: Network, org: str, update: StatusUpdate) -> None:
    """Sign and publish ``update`` as ``org``, its send a PRODUCER span (the trace's root)."""
    tracing = setup_tracing(settings, f"status-{org}")
    producer = clients.producer(settings, role=f"status-{org}")
    try:
        send_status_update(
            settings, network, Codec.from_settings(settings), producer, update, tracing=tracing
        )
    finally:
        try:
            producer.close(10)
        finally:
            tracing.shutdown()


def _observed_at(text: str | None) -> datetime:
    """``--observed-at`` as a UTC time (now if not given); ConfigError with an example."""
    if text is None:
        return utc_now_ms()
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            "--observed-at: not an ISO 8601 time; write e.g. 2026-11-23T09:30:00Z"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at
