"""Erasure shreds the sealed copies on the topic (issue 27), periods on a simulated clock.

A signed network on the embedded broker: hl-a sends police-nl referrals over three
period keys. The rotation runs on a simulated clock (``[retention] key_period_days =
30``). An ERASE (``referral erase``) of a past period's referral destroys that period
key: its record fetched from the topic opens with nothing police-nl still holds, while
the period's other referrals open (the console, ``referral show``, a sink
re-delivery, both versions of an amended one); an ERASE of the current period's
forces a rotation first. A period key goes a grace second after its period ended
(what senders sealed before re-reading the trust file still opens). A 60-day GREEN
rule on the simulated clock erases and shreds the GREEN referral alone; a period
ended 60 days ago has its key destroyed outright.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.errors import SealError
from broker.kafka import clients
from broker.kafka.deadletter import H_STAGE
from broker.network import Network, parse_network
from broker.origin.erase_request import ErasureBook
from broker.receiver.erasure import ReceiverEraser, RetentionSweep, period_keys, shredder_for
from broker.security.keys import ROUTER, OrgKeys, key_dir
from broker.security.sealing import open_sealed, sealed_key_id
from broker.security.shredding import ContentKeyCache, PeriodKeys
from broker.wire.registry import REFERRAL
from cli.main import app
from connectors.runtime import ConnectorRuntime
from console.liaison import LiaisonDesk
from tests.support.connectors import codec_for, referral_json, wait_for
from tests.support.kafka import cli_env, header, provision_network, read_topic, start_network
from tests.support.security import give_keys

pytestmark = pytest.mark.slow

runner = CliRunner()
ORG = "police-nl"
DAY = 86400.0


def _network_toml(trust: Path) -> str:
    return f"""[network]
name = "shredding test network"
allow_plain = false
trust_file = "{trust}"

[topics]
partitions = 1

[retention]
key_period_days = 30
key_destroy_grace_seconds = 1
check_hours = 744
[[retention.rules]]
tlp = ["GREEN"]
after_days = 60

[[organisations]]
id = "hl-a"
name = "Test Hotline A"
role = "hotline"
country = "NL"
[organisations.connectors.outbox]
republish_after = 1
check_interval = 0.5

[[organisations]]
id = "{ORG}"
name = "Test Police NL"
role = "police"
country = "NL"
[organisations.connectors.inbox_folder]
path = "orgs/{ORG}/inbox"

[routing]
fallback = "{ORG}"
[routing.jurisdictions]
NL = ["{ORG}"]
"""


class Clock:
    """A simulated clock (epoch seconds), moved on by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _records(settings: Settings) -> dict[str, Any]:
    """What the NL topic holds: referral id → its record (the last copy)."""
    codec = codec_for(settings)
    out = {}
    for r in read_topic(settings, settings.topic_names().jurisdiction("NL"), idle=0.3, timeout=5):
        if header(r, "referral.kind") is not None:
            continue  # an erase request
        _, datum = codec.decode(r.value, expected=REFERRAL)
        out[datum["envelope"]["referral_id"]] = r
    return out


def _body(settings: Settings, record: Any) -> dict[str, Any]:
    _, datum = codec_for(settings).decode(record.value, expected=REFERRAL)
    return dict(datum["body"])


def _opens(settings: Settings, rid: str, record: Any) -> bool:
    """Whether anything police-nl holds (every key on disk, every kept content key) opens
    ``rid``'s sealed copy fetched from the topic."""
    directory = key_dir(settings, ORG)
    keys = OrgKeys.load(directory, ORG)
    assert keys is not None
    cache = ContentKeyCache.in_key_dir(directory)
    try:
        kept = [bytes(r["content_key"]) for r in cache.db.query("SELECT * FROM content_keys")]
        tries: list[Callable[[str], bytes | None]] = [lambda _k: None]
        tries += [lambda _k, key=key: key for key in kept]  # type: ignore[misc]
        for cached in tries:
            try:
                open_sealed(
                    _body(settings, record),
                    referral_id=rid,
                    origin="hl-a",
                    org_id=ORG,
                    private_keys=keys.encryption,
                    cached=cached,
                )
                return True
            except SealError:
                continue
        return False
    finally:
        cache.close()


def _current_key(settings: Settings) -> str:
    keys = OrgKeys.load(key_dir(settings, ORG), ORG)
    assert keys is not None
    return list(keys.encryption)[-1]


def _send(rt: ConnectorRuntime, settings: Settings, n: int, tlp: str = "AMBER") -> list[str]:
    """Publish ``n`` referrals sealed under police-nl's current key; their ids once received."""
    current = _current_key(settings)
    wait_for(
        lambda: rt.publisher.security.trust.encryption_key(ORG)[0] == current,
        30,
        "hl-a sealing to police-nl's current period key",
    )
    data = [referral_json("hl-a", "NL") for _ in range(n)]
    for d in data:
        d["envelope"]["handling"]["tlp"] = tlp
    assert rt.publisher.publish([(f"row {i}", d) for i, d in enumerate(data)]).ok
    rids = [str(d["envelope"]["referral_id"]) for d in data]
    wait_for(lambda: all(rt.outbox.is_complete(r) for r in rids), 60, "the receipts")
    return rids


def _send_amended(rt: ConnectorRuntime, settings: Settings) -> tuple[str, str]:
    """Publish a referral and then an amendment of it (in one period); its id and the
    amended summary, once version 2 is received."""
    data = referral_json("hl-a", "NL")
    rid = str(data["envelope"]["referral_id"])
    assert rt.publisher.publish([("first", data)]).ok
    wait_for(lambda: rt.outbox.is_complete(rid), 60, "version 1 received")
    data["body"]["summary"] = "amended summary of the case"
    assert rt.publisher.publish([("amended", data)], amend=True).ok

    def received() -> bool:
        now = rt.outbox.get(rid)
        return now is not None and now.version == 2 and rt.outbox.is_complete(rid)

    wait_for(received, 60, "version 2 received")
    return rid, str(data["body"]["summary"])


def _repeated(settings: Settings, rt: ConnectorRuntime, record: Any, what: str) -> None:
    """Publish ``record`` again and wait until the sink driver counted it as a repeat."""
    driver = rt.sink_driver
    assert driver is not None
    before = driver.stats.duplicates
    _redeliver(settings, record)
    wait_for(lambda: driver.stats.duplicates > before, 30, what)


def _copies(settings: Settings, rid: str) -> list[Any]:
    """Every copy of ``rid`` on the NL topic, in order (version 1 first)."""
    codec = codec_for(settings)
    out = []
    for r in read_topic(settings, settings.topic_names().jurisdiction("NL"), idle=0.3, timeout=5):
        if header(r, "referral.kind") is None:
            _, datum = codec.decode(r.value, expected=REFERRAL)
            if datum["envelope"]["referral_id"] == rid:
                out.append(r)
    return out


def _erase(env: dict[str, str], settings: Settings, rid: str) -> None:
    asked = runner.invoke(app, ["erase", rid, "--as", "hl-a", "--reason", "INCORRECT"], env=env)
    assert asked.exit_code == 0, asked.output

    def answered() -> bool:
        book = ErasureBook.for_org(settings, "hl-a")
        try:
            return book.all_answered(rid)
        finally:
            book.close()

    wait_for(answered, 60, "police-nl's ERASED")


def _redeliver(settings: Settings, record: Any) -> None:
    """Publish a copy of ``record`` again (as the origin's outbox would)."""
    producer = clients.producer(settings, role="test-republisher")
    try:
        producer.send(
            record.topic, key=record.key, value=record.value, headers=list(record.headers)
        ).get(timeout=10)
    finally:
        producer.close(5)


def test_an_erased_referral_copy_on_the_topic_no_longer_opens_its_period_fellows_do(
    settings: Settings, tmp_path: Path
) -> None:
    trust = tmp_path / "trust.toml"
    give_keys(settings, trust, "hl-a", ORG, ROUTER)
    (tmp_path / "network.toml").write_text(_network_toml(trust))
    network: Network = parse_network((tmp_path / "network.toml").read_text(), "network.toml")
    settings = settings.model_copy(update={"network_file": tmp_path / "network.toml"})
    provision_network(settings, network)
    env = {**cli_env(settings), "REFERRAL_NETWORK_FILE": str(tmp_path / "network.toml")}
    codec = codec_for(settings)
    clock = Clock()
    periods = period_keys(settings, network, ORG, clock)
    assert isinstance(periods, PeriodKeys)
    with ExitStack() as stack:
        stack.callback(periods.shredder.close)
        rts = start_network(stack, settings, network, codec, ("hl-a", ORG), republish_after=1)
        hl, nl = rts["hl-a"], rts[ORG]
        assert nl.period_keys is not None  # the connector rotates on its own (real clock)
        assert nl.period_keys.period_days == 30
        p1 = _current_key(settings)
        assert periods.tick().rotated is None  # day 0: the first period starts
        a, b = _send(hl, settings, 2)
        (g,) = _send(hl, settings, 1, tlp="GREEN")
        m, m_summary = _send_amended(hl, settings)  # two versions sealed under p1
        clock.now += 29 * DAY
        assert periods.tick().rotated is None
        clock.now += 2 * DAY  # day 31: the next period
        p2 = periods.tick().rotated
        assert p2 is not None
        assert p2 == _current_key(settings) != p1
        d, e = _send(hl, settings, 2)
        rec = _records(settings)
        assert {sealed_key_id(_body(settings, rec[r]), ORG) for r in (a, b, g)} == {p1}
        assert {sealed_key_id(_body(settings, rec[r]), ORG) for r in (d, e)} == {p2}
        assert all(_opens(settings, r, rec[r]) for r in (a, b, g, d, e))

        # ERASE of a past period's referral: that period key goes, its fellows are kept.
        _erase(env, settings, a)
        gone = key_dir(settings, ORG) / f"enc-{p1}.pem"
        wait_for(lambda: not gone.exists(), 15, "p1 destroyed (1 s after the ERASE)")
        assert not _opens(settings, a, rec[a]), "the erased referral's copy still opens"
        assert _opens(settings, b, rec[b])
        assert _opens(settings, g, rec[g])
        assert _opens(settings, d, rec[d])
        assert _current_key(settings) == p2
        desk = LiaisonDesk(settings, network, ORG, codec)
        try:
            shown = desk.reveal(b, "shred check")
            assert shown.envelope["referral_id"] == b
            assert shown.summary
        finally:
            desk.close()
        shown_cli = runner.invoke(app, ["show", b, "--as", ORG], env=env)  # referral show
        assert shown_cli.exit_code == 0, shown_cli.output
        # A sink re-delivery of b (a republished copy) still opens: a repeat, not a dead letter.
        assert nl.sink_driver is not None
        repeats = nl.sink_driver.stats.duplicates
        _redeliver(settings, rec[b])
        wait_for(lambda: nl.sink_driver is not None and nl.sink_driver.stats.duplicates > repeats,
                 30, "b's copy delivered again as a repeat")  # fmt: skip
        dead = read_topic(settings, settings.topic_names().deadletter, idle=0.3, timeout=3)
        assert [x for x in dead if x.value == rec[b].value] == []
        # Both versions of the amended m open from their own kept keys: the console shows
        # version 2, and a late copy of either version is a repeat, not a dead letter.
        desk = LiaisonDesk(settings, network, ORG, codec)
        try:
            assert desk.reveal(m, "shred check").summary == m_summary
        finally:
            desk.close()
        versions = _copies(settings, m)
        assert len(versions) == 2
        for copy in versions:
            _repeated(settings, nl, copy, "m's copy delivered again as a repeat")
        dead = read_topic(settings, settings.topic_names().deadletter, idle=0.3, timeout=3)
        assert [x for x in dead if x.value in {c.value for c in versions}] == []
        # A copy of the erased a arriving again is a skipped repeat, not an UNSEAL dead letter.
        repeats = nl.sink_driver.stats.duplicates
        _redeliver(settings, rec[a])
        wait_for(lambda: nl.sink_driver is not None and nl.sink_driver.stats.duplicates > repeats,
                 30, "a's copy skipped as erased")  # fmt: skip

        # ERASE of the current period's referral: rotate first, then destroy p2.
        _erase(env, settings, d)
        p3 = _current_key(settings)
        assert p3 not in (p1, p2)
        gone = key_dir(settings, ORG) / f"enc-{p2}.pem"
        wait_for(lambda: not gone.exists(), 15, "p2 destroyed (1 s after the rotation)")
        assert not _opens(settings, d, rec[d])
        assert _opens(settings, e, rec[e])
        assert _opens(settings, b, rec[b])
        (f,) = _send(hl, settings, 1)
        rec = _records(settings)
        assert sealed_key_id(_body(settings, rec[f]), ORG) == p3

        # The 60-day GREEN rule on the simulated clock erases g alone, and shreds it.
        clock.now += 30 * DAY  # day 61 for what was stored on day 0
        shredder = shredder_for(settings, network, ORG, clock)
        assert shredder is not None
        stack.callback(shredder.close)
        eraser = ReceiverEraser(
            settings, ORG, nl.built.sinks, nl.inbox, shredder, nl.sink_driver.keys_changed
        )
        erased = RetentionSweep(
            eraser, network.retention, lambda: datetime.fromtimestamp(clock.now, UTC)
        ).sweep()
        assert [x.referral_id for x in erased] == [g]
        assert not _opens(settings, g, rec[g])
        assert all(_opens(settings, r, rec[r]) for r in (b, e, f))

        # Periods past the longest rule (60 days after they ended): destroyed outright.
        clock.now += 31 * DAY  # day 92: p1 ended on day 31, p2 on day 31 (sim) or earlier
        tick = periods.tick()
        assert set(tick.expired) >= {p1, p2}
        assert tick.rotated is not None
        assert not _opens(settings, b, rec[b])
        assert not _opens(settings, e, rec[e])
        assert _opens(settings, f, rec[f])
        clock.now += 61 * DAY
        assert p3 in periods.tick().expired
        assert not (key_dir(settings, ORG) / f"enc-{p3}.pem").exists()
        assert not _opens(settings, f, rec[f])
        # What police-nl still holds is of the current period only, nothing of an erased one.
        cache = ContentKeyCache.in_key_dir(key_dir(settings, ORG))
        try:
            held = {h.referral_id for h in cache.held()}
        finally:
            cache.close()
        assert held.isdisjoint({a, d, g})
        dead = read_topic(settings, settings.topic_names().deadletter, idle=0.3, timeout=3)
        assert [header(x, H_STAGE) for x in dead] == []
