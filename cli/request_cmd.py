"""``referral request …``: police-to-police requests for information (Directive 2023/977).

Thin faces on :mod:`broker.requests`: a SPOC asks (``send``), reads and lists
(``inbox``: asked of me / asked by me, due soon first), answers, refuses,
clarifies, delays; ``route`` runs the request router, ``watch`` a SPOC's
receiver and overdue watcher, ``stats`` the Art. 18 tables from the ledger.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from broker.errors import ConfigError, LedgerError, ValidationFailed
from broker.kafka import clients
from broker.ledger.store import LedgerStore
from broker.metrics import setup_metrics
from broker.network import Network
from broker.requests.clock import OverdueWatcher
from broker.requests.codes import DelayReason, MessageKind, RefusalGround
from broker.requests.desk import Desk
from broker.requests.router import RequestRouter
from broker.requests.routes import provision_requests
from broker.requests.stats import art18, to_csv
from broker.requests.store import RequestRow
from broker.requests.wire import RequestError, check_content
from broker.security.keys import LiveKeys, OrgKeys, key_dir, load_trust
from broker.security.signing import ledger_signer
from broker.wire.codec import Codec
from cli.app import NETWORK_OPTION, App, cell, console, print_json, service_stop_event, state
from cli.tables import is_narrow, new_table

__all__ = ["app"]

app = App(help="Police-to-police requests for information, on the clock (EU 2023/977).")

ORG = typer.Argument(..., help="Your point of contact (a police organisation id).")
RID = typer.Argument(..., help="The request id (8 or more characters).")
JSON = typer.Option(False, "--json", help="Machine-readable output.")
CODES: dict[str, Any] = {
    "handling": typer.Option("H0", "--handling", help="SIENA handling code H0-H3."),
    "reliability": typer.Option("X", "--reliability", help="Source reliability A, B, C or X."),
    "assessment": typer.Option("4", "--assessment", help="Information assessment 1-4."),
    "language": typer.Option("en", "--language", help="Language of the message (ISO 639-1)."),
}


def _keys(settings: Any, org: str) -> OrgKeys:
    keys = OrgKeys.load(key_dir(settings, org), org)
    if keys is None:
        raise ConfigError(f"{org} has no keys here (run `referral keys init {org}`)")
    return keys


def _network(ctx: typer.Context, org: str, network_file: Path | None) -> Network:
    network = state(ctx).network(network_file)
    if not network.has_organisation(org):
        raise ConfigError(f"{org} is not in the network")
    return network


@contextmanager
def _desk(ctx: typer.Context, org: str, network_file: Path | None) -> Any:
    network = _network(ctx, org, network_file)
    settings = state(ctx).settings
    codec = Codec.from_settings(settings)
    trust = load_trust(network, settings.network_file)
    desk = Desk(settings, network, codec, _keys(settings, org), trust)
    try:
        desk.receive(timeout=3.0)
        yield desk
    finally:
        desk.close()


def _codes(handling: str, reliability: str, assessment: str, language: str) -> dict[str, str]:
    return {
        "handling": handling.upper(),
        "reliability": reliability.upper(),
        "assessment": assessment,
        "language": language.lower(),
    }


#: How the content checks name the codes, and the flag that sets each.
_CODE_FLAGS = {
    "the handling code": "--handling",
    "the source reliability": "--reliability",
    "the information assessment": "--assessment",
    "the language": "--language",
}


def _checked(kind: MessageKind, content: dict[str, Any], **flags: str) -> dict[str, Any]:
    """``content`` if a ``kind`` message may carry it, before anything connects; else the
    refusal naming the flag (``flags``: content key → the flag that sets it)."""
    try:
        check_content(kind, content)
    except RequestError as exc:
        message = str(exc)
        for subject, flag in {**_CODE_FLAGS, **flags}.items():
            if message.startswith(subject + " "):
                raise RequestError(flag + message.removeprefix(subject)) from None
        raise
    return content


@app.command("provision")
def provision_cmd(ctx: typer.Context, network_file: Path | None = NETWORK_OPTION) -> None:
    """Create the request topics (intake, dead letters, one per point of contact)."""
    st = state(ctx)
    network: Network = st.network(network_file)
    admin = clients.admin_client(st.settings)
    try:
        made = provision_requests(admin, network, st.settings.topic_names())
    finally:
        admin.close()
    console.print(f"{len(made)} request topic(s) created")


@app.command("send")
def send_cmd(
    ctx: typer.Context,
    org: str = ORG,
    to: str = typer.Option(..., "--to", help="The other country's point of contact."),
    case: str = typer.Option(..., "--case", help="Your case id."),
    purpose: str = typer.Option(..., "--purpose", help="Why the information is asked for."),
    item: list[str] = typer.Option(..., "--item", help="A requested item (repeat for more)."),
    urgent: bool = typer.Option(False, "--urgent", help="An urgent request (Art. 5(1))."),
    indirect: bool = typer.Option(
        False, "--indirect", help="The information is only indirectly accessible to them."
    ),
    referral: str | None = typer.Option(None, "--referral", help="The referral it concerns."),
    handling: str = CODES["handling"],
    reliability: str = CODES["reliability"],
    assessment: str = CODES["assessment"],
    language: str = CODES["language"],
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Ask another country's point of contact for information; prints the request id."""
    content = {
        "urgent": urgent,
        "access": "INDIRECT" if indirect else "DIRECT",
        "purpose": purpose,
        "items": list(item),
        **_codes(handling, reliability, assessment, language),
    }
    _checked(MessageKind.REQUEST, content, purpose="--purpose")
    with _desk(ctx, org, network_file) as desk:
        rid = desk.request(to, case, content, referral_id=referral)
        desk.flush()
    console.print(rid)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _print_rows(rows: list[RequestRow], title: str) -> None:
    table = new_table(title, is_narrow(False))
    for col in ("request", "case", "with", "urgency", "state", "due", "delay", "overdue"):
        table.add_column(col)
    for r in rows:
        urgency = ("urgent " if r.urgent else "") + r.access.lower()
        delay = f"{r.delay_reason} to {_when(r.delayed_until)}" if r.delay_reason else "-"
        overdue = "OVERDUE" if r.overdue_at is not None and r.closed_at is None else "-"
        values = (r.request_id[:8], r.case_id, r.counterpart, urgency, r.state, _when(r.alarm_at))
        table.add_row(*(cell(v) for v in (*values, delay, overdue)))
    console.print(table)


@app.command("inbox")
def inbox_cmd(
    ctx: typer.Context,
    org: str = ORG,
    overdue: bool = typer.Option(False, "--overdue", help="Only requests owed and overdue."),
    as_json: bool = JSON,
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Requests asked of ORG and asked by ORG, due soon first (reads what arrived first)."""
    with _desk(ctx, org, network_file) as desk:
        desk.flag_overdue()
        of_me = desk.store.rows("of_me", overdue=overdue)
        by_me = [] if overdue else desk.store.rows("by_me")
    if as_json:
        print_json(
            {
                "asked_of_me": [r.to_json() for r in of_me],
                "asked_by_me": [r.to_json() for r in by_me],
            }
        )
        return
    _print_rows(of_me, f"asked of {org}")
    if not overdue:
        _print_rows(by_me, f"asked by {org}")


@app.command("answer")
def answer_cmd(
    ctx: typer.Context,
    org: str = ORG,
    request_id: str = RID,
    text: str = typer.Option(..., "--text", help="The answer."),
    attach: list[Path] = typer.Option([], "--attach", help="A file to attach (sealed)."),
    handling: str = CODES["handling"],
    reliability: str = CODES["reliability"],
    assessment: str = CODES["assessment"],
    language: str = CODES["language"],
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Answer a request asked of ORG (attachments are sealed with the answer)."""
    try:
        files = [{"name": p.name, "data": p.read_text(encoding="utf-8")} for p in attach]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read an attachment: {type(exc).__name__}") from None
    content = {
        "text": text,
        "attachments": files,
        **_codes(handling, reliability, assessment, language),
    }
    _checked(MessageKind.ANSWER, content, text="--text")
    with _desk(ctx, org, network_file) as desk:
        desk.answer(request_id, content)
    console.print("answered")


@app.command("refuse")
def refuse_cmd(
    ctx: typer.Context,
    org: str = ORG,
    request_id: str = RID,
    ground: RefusalGround = typer.Option(..., "--ground", help="The Art. 6 ground."),
    note: str | None = typer.Option(None, "--note", help="A note to the requester."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Refuse a request asked of ORG on an Art. 6 ground."""
    content: dict[str, Any] = {"ground": ground.value}
    if note:
        content["note"] = note
    _checked(MessageKind.REFUSAL, content, note="--note")
    with _desk(ctx, org, network_file) as desk:
        desk.refuse(request_id, content)
    console.print(f"refused ({ground.value})")


@app.command("clarify")
def clarify_cmd(
    ctx: typer.Context,
    org: str = ORG,
    request_id: str = RID,
    ask: str | None = typer.Option(None, "--ask", help="Ask the requester this (clock pauses)."),
    give: str | None = typer.Option(None, "--give", help="Give the clarification asked of you."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Ask for a clarification of a request asked of ORG, or give one asked of ORG's."""
    _network(ctx, org, network_file)
    if (ask is None) == (give is None):
        raise ConfigError("give either --ask or --give")
    if ask is not None:
        _checked(MessageKind.CLARIFICATION_ASKED, {"question": ask}, question="--ask")
    else:
        _checked(MessageKind.CLARIFICATION_GIVEN, {"text": give}, text="--give")
    with _desk(ctx, org, network_file) as desk:
        if ask is not None:
            desk.ask_clarification(request_id, {"question": ask})
        else:
            desk.give_clarification(request_id, {"text": give})
    console.print("clarification asked: the clock pauses" if ask else "clarification given")


@app.command("delay")
def delay_cmd(
    ctx: typer.Context,
    org: str = ORG,
    request_id: str = RID,
    reason: DelayReason = typer.Option(..., "--reason", help="Why the answer is late."),
    until: str = typer.Option(..., "--until", help="When the answer is expected (ISO 8601, UTC)."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Announce that the answer to a request asked of ORG will be late, why and until when."""
    _network(ctx, org, network_file)
    try:
        expected = datetime.fromisoformat(until)
    except ValueError:
        raise ConfigError(f"--until {until[:40]!r} is not a date (e.g. 2026-03-01T12:00)") from None
    expected = expected if expected.tzinfo else expected.replace(tzinfo=UTC)
    expected_ms = int(expected.timestamp() * 1000)
    with _desk(ctx, org, network_file) as desk:
        desk.delay(request_id, {"reason": reason.value, "expected_ms": expected_ms})
    console.print(f"delay announced ({reason.value}) until {_when(expected_ms)}")


@app.command("route")
def route_cmd(ctx: typer.Context, network_file: Path | None = NETWORK_OPTION) -> None:
    """Run the request router (SIGTERM or Ctrl-C stops it)."""
    st = state(ctx)
    network = st.network(network_file)
    settings = st.settings
    stop = service_stop_event()
    keys = OrgKeys.load(key_dir(settings, "router"), "router")
    signer = ledger_signer(LiveKeys.fixed(keys, "router"), "router") if keys else None
    trust = load_trust(network, settings.network_file)
    router = RequestRouter(settings, network, Codec.from_settings(settings), trust, signer=signer)
    console.print("request router running")
    router.run(stop)
    console.print(f"routed {router.routed}, refused {router.refused}")


@app.command("watch")
def watch_cmd(
    ctx: typer.Context,
    org: str = ORG,
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=0, max=65535, help="Serve Prometheus /metrics on 127.0.0.1."
    ),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Receive ORG's police messages and flag overdue requests until stopped."""
    stop = service_stop_event()
    settings = state(ctx).settings
    port = metrics_port if metrics_port is not None else settings.metrics_port
    metrics = setup_metrics(port, f"requests-{org}", settings)
    try:
        with _desk(ctx, org, network_file) as desk:
            watcher = OverdueWatcher(desk, metrics=metrics).start()
            if metrics.port is not None:
                console.print(f"metrics on http://127.0.0.1:{metrics.port}/metrics")
            try:
                while not stop.is_set():
                    desk.receive(timeout=1.0)
            finally:
                watcher.stop()
    finally:
        metrics.shutdown()


@app.command("stats")
def stats_cmd(
    ctx: typer.Context,
    year: int | None = typer.Option(None, "--year", help="The reporting year (default: this)."),
    country: str | None = typer.Option(None, "--state", help="Only this member state (SE)."),
    check: Path | None = typer.Option(
        None, "--check", help="Recompute and compare with tables saved earlier with --json."
    ),
    as_json: bool = JSON,
    as_csv: bool = typer.Option(False, "--csv", help="CSV export."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """The Art. 18 tables (sent, received, answered in time by urgency, refusals, deviations).

    Counted from the ledger after checking it (chain and signatures), never from a desk.
    """
    st = state(ctx)
    network = st.network(network_file)
    settings = st.settings
    saved = _saved_tables(check) if check is not None else None
    codec = Codec.from_settings(settings)
    with LedgerStore.for_settings(settings) as store:
        store.sync(settings, codec)
        trust = load_trust(network, settings.network_file)
        verdict = store.verify(trust, codec=codec, allow_plain=network.network.allow_plain)
        if not verdict.intact:
            first = str(verdict).splitlines()[0]
            raise LedgerError(f"the ledger does not verify, no statistics from it: {first}")
        tables = art18(store.records(), network, year or datetime.now(UTC).year)
    if country:
        tables = [t for t in tables if t.state == country.upper()]
    data = [t.to_json() for t in tables]
    if saved is not None:
        _compare(check, saved, data)
    elif as_csv:
        sys.stdout.write(to_csv(tables))
    elif as_json:
        print_json(data)
    else:
        _print_tables(data)


def _saved_tables(path: Path) -> list[dict[str, Any]]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a saved --json output ({type(exc).__name__})") from None
    if not isinstance(saved, list):
        raise ConfigError(f"{path}: not a saved --json output")
    return saved


def _compare(path: Path | None, saved: list[dict[str, Any]], data: list[dict[str, Any]]) -> None:
    by_state = {str(t.get("state")): t for t in saved if isinstance(t, dict)}
    for table in data:
        old = by_state.pop(table["state"], None)
        if old is None:
            raise ValidationFailed(f"{path}: has no tables of {table['state']}")
        for key, value in table.items():
            if old.get(key) != value:
                raise ValidationFailed(f"{path}: {table['state']} {key} differs from the ledger")
    if by_state:
        raise ValidationFailed(f"{path}: has tables of {', '.join(sorted(by_state))} too")
    console.print(f"{path}: every table equals the count from the verified ledger")


def _print_tables(data: list[dict[str, Any]]) -> None:
    for t in data:
        total = {
            k: sum(t[k].values())
            for k in ("sent", "received", "answered_within_limit", "answered_late", "refusals")
        }
        console.print(
            f"[bold]{t['state']}[/] ({t['spoc']}) {t['year']}: sent {total['sent']}, "
            f"received {total['received']}, answered in time {total['answered_within_limit']}, "
            f"late {total['answered_late']}, refused {total['refusals']}, "
            f"delayed {sum(t['deviations']['delayed'].values())}, "
            f"overdue {t['deviations']['overdue']}"
        )
        for key, n in t["refusals"].items():
            console.print(f"  refused {key}: {n}")
