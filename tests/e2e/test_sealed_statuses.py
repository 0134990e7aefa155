"""Statuses travel sealed (issue 23's "must show"): a raw-byte scan of every status topic.

A signed and sealed network on the embedded broker: hl-a publishes a referral
to police-nl, which answers with a note, a DELAYED reason code and item
outcomes naming a moved item's new host (IP, provider, a country no member
serves), then with a status
its origin refuses (dead-lettered). No canary is readable in the raw bytes
(keys, values, headers) of status intake, any ``status.to.*`` topic, the
handover ledger or the dead letters; hl-a's status folder shows every one.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.kafka import clients
from broker.network import Network
from broker.receiver.statuses import StatusSender, new_status_update, send_status_update
from broker.security.rules import ReceiverSecurity
from broker.wire import models as m
from connectors.runtime import ConnectorRuntime
from tests.e2e.test_trust import _dead, keyed
from tests.support.connectors import ENV, codec_for, referral_json, wait_for
from tests.support.kafka import read_topic, start_router

pytestmark = pytest.mark.slow

__all__ = ["keyed"]  # the sealed and signed network of the trust tests


def _item(n: int) -> dict[str, Any]:
    return {
        "url": f"https://host-{n}-{secrets.token_hex(3)}.example.org/item/{n}",
        "media_type": "IMAGE",
        "hashes": [{"algorithm": "SHA256", "value": secrets.token_hex(32)}],
        "hosting": {"country": "NL", "provider": "Example Hosting"},
    }


def _raw(record: Any) -> bytes:
    """Every byte of a record anyone with read access sees: key, value, headers."""
    parts = [record.key or b"", record.value or b""]
    for k, v in record.headers or ():
        parts += [k.encode(), v or b""]
    return b"\x00".join(parts)


@pytest.fixture
def running(keyed: tuple[Settings, Network]) -> Iterator[dict[str, ConnectorRuntime]]:
    """The router, hl-a's connectors (the origin) and police-nl's (the receiver)."""
    settings, network = keyed
    codec = codec_for(settings)
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        out = {}
        for org in ("hl-a", "police-nl"):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(rt.stop)
            out[org] = rt.start()
        yield out


def test_no_note_reason_or_outcome_is_readable_on_any_status_topic(
    keyed: tuple[Settings, Network], running: dict[str, ConnectorRuntime]
) -> None:
    settings, network = keyed
    tag = secrets.token_hex(6)
    canary = {
        "note": f"note-canary-{tag}",
        "reason": f"REASON_CANARY_{tag.upper()}",
        "ip": f"198.51.100.{secrets.randbelow(200) + 20}",
        # The ledger's outcome summary counts moved items; it does not say where to.
        "new country": "moved to US",
        "provider": f"provider-canary-{tag}",
        "refused note": f"refused-note-canary-{tag}",
    }
    origin, police = running["hl-a"], running["police-nl"]
    codec = origin.codec
    data = referral_json("hl-a", "NL", items=[_item(1), _item(2)])
    rid = data["envelope"]["referral_id"]
    assert origin.publisher.publish([("row", data)]).published[0].sent
    wait_for(lambda: origin.outbox.is_complete(rid), 60, "police-nl's RECEIVED")
    record = police.inbox.lookup(rid, "hl-a")
    assert record is not None
    moved, removed = police.inbox.item_ids("hl-a", rid)
    now = datetime.now(UTC)
    outcomes = [
        m.ItemOutcome(
            item_id=moved,
            outcome=m.ItemOutcomeKind.STILL_ONLINE,
            observed_at=now,
            hosting=m.HostingEvidence(ip=canary["ip"], provider=canary["provider"], country="US"),
        ),
        m.ItemOutcome(item_id=removed, outcome=m.ItemOutcomeKind.REMOVED, observed_at=now),
    ]
    producer = clients.producer(settings, role="test-police-nl")
    try:
        # What `referral status` and the console send, one after the other.
        steps: list[tuple[m.ReferralStatus, list[m.ItemOutcome], dict[str, Any]]] = [
            (m.ReferralStatus.ACCEPTED, [], {"note": canary["note"]}),
            (m.ReferralStatus.DELAYED, [], {"reason_code": canary["reason"]}),
            (m.ReferralStatus.NTD_SENT, [], {}),
            (m.ReferralStatus.STILL_ONLINE, outcomes, {"note": canary["note"]}),
        ]
        for status, items, kw in steps:
            update = new_status_update(police.inbox, "police-nl", record, status, items, **kw)
            send_status_update(settings, network, codec, producer, update)
        # A status the origin refuses (ACCEPTED after STILL_ONLINE): a dead letter.
        refused = m.StatusUpdate(
            referral_id=rid,
            case_id=record.case_id,
            emitted_by="police-nl",
            emitted_at=now,
            status=m.ReferralStatus.ACCEPTED,
            note=canary["refused note"],
            origin_org="hl-a",
        )
        security = ReceiverSecurity.load(settings, network, "police-nl")
        try:
            sender = StatusSender(producer, codec, settings.topic_names(), security=security)
            sender.send(refused).get(timeout=30)
        finally:
            security.close()
    finally:
        producer.close(10)

    # The origin shows what its recipient said: the note, the reason, the new host.
    folder = Path(settings.state_dir) / "orgs" / "hl-a" / "status" / f"{rid}.jsonl"

    def shown() -> str:
        return folder.read_text() if folder.exists() else ""

    wait_for(lambda: canary["provider"] in shown(), 60, "hl-a to see the item outcomes")
    lines = [json.loads(line) for line in shown().splitlines()]
    by_status = {line["status"]: line for line in lines}
    assert by_status["ACCEPTED"]["note"] == canary["note"]
    assert by_status["DELAYED"]["reason_code"] == canary["reason"]
    hosts = {o["item_id"]: o.get("hosting") for o in by_status["STILL_ONLINE"]["item_outcomes"]}
    assert hosts[moved]["ip"] == canary["ip"]
    assert hosts[moved]["provider"] == canary["provider"]
    assert hosts[moved]["country"] == "US"
    assert canary["refused note"] not in shown()
    [dead] = [d for d in _dead(settings, "STATUS_LIFECYCLE", 1) if rid.encode() in _raw(d)]

    # Raw bytes: status intake, every organisation's status topic, the ledger, dead letters.
    names = settings.topic_names()
    topics = [
        names.status_intake,
        *(names.status(o.id) for o in network.organisations),
        names.ledger,
        names.deadletter,
    ]
    scanned: dict[str, int] = {}
    for topic in topics:
        records = read_topic(settings, topic, idle=0.5, timeout=10)
        scanned[topic] = len(records)
        for r in records:
            raw = _raw(r)
            found = [k for k, v in canary.items() if v.encode() in raw]
            assert not found, f"{', '.join(found)} readable on {topic}"
    # The scan saw the updates: 1 receipt + 4 statuses + the refused one on intake and on
    # hl-a's status topic, the dead letter, and the ledger's hops.
    assert scanned[names.status_intake] >= 6
    assert scanned[names.status("hl-a")] >= 6
    assert scanned[names.deadletter] >= 1
    assert scanned[names.ledger] >= 6
    assert dead.value  # the refused status's own (sealed) bytes are kept
    print(f"scanned, no canary: {sum(scanned.values())} records on {len(topics)} topics")
