"""Receipts and handovers you can prove, on the real broker (issue 11's "must show").

Every organisation of the test network and the router have keys; the network
allows no plain referrals. The tests play a member with write access to every
topic — which on a real cluster every member has — and show that what it
writes is not acted on: forged receipts, copies on other lanes, a squatted
referral id, a revoked key, and a ledger rewritten behind everyone's back.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.contracts import Delivery, Sink
from broker.kafka import clients
from broker.kafka.deadletter import (
    H_CONNECTOR,
    H_MESSAGE,
    H_OFFSET,
    H_PARTITION,
    H_STAGE,
    H_TOPIC,
)
from broker.kafka.tally import UNATTRIBUTED_REFERRAL, summarised
from broker.ledger.checkpoint import Checkpointer, HeadWatcher
from broker.ledger.events import LedgerEmitter, handover_event
from broker.ledger.receipt import LedgerTree, ledger_origin
from broker.ledger.store import _FIELDS, GENESIS, LedgerStore, entry_hash
from broker.ledger.treehead import TreeHead
from broker.ledger.views import trace
from broker.network import Network, parse_network
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher
from broker.receiver.inbox import Inbox
from broker.receiver.sink_driver import SinkDriver
from broker.receiver.statuses import StatusSender
from broker.security.keys import (
    RELOAD_CHECK_SECONDS,
    ROUTER,
    LiveKeys,
    LiveTrust,
    OrgKeys,
    key_dir,
    revoke_in_trust_file,
)
from broker.security.rules import ReceiverSecurity
from broker.security.signing import LedgerContext, StatusContext, ledger_signer, sign
from broker.wire.codec import Codec
from broker.wire.models import ReferralStatus, StatusUpdate, utc_now_ms
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers
from cli.main import app
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import ENV, NETWORK_TOML, codec_for, referral_json, wait_for
from tests.support.kafka import (
    cli_env,
    header,
    provision_network,
    publish,
    read_topic,
    start_router,
)
from tests.support.security import give_keys

pytestmark = pytest.mark.slow

ORGS = ("hl-a", "hl-b", "police-nl", "police-de", "police-fr", "secretariat")
runner = CliRunner()


class Collect(Sink):
    """A sink that keeps what it is given."""

    kind = "collect"

    def __init__(self) -> None:
        self.got: list[Delivery] = []

    def deliver(self, delivery: Delivery) -> None:
        self.got.append(delivery)


def _network_text(trust: Path, republish_after: float) -> str:
    return (
        NETWORK_TOML.replace("{webhook_url}", "http://127.0.0.1:9/hook")
        .replace("{republish_after}", str(republish_after))
        .replace(
            'name = "connector test network"',
            f'name = "trust test network"\nallow_plain = false\ntrust_file = "{trust}"',
        )
    )


@pytest.fixture
def keyed(provisioned: Settings, tmp_path: Path) -> tuple[Settings, Network]:
    """Keys for every organisation and the router; a no-plain network on file; its topics."""
    trust = tmp_path / "trust.toml"
    give_keys(provisioned, trust, *ORGS, ROUTER)
    network_file = tmp_path / "network.toml"
    network_file.write_text(_network_text(trust, republish_after=3), encoding="utf-8")
    settings = Settings(**{**provisioned.model_dump(), "network_file": network_file})
    network = parse_network(network_file.read_text(), str(network_file))
    provision_network(settings, network)
    return settings, network


def _keys(settings: Settings, org: str) -> OrgKeys:
    keys = OrgKeys.load(key_dir(settings, org), org)
    assert keys is not None
    return keys


def _dead(settings: Settings, stage: str, at_least: int) -> list[Any]:
    """The dead letters at ``stage``, one per original record.

    Dead-lettering is at least once: a record redelivered after a rebalance on a
    slow machine is dead-lettered again, under the same original position.
    """

    def found() -> list[Any]:
        records = read_topic(settings, settings.topic_names().deadletter, idle=0.3, timeout=5)
        once: dict[tuple[str | None, ...], Any] = {}
        for r in records:
            if header(r, H_STAGE) == stage:
                where = (header(r, H_TOPIC), header(r, H_PARTITION), header(r, H_OFFSET))
                once.setdefault(where, r)
        return list(once.values())

    wait_for(lambda: len(found()) >= at_least, 60, f"{at_least} dead letter(s) at {stage}")
    return found()


def _drain(driver: SinkDriver, done: Any, timeout: float = 30) -> None:
    def step() -> bool:
        driver.poll_once()
        return bool(done())

    wait_for(step, timeout, f"sink driver of {driver.org_id}", step=0)


# -- forged receipts ---------------------------------------------------------------------------


def _receipt(
    codec: Codec, rid: str, case: str, emitter: str
) -> tuple[dict[str, Any], bytes, list[tuple[str, bytes]]]:
    update = StatusUpdate(
        referral_id=rid,
        case_id=case,
        emitted_by=emitter,
        emitted_at=utc_now_ms(),
        status=ReferralStatus.RECEIVED,
        origin_org="hl-a",
    )
    datum = update.to_avro()
    headers = [
        (Headers.REFERRAL_ID, rid.encode()),
        (Headers.CASE_ID, case.encode()),
        (Headers.ORIGIN, b"hl-a"),
    ]
    return datum, codec.encode(STATUS_UPDATE, datum), headers


def _forgeries(
    settings: Settings, codec: Codec, rid: str, case: str
) -> list[tuple[bytes, list[tuple[str, bytes]], str]]:
    """(value, headers, the refusal expected) of three forged RECEIVED receipts."""
    hl_b, fr = _keys(settings, "hl-b"), _keys(settings, "police-fr")
    _, unsigned, plain = _receipt(codec, rid, case, "police-de")
    datum, other, base = _receipt(codec, rid, case, "police-de")
    wrong_key = sign(hl_b.signing, hl_b.signing_id, StatusContext.of(datum), other)
    datum_fr, from_fr, base_fr = _receipt(codec, rid, case, "police-fr")
    by_fr = sign(fr.signing, fr.signing_id, StatusContext.of(datum_fr), from_fr)
    return [
        (unsigned, plain, "missing signature on a status update from police-de"),
        (
            other,
            base + wrong_key,
            f"signing key {hl_b.signing_id} is not a trusted key of police-de",
        ),
        (
            from_fr,
            base_fr + by_fr,
            "status from police-fr, which the referral was not routed to (recipients: police-de)",
        ),
    ]


@pytest.mark.parametrize("where", ["status.intake", "status.to.hl-a"])
def test_forged_receipts_leave_the_outbox_waiting_and_land_in_the_dead_letters(
    keyed: tuple[Settings, Network], where: str
) -> None:
    settings, network = keyed
    names = settings.topic_names()
    codec = codec_for(settings)
    target = names.status_intake if where == "status.intake" else names.status("hl-a")
    target_of = {names.status_intake, names.status("hl-a")}
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        origin = ConnectorRuntime(settings, network, "hl-a", codec, env=ENV)
        stack.callback(origin.stop)
        origin.start()
        data = referral_json("hl-a", "DE")
        rid, case = data["envelope"]["referral_id"], data["envelope"]["case_id"]
        assert origin.publisher.publish([("row", data)]).published[0].sent
        # police-de's connector is stopped: whatever answers now is somebody else.
        forgeries = _forgeries(settings, codec, rid, case)
        for value, headers, _ in forgeries:
            publish(settings, target, [(rid.encode(), value)], headers)

        # On status.intake the router already refuses the unsigned one (no plain statuses
        # on this network); the signed forgeries reach hl-a, which refuses them.
        at_router = forgeries[:1] if where == "status.intake" else []
        at_origin = forgeries[len(at_router) :]
        dead = _dead(settings, "STATUS_VERIFY", len(at_origin))
        assert sorted(header(d, H_MESSAGE) or "" for d in dead) == sorted(
            why for _, _, why in at_origin
        )
        assert {header(d, H_CONNECTOR) for d in dead} == {"hl-a"}
        assert {header(d, H_TOPIC) for d in dead} == {names.status("hl-a")}
        assert sorted(d.value for d in dead) == sorted(v for v, _, _ in at_origin)
        if at_router:
            [routed] = _dead(settings, "STATUS_ROUTE", 1)
            assert (header(routed, H_CONNECTOR), routed.value) == ("router", at_router[0][0])
        refused = {"STATUS_VERIFY": len(at_origin)}
        assert origin.status_log.refused_statuses() == refused

        # The outbox still holds the referral and sends it again after republish_after.
        wait_for(lambda: rid in origin.republished, 30, "the outbox republishing the referral")
        [pending] = origin.outbox.pending()
        assert (pending.referral_id, pending.waiting_for) == (rid, ("police-de",))
        assert pending.attempts >= 2
        assert not list((Path(settings.state_dir) / "orgs" / "hl-a" / "status").glob("*.jsonl"))

        # The ledger view counts no receipt: police-de is still awaited. Only the forgery
        # signed by a member (police-fr) is on record under the referral; the two nobody
        # can be held to are counted in a summary event, about no referral.
        with LedgerStore(Path(settings.state_dir) / "view.sqlite3") as store:

            def refused_on_record() -> bool:
                store.sync(settings, codec, timeout=10, idle=0.3, checkpoints=False)
                return (
                    sum(r.event == "DEAD_LETTERED" for r in store.records(rid)) == 1
                    and _summarised(store, target_of) >= 2
                )

            wait_for(refused_on_record, 30, "the refusals in the ledger")
            t = trace(store.records(rid), rid, network.deadlines, names, now=_now())
        assert t.received == {}
        assert [a.org for a in t.awaited] == ["police-de"]
        assert t.status is None

        # The real recipient comes back: its signed RECEIVED completes the referral.
        police = ConnectorRuntime(settings, network, "police-de", codec, env=ENV)
        stack.callback(police.stop)
        police.start()
        wait_for(lambda: origin.outbox.is_complete(rid), 60, "the real RECEIVED")
        assert origin.status_log.refused_statuses() == refused

        # Later statuses follow the lifecycle; a step back that arrives anyway is refused.
        sender = StatusSender(
            police.producer,
            codec,
            names,
            security=ReceiverSecurity.load(settings, network, "police-de"),
        )
        for status in (ReferralStatus.ACCEPTED, ReferralStatus.CLOSED, ReferralStatus.ACCEPTED):
            update = StatusUpdate(
                referral_id=rid,
                case_id=case,
                emitted_by="police-de",
                emitted_at=utc_now_ms(),
                status=status,
                origin_org="hl-a",
            )
            sender.send(update).get(timeout=10)
        [back] = _dead(settings, "STATUS_LIFECYCLE", 1)
        assert header(back, H_MESSAGE) == (
            "ACCEPTED refused after CLOSED: allowed next are none (CLOSED is final)"
        )
        assert origin.status_log.status_state(rid, "police-de") == "CLOSED"
        assert origin.status_log.refused_statuses() == {**refused, "STATUS_LIFECYCLE": 1}


def _summarised(store: LedgerStore, topics: set[str]) -> int:
    """How many unattributable dead letters of ``topics`` the store's summary events count."""
    said = [summarised(r.reason) for r in store.records(UNATTRIBUTED_REFERRAL) if r.topic in topics]
    return sum(s[1] for s in said if s is not None)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# -- routing checked at the receiver ----------------------------------------------------------


def _publish_as(settings: Settings, network: Network, codec: Codec, org: str, data: Any) -> None:
    outbox = Outbox.for_org(settings, org)
    producer = clients.producer(settings, role=f"test-{org}")
    publisher = Publisher(settings, network, org, codec, producer, outbox)
    try:
        result = publisher.publish([("row", data)])
        assert result.ok, result.rejected
        assert result.published[0].sent
    finally:
        publisher.close()
        producer.close()
        outbox.close()


def _driver(
    settings: Settings, network: Network, codec: Codec, org: str, topics: list[str], sink: Sink
) -> SinkDriver:
    driver = SinkDriver(
        settings,
        org,
        codec,
        topics,
        [sink],
        Inbox(Path(settings.state_dir) / f"inbox-{org}.sqlite3"),
        group_id=f"sink-{org}",
        security=ReceiverSecurity.load(settings, network, org),
    )
    driver.open()
    return driver


def test_a_referral_copied_onto_another_lane_is_not_delivered_there(
    keyed: tuple[Settings, Network],
) -> None:
    settings, network = keyed
    names = settings.topic_names()
    codec = codec_for(settings)
    _publish_as(settings, network, codec, "hl-a", referral_json("hl-a", "DE"))
    router = start_router(settings, network, codec)
    try:
        [routed] = read_topic(settings, names.jurisdiction("DE"), at_least=1)
    finally:
        router.stop()
    to_fr = [(k, b"police-fr" if k == Headers.DESTINATION_ORGS else v) for k, v in routed.headers]
    copy = [(routed.key, routed.value)]
    publish(settings, names.jurisdiction("FR"), copy, routed.headers)  # header still police-de
    publish(settings, names.jurisdiction("FR"), copy, to_fr)  # header re-addressed
    publish(settings, names.urgent("DE"), copy, routed.headers)  # a NORMAL one, urgent lane

    de_sink, fr_sink = Collect(), Collect()
    de = _driver(
        settings,
        network,
        codec,
        "police-de",
        [names.jurisdiction("DE"), names.urgent("DE")],
        de_sink,
    )
    fr = _driver(settings, network, codec, "police-fr", [names.jurisdiction("FR")], fr_sink)
    try:
        _drain(de, lambda: de.stats.delivered == 1 and de.stats.dead_lettered == 1)
        _drain(fr, lambda: fr.stats.skipped == 1 and fr.stats.dead_lettered == 1)
    finally:
        de.close()
        fr.close()
    assert [(d.topic, d.origin_org) for d in de_sink.got] == [(names.jurisdiction("DE"), "hl-a")]
    assert fr_sink.got == []
    dead = {header(d, H_CONNECTOR): d for d in _dead(settings, "ROUTE_CHECK", 2)}
    assert header(dead["police-de"], H_MESSAGE) == (
        "misrouted: the signed envelope routes to the normal lane of DE, "
        "not to the urgent lane of DE"
    )
    assert header(dead["police-fr"], H_MESSAGE) == (
        "misrouted: the signed envelope routes to the normal lane of DE, "
        "not to the normal lane of FR"
    )
    assert {header(d, H_TOPIC) for d in dead.values()} == {
        names.urgent("DE"),
        names.jurisdiction("FR"),
    }


# -- identity bound to the origin -------------------------------------------------------------


def test_a_member_squatting_another_origins_future_referral_id_does_not_stop_it(
    keyed: tuple[Settings, Network],
) -> None:
    settings, network = keyed
    codec = codec_for(settings)
    rid = str(uuid.uuid4())
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        runtimes = {}
        for org in ("police-de", "hl-a", "hl-b"):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(rt.stop)
            runtimes[org] = rt.start()
        # hl-b publishes its own referral first, under the id hl-a will use.
        squat = referral_json("hl-b", "DE", referral_id=rid)
        assert runtimes["hl-b"].publisher.publish([("row", squat)]).published[0].sent
        wait_for(lambda: runtimes["hl-b"].outbox.is_complete(rid), 60, "the squatter's receipt")
        real = referral_json("hl-a", "DE", referral_id=rid)
        assert runtimes["hl-a"].publisher.publish([("row", real)]).published[0].sent
        wait_for(lambda: runtimes["hl-a"].outbox.is_complete(rid), 60, "the real receipt")
        police = runtimes["police-de"]
        assert police.sink_driver is not None
        # Two deliveries, one per origin (a republish while a receipt was on its way may
        # add a skipped repeat; never a third delivery).
        assert police.sink_driver.stats.delivered == 2
        assert police.inbox.origins_of(rid) == ["hl-b", "hl-a"]
    # The operator's trace says the id was used by two organisations.
    env = cli_env(settings)
    code, out = _cli(env, "trace", rid)
    assert code == 0, out
    assert "warning: 2 organisations used this referral id (hl-b, hl-a)" in out
    code, out = _cli(env, "trace", rid, "--json", "--no-sync")
    assert code == 0, out
    assert json.loads(out)["origins"] == ["hl-b", "hl-a"]
    cases = Path(settings.state_dir) / "orgs" / "police-de" / "cases.sqlite3"
    with sqlite3.connect(cases) as db:
        rows = db.execute("SELECT origin_org, case_id FROM cases WHERE referral_id = ?", (rid,))
        assert sorted(rows.fetchall()) == sorted(
            [("hl-a", real["envelope"]["case_id"]), ("hl-b", squat["envelope"]["case_id"])]
        )


# -- revocation while running ------------------------------------------------------------------


def test_a_key_revoked_while_the_receiver_runs_is_refused_within_the_bound(
    keyed: tuple[Settings, Network], tmp_path: Path
) -> None:
    settings, network = keyed
    codec = codec_for(settings)
    kid = _keys(settings, "hl-a").signing_id
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        police = ConnectorRuntime(settings, network, "police-de", codec, env=ENV)
        stack.callback(police.stop)
        police.start()
        driver = police.sink_driver
        assert driver is not None
        before = referral_json("hl-a", "DE")
        _publish_as(settings, network, codec, "hl-a", before)
        wait_for(lambda: driver.stats.delivered == 1, 60, "the referral before the revocation")

        revoke_in_trust_file(tmp_path / "trust.toml", "hl-a", kid)
        revoked_at = time.monotonic()
        time.sleep(RELOAD_CHECK_SECONDS + 0.2)  # the stated bound: one look at the file
        after = referral_json("hl-a", "DE")
        _publish_as(settings, network, codec, "hl-a", after)
        [dead] = _dead(settings, "VERIFY", 1)
        refused_within = time.monotonic() - revoked_at
        assert header(dead, H_MESSAGE) == f"signing key {kid} of hl-a is revoked"
        assert header(dead, H_CONNECTOR) == "police-de"
        assert police.sink_driver is driver, "no restart"
        assert driver.stats.delivered == 1
        assert refused_within < 15  # published after the bound, refused on its first handling
        inbox = police.inbox
        assert inbox.lookup(after["envelope"]["referral_id"]) is None
        assert inbox.lookup(before["envelope"]["referral_id"]) is not None


# -- the ledger nobody can quietly rewrite ------------------------------------------------------


def _event(rid: str, n: int, actor: str, **kw: Any) -> dict[str, Any]:
    return handover_event(
        kw.pop("event", "DELIVERED"),
        referral_id=rid,
        case_id="case-1",
        actor=actor,
        from_party="hl-a",
        to_party=actor,
        topic="referrals.to.DE",
        partition=0,
        offset=n,
        at_ms=1_700_000_000_000 + n * 1000,
        **kw,
    )


def _send(settings: Settings, emitter: LedgerEmitter, events: list[dict[str, Any]]) -> None:
    futures = [emitter.emit(e) for e in events]
    if emitter.batch:
        futures = [emitter.flush_batch()]
    emitter._producer.flush()
    for f in futures:
        assert f is not None
        f.get(timeout=10)


@pytest.fixture
def signed_ledger(keyed: tuple[Settings, Network]) -> tuple[Settings, dict[str, str]]:
    """A ledger of 8 signed entries in two phases, a checkpoint after each, held by police-de;
    synced into the operator's store."""
    settings, network = keyed
    codec = codec_for(settings)
    ledger = settings.topic_names().ledger
    producer = clients.producer(settings, role="test-ledger")
    rid = str(uuid.uuid4())

    def connector(org: str) -> LedgerEmitter:
        keys = LiveKeys(key_dir(settings, org), org)
        return LedgerEmitter(producer, codec, ledger, signer=ledger_signer(keys, org))

    router_keys = LiveKeys(key_dir(settings, ROUTER), ROUTER)
    batch = LedgerEmitter(
        producer, codec, ledger, batch=True, actor=ROUTER, signer=ledger_signer(router_keys, ROUTER)
    )
    checkpointer = Checkpointer(
        settings,
        codec,
        router_keys,
        producer,
        store_path=Path(settings.state_dir) / "orgs" / ROUTER / "ledger.sqlite3",
    )
    heads = HeadWatcher(settings, "police-de", LiveTrust(network, settings.network_file))
    try:
        _send(settings, connector("hl-a"), [_event(rid, 0, "hl-a", event="PUBLISHED")])
        _send(settings, batch, [_event(rid, i, ROUTER, event="ROUTED") for i in (1, 2)])
        _send(settings, connector("police-de"), [_event(rid, 3, "police-de")])
        first = checkpointer.publish_now(force=True)
        assert first is not None
        assert first.count == 4
        _send(settings, connector("police-nl"), [_event(rid, 4, "police-nl")])
        _send(settings, batch, [_event(rid, i, ROUTER, event="STATUS_ROUTED") for i in (5, 6)])
        _send(settings, connector("hl-a"), [_event(rid, 7, "hl-a")])
        second = checkpointer.publish_now(force=True)
        assert second is not None
        assert second.count == 8
        # The second tree head, from the tree the checkpointer kept and extended, is the
        # one a tree built afresh over the router's store gives.
        with LedgerStore(Path(settings.state_dir) / "orgs" / ROUTER / "ledger.sqlite3") as own:
            fresh = LedgerTree.of(own).tree
        [*_, last] = checkpointer.tree_heads
        assert TreeHead.parse(last.body) == TreeHead(ledger_origin(ledger), 8, fresh.root())
        assert heads.poll_once() == 2
    finally:
        heads.stop()
        producer.close()
    env = cli_env(settings)
    code, out = _cli(env, "ledger", "sync")
    assert code == 0, out
    return settings, env


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={**env, "COLUMNS": "250"})
    return result.exit_code, result.stdout.strip()


def _store_db(settings: Settings) -> sqlite3.Connection:
    return sqlite3.connect(Path(settings.state_dir) / "ledger.sqlite3")


def _swap(db: sqlite3.Connection, i: int, j: int) -> None:
    cols = [r[1] for r in db.execute("PRAGMA table_info(entries)") if r[1] != "idx"]
    quoted = ", ".join(f'"{c}"' for c in cols)
    a = db.execute(f"SELECT {quoted} FROM entries WHERE idx = ?", (i,)).fetchone()
    b = db.execute(f"SELECT {quoted} FROM entries WHERE idx = ?", (j,)).fetchone()
    db.execute("DELETE FROM entries WHERE idx IN (?, ?)", (i, j))
    marks = ", ".join("?" * (len(cols) + 1))
    db.execute(f"INSERT INTO entries (idx, {quoted}) VALUES ({marks})", (i, *b))
    db.execute(f"INSERT INTO entries (idx, {quoted}) VALUES ({marks})", (j, *a))


def test_an_intact_signed_ledger_verifies_against_every_head(
    signed_ledger: tuple[Settings, dict[str, str]],
) -> None:
    _, env = signed_ledger
    code, out = _cli(env, "ledger", "verify")
    assert (code, out) == (
        0,
        "ledger intact: 8 entries, 8 signed, consistent with 2 signed checkpoint(s) held by "
        "police-de, the topic, this store\n"
        # police-de's head watcher here witnesses nothing (tests/broker/ledger/test_witness.py)
        "2 tree head(s); the latest (8 entries) cosigned by 0",
    )
    # On demand, with the router's key: a third head of the same 8 entries.
    code, out = _cli(env, "ledger", "checkpoint")
    assert code == 0, out
    assert out.startswith("checkpoint published: 8 entries, head ")
    code, out = _cli(env, "ledger", "verify", "--json")
    assert code == 0, out
    assert (json.loads(out)["checkpoints"], json.loads(out)["signed"]) == (3, 8)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (
            "UPDATE entries SET to_party = 'police-fr' WHERE idx = 3",
            "ledger broken at entry 3: altered",
        ),
        ("DELETE FROM entries WHERE idx = 5", "ledger broken at entry 5: missing"),
        ("swap 2 6", "ledger broken at entry 2: reordered"),
    ],
)
def test_altered_removed_and_reordered_entries_are_named(
    signed_ledger: tuple[Settings, dict[str, str]], tamper: str, expected: str
) -> None:
    settings, env = signed_ledger
    with _store_db(settings) as db:
        if tamper.startswith("swap"):
            _, i, j = tamper.split()
            _swap(db, int(i), int(j))
        else:
            db.executescript(tamper)
    code, out = _cli(env, "ledger", "verify")
    assert code == 1, out
    # Every breach is listed, one line each, in chain order: the tampered entry first.
    assert out.splitlines()[0].startswith(expected), out


@pytest.mark.parametrize(
    ("forger", "expected"),
    [
        ("unsigned", "ledger broken at entry 8: unsigned (no signature by police-de)"),
        ("as itself", "ledger broken at entry 8: forged (signed by hl-a for events of police-de)"),
        (
            "with its key",
            "ledger broken at entry 8: forged "
            "(signing key {kid} is not a trusted key of police-de)",
        ),
    ],
)
def test_forged_ledger_events_are_named_at_their_index(
    signed_ledger: tuple[Settings, dict[str, str]], forger: str, expected: str
) -> None:
    """police-de "delivered" — written by hl-a: unsigned, signed as hl-a, or with hl-a's key."""
    settings, env = signed_ledger
    codec = codec_for(settings)
    hl_a = _keys(settings, "hl-a")

    def with_hl_a_key(value: bytes, events: int) -> list[tuple[str, bytes]]:
        return sign(hl_a.signing, hl_a.signing_id, LedgerContext("police-de", 1, events), value)

    signer = {
        "unsigned": None,
        "as itself": ledger_signer(LiveKeys.fixed(hl_a), "hl-a"),
        "with its key": with_hl_a_key,
    }[forger]
    producer = clients.producer(settings, role="test-forger")
    try:
        emitter = LedgerEmitter(producer, codec, settings.topic_names().ledger, signer=signer)
        _send(settings, emitter, [_event(str(uuid.uuid4()), 8, "police-de")])
    finally:
        producer.close()
    assert _cli(env, "ledger", "sync")[0] == 0
    code, out = _cli(env, "ledger", "verify")
    assert (code, out) == (1, expected.format(kid=hl_a.signing_id))


def _rewrite_without(settings: Settings, k: int) -> None:
    """What someone with write access to the operator's disk does: remove entry ``k``,
    rechain everything after it, rewrite the stored head and the heads the store kept."""
    with _store_db(settings) as db:
        db.row_factory = sqlite3.Row
        offset = db.execute("SELECT ledger_offset FROM entries WHERE idx = ?", (k,)).fetchone()[0]
        db.execute("DELETE FROM entries WHERE idx = ?", (k,))
        # Its signed record goes too, unless another entry of the same batch needs it.
        db.execute(
            "DELETE FROM records WHERE ledger_offset = ? AND NOT EXISTS"
            " (SELECT 1 FROM entries WHERE ledger_offset = ?)",
            (offset, offset),
        )
        db.execute("UPDATE entries SET idx = idx - 1 WHERE idx > ?", (k,))
        rows = db.execute("SELECT * FROM entries ORDER BY idx").fetchall()
        prev = GENESIS if k == 0 else rows[k - 1]["entry_hash"]
        for row in rows[k:]:
            fields = {name: row[name] for name in _FIELDS}
            fields["ledger_offset"] = row["ledger_offset"]
            digest = entry_hash(prev, fields)
            db.execute(
                "UPDATE entries SET prev_hash = ?, entry_hash = ? WHERE idx = ?",
                (prev, digest, row["idx"]),
            )
            prev = digest
        db.execute("UPDATE meta SET value = ? WHERE key = 'head_count'", (str(len(rows)),))
        db.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (prev,))
        db.execute("DELETE FROM heads")


@pytest.mark.parametrize("removed", [5, 7])
def test_a_rewritten_store_with_a_rewritten_head_is_caught_by_the_heads_others_hold(
    signed_ledger: tuple[Settings, dict[str, str]], removed: int
) -> None:
    settings, env = signed_ledger
    _rewrite_without(settings, removed)
    # The chain and every remaining signature hold: only the heads others hold tell.
    with LedgerStore(Path(settings.state_dir) / "ledger.sqlite3") as store:
        assert store.verify().intact
    code, out = _cli(env, "ledger", "verify")
    assert (code, out) == (
        1,
        f"ledger broken at entry {removed}: rewritten (differs from the ledger topic; fewer "
        "entries than the checkpoint of 8 entries held by police-de, the topic)",
    )
    # Without Kafka, police-de's heads alone still catch it, from the last head that holds.
    code, out = _cli(env, "ledger", "verify", "--offline")
    assert (code, out) == (
        1,
        "ledger broken at entry 4: rewritten (fewer entries than the checkpoint of 8 entries "
        "held by police-de)",
    )


def test_a_flood_of_forged_checkpoints_is_refused_in_one_warning_line_per_poll(
    keyed: tuple[Settings, Network], caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone may write to the checkpoints topic: a holder refuses every forgery,
    keeps none, and says so once per poll, not once per record."""
    settings, network = keyed
    topic = settings.topic_names().checkpoints
    producer = clients.producer(settings, role="forger")
    forged = [b"not avro at all", b"\x00\x00\x00\x00\x07garbage"] * 25
    try:
        for value in forged:
            producer.send(topic, value=value, headers=[("referral.signature", b"\x01" * 64)])
        producer.flush(10)
    finally:
        producer.close()
    heads = HeadWatcher(settings, "police-nl", LiveTrust(network, settings.network_file))
    try:
        with caplog.at_level(logging.WARNING, logger="referral"):
            assert heads.poll_once() == 0
    finally:
        heads.stop()
    assert heads.refused == len(forged)
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"police-nl refused {len(forged)} checkpoint(s)" in lines[0]
    assert "garbage" not in lines[0]


# -- issue 21: a member that pre-empts event ids, a cut tail, several breaches at once ------------


def _member_emitters(settings: Settings) -> tuple[Any, Any, Any]:
    codec = codec_for(settings)
    ledger = settings.topic_names().ledger
    producer = clients.producer(settings, role="test-ledger")

    def connector(org: str) -> LedgerEmitter:
        keys = LiveKeys(key_dir(settings, org), org)
        return LedgerEmitter(producer, codec, ledger, signer=ledger_signer(keys, org))

    router_keys = LiveKeys(key_dir(settings, ROUTER), ROUTER)
    batch = LedgerEmitter(
        producer, codec, ledger, batch=True, actor=ROUTER, signer=ledger_signer(router_keys, ROUTER)
    )
    return producer, connector, batch


def test_a_member_that_pre_empts_event_ids_hides_no_real_event(
    keyed: tuple[Settings, Network],
) -> None:
    """police-nl, not involved, derives the ids the router's ROUTED and police-de's DELIVERED
    will carry and publishes its own validly signed events under them first."""
    settings, _ = keyed
    producer, connector, batch = _member_emitters(settings)
    rids = [str(uuid.uuid4()) for _ in range(4)]
    real: dict[str, list[dict[str, Any]]] = {
        rid: [
            _event(rid, 1, ROUTER, event="ROUTED"),
            _event(rid, 2, ROUTER, event="ROUTED"),
            _event(rid, 3, "police-de"),
        ]
        for rid in rids
    }
    try:
        for rid, events in real.items():
            decoys = []
            for e in events:
                decoy = _event(rid, int(e["offset"]), "police-nl", event=str(e["event"]))
                decoy["event_id"] = e["event_id"]  # the id of the event still to come
                decoys.append(decoy)
            _send(settings, connector("police-nl"), decoys)
        for events in real.values():
            _send(settings, batch, events[:2])
            _send(settings, connector("police-de"), events[2:])
    finally:
        producer.close()
    env = cli_env(settings)
    assert _cli(env, "ledger", "sync")[0] == 0
    for rid, events in real.items():
        code, out = _cli(env, "trace", rid, "--json")
        assert code == 0, out
        shown = {(h["event_id"], h["actor"]) for h in json.loads(out)["hops"]}
        assert {(e["event_id"], e["actor"]) for e in events} <= shown, rid
        assert not any(actor == "police-nl" for _, actor in shown), "the decoys are not handovers"
    code, out = _cli(env, "ledger", "verify")
    assert code == 1, out
    lines = out.splitlines()
    pre_empted = [ln for ln in lines if ": pre-empted" in ln]
    assert len(pre_empted) == 12, out
    assert all("sent by police-nl" in ln for ln in pre_empted)
    assert not any("conflict" in ln for ln in lines), out


def test_a_cut_tail_is_truncated_and_sync_repairs_it(
    signed_ledger: tuple[Settings, dict[str, str]],
) -> None:
    settings, env = signed_ledger
    with _store_db(settings) as db:
        # Cut the last three entries and move the read position back to their record.
        offset = db.execute("SELECT ledger_offset FROM entries WHERE idx = 5").fetchone()[0]
        db.execute("DELETE FROM entries WHERE idx >= 5")
        db.execute("UPDATE meta SET value = 5 WHERE key = 'head_count'")
        head = db.execute("SELECT entry_hash FROM entries WHERE idx = 4").fetchone()[0]
        db.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (head,))
        db.execute("UPDATE meta SET value = ? WHERE key = 'next_offset'", (offset,))
        db.commit()
    for offline in ((), ("--offline",)):
        code, out = _cli(env, "ledger", "verify", *offline)
        assert code == 1, out
        assert "ledger broken at entry 5: truncated (entries 5-7 missing" in out, out
    assert _cli(env, "ledger", "sync")[0] == 0
    code, out = _cli(env, "ledger", "verify")
    assert code == 0, out
    assert out.startswith("ledger intact: 8 entries")


def test_verify_names_every_breach_not_only_the_first(
    signed_ledger: tuple[Settings, dict[str, str]],
) -> None:
    settings, env = signed_ledger
    with _store_db(settings) as db:
        db.execute(
            "UPDATE records SET headers = '[]' WHERE ledger_offset IN "
            "(SELECT ledger_offset FROM entries WHERE idx IN (0, 3))"
        )
        db.execute("UPDATE entries SET reason = 'edited' WHERE idx = 6")
        db.commit()
    code, out = _cli(env, "ledger", "verify")
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0].startswith("ledger broken at entry 0: unsigned"), out
    assert any(ln.startswith("ledger broken at entry 3: unsigned") for ln in lines), out
    assert any(ln.startswith("ledger broken at entry 6: altered") for ln in lines), out


def test_a_status_for_a_version_never_published_is_refused(
    keyed: tuple[Settings, Network],
) -> None:
    """police-de, a real recipient, signs a RECEIVED for version 7 of a referral whose origin
    published only version 1: refused (STATUS_VERIFY), and its replay is refused again."""
    settings, network = keyed
    names = settings.topic_names()
    codec = codec_for(settings)
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        origin = ConnectorRuntime(settings, network, "hl-a", codec, env=ENV)
        stack.callback(origin.stop)
        origin.start()
        data = referral_json("hl-a", "DE")
        rid, case = data["envelope"]["referral_id"], data["envelope"]["case_id"]
        assert origin.publisher.publish([("row", data)]).published[0].sent
        producer = clients.producer(settings, role="test-police")
        stack.callback(producer.close)
        sender = StatusSender(
            producer, codec, names, security=ReceiverSecurity.load(settings, network, "police-de")
        )
        update = StatusUpdate(
            referral_id=rid,
            case_id=case,
            emitted_by="police-de",
            emitted_at=utc_now_ms(),
            status=ReferralStatus.RECEIVED,
            origin_org="hl-a",
            referral_version=7,
        )
        sender.send(update).get(timeout=10)
        [dead] = _dead(settings, "STATUS_VERIFY", 1)
        assert "names version 7 of referral" in (header(dead, H_MESSAGE) or "")
        assert "never published (latest 1)" in (header(dead, H_MESSAGE) or "")
        # Replayed byte for byte by someone without keys: refused again, never a receipt.
        publish(settings, names.status_intake, [(rid.encode(), dead.value)], _signature(dead))
        _dead(settings, "STATUS_VERIFY", 2)
        [pending] = origin.outbox.pending()
        assert pending.waiting_for == ("police-de",)
        assert origin.status_log.refused_statuses() == {"STATUS_VERIFY": 2}


def _signature(record: Any) -> list[tuple[str, bytes]]:
    """The signature headers a dead letter kept of the original record."""
    return [(k, v) for k, v in record.headers or () if k.startswith("referral.sig")]
