"""The router against the real embedded broker: every rule, dead letters, status return."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from broker.config import Settings
from broker.kafka.deadletter import H_CLASS, H_OFFSET, H_STAGE, H_TOPIC
from broker.ledger.events import decode_events
from broker.network import Network
from broker.routing.decide import add_hosting_jurisdictions
from broker.routing.router import STATUS_UPDATE
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from broker.wire.topics import Headers
from tests.support.factories import make_referral
from tests.support.kafka import header, publish, read_topic, start_router

REFERRAL = "org.referralbroker.v1.Referral"


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(EmbeddedRegistry())


def referral(
    *juris: tuple[str, str], priority: str = "NORMAL", tlp: str = "AMBER", recipients: Any = ()
) -> dict[str, Any]:
    """A valid referral datum (Avro form) with the given routing-relevant fields."""
    datum = copy.deepcopy(make_referral().to_avro())
    env = datum["envelope"]
    env["referral_id"] = str(uuid.uuid4())
    env["origin_org"] = "hl-nl"
    env["jurisdictions"] = [{"country": c, "basis": b, "derived": False} for c, b in juris]
    env["priority"] = priority
    env["handling"]["tlp"] = tlp
    env["handling"]["recipients"] = list(recipients)
    return datum


def rid(datum: dict[str, Any]) -> str:
    return str(datum["envelope"]["referral_id"])


def by_id(records: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in records:
        out.setdefault(r.key.decode(), []).append(r)
    return out


def test_router_routes_every_rule_and_dead_letters_the_rest(
    provisioned: Settings, network: Network, codec: Codec
) -> None:
    names = provisioned.topic_names()
    multi = referral(("DE", "HOSTING"), ("FR", "VICTIM_LOCATION"))
    urgent = referral(("NL", "HOSTING"), priority="URGENT")
    unserved = referral(("JP", "HOSTING"))
    red = referral(
        ("DE", "HOSTING"), ("FR", "VICTIM_LOCATION"), tlp="RED", recipients=["police-fr"]
    )
    derived = referral()
    derived["envelope"]["jurisdictions"] = add_hosting_jurisdictions(
        [], [{"hosting": {"ip": "8.8.8.8", "country": None}}]
    )
    unknown = referral(("DE", "HOSTING"))
    unknown["envelope"]["jurisdictions"][0]["country"] = "XX"
    good = [multi, urgent, unserved, red, derived]
    values = [(rid(d).encode(), codec.encode(REFERRAL, d)) for d in [*good, unknown]]
    garbage = (b"garbage-key", b"\x07not avro at all, not framed")
    oversize = (b"big", b"\x00" + b"\x00\x00\x00\x01" + b"x" * (1024 * 1024 + 10))
    publish(
        provisioned,
        names.intake,
        [*values, garbage, oversize],
        headers=[(Headers.TRACEPARENT, b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")],
    )
    status = {
        "referral_id": rid(multi),
        "case_id": multi["envelope"]["case_id"],
        "emitted_by": "police-de",
        "emitted_at": multi["envelope"]["created_at"],
        "status": "RECEIVED",
        "reason_code": None,
        "note": None,
        "next_update_due": None,
        "destination_org": "police-de",
        "origin_org": "hl-nl",
    }
    publish(
        provisioned,
        names.status_intake,
        [(rid(multi).encode(), codec.encode(STATUS_UPDATE, status))],
    )

    router = start_router(provisioned, network, codec)
    try:
        de = by_id(read_topic(provisioned, names.jurisdiction("DE"), at_least=1))
        fr = by_id(read_topic(provisioned, names.jurisdiction("FR"), at_least=2))
        nl_urgent = by_id(read_topic(provisioned, names.urgent("NL"), at_least=1))
        unassigned = by_id(read_topic(provisioned, names.unassigned, at_least=2))
        dlq = read_topic(provisioned, names.deadletter, at_least=3)
        back = read_topic(provisioned, names.status("hl-nl"), at_least=1)
    finally:
        stats = router.stop()

    # Fan-out: one copy per jurisdiction, original bytes unchanged, reason and orgs in headers.
    # By role: hosted in DE goes to the German hotline, the victim's location to French police.
    assert list(de) == [rid(multi)]
    assert de[rid(multi)][0].value == values[0][1]
    assert header(de[rid(multi)][0], Headers.ROUTE_REASON) == "DE:HOSTING"
    assert header(de[rid(multi)][0], Headers.DESTINATION_ORGS) == "hl-de"
    assert header(fr[rid(multi)][0], Headers.DESTINATION_ORGS) == "police-fr"
    assert header(de[rid(multi)][0], Headers.TRACEPARENT) is not None
    assert set(fr) == {rid(multi), rid(red)}
    # Urgent lane (hosted at the hotline's home: its own police).
    assert list(nl_urgent) == [rid(urgent)]
    assert header(nl_urgent[rid(urgent)][0], Headers.DESTINATION_ORGS) == "police-nl"
    assert read_topic(provisioned, names.jurisdiction("NL"), idle=0.5) == []
    # Fallback, including the country derived offline from a hosting IP.
    assert set(unassigned) == {rid(unserved), rid(derived)}
    assert header(unassigned[rid(derived)][0], Headers.ROUTE_REASON) == "US:HOSTING(derived)"
    assert header(unassigned[rid(unserved)][0], Headers.DESTINATION_ORGS) == "secretariat"
    # RED: only the named recipient's jurisdiction, only that organisation.
    assert header(fr[rid(red)][0], Headers.DESTINATION_ORGS) == "police-fr"
    assert rid(red) not in de
    # Dead letters keep the original bytes and say why, without quoting content.
    letters = {header(r, H_STAGE): r for r in dlq}
    assert len(dlq) == 3
    bad_code = next(r for r in dlq if r.key == rid(unknown).encode())
    assert bad_code.value == values[-1][1]
    assert header(bad_code, H_STAGE) == "ROUTE_DECIDE"
    assert header(bad_code, H_CLASS) == "broker.errors.RoutingError"
    junk = next(r for r in dlq if r.key == b"garbage-key")
    assert junk.value == garbage[1]
    assert header(junk, H_STAGE) == "ROUTE_DECODE"
    assert header(junk, H_TOPIC) == names.intake
    assert header(junk, H_OFFSET) is not None
    big = next(r for r in dlq if r.key == b"big")
    assert big.value == oversize[1]
    assert header(big, H_CLASS) == "broker.errors.RecordTooLarge"
    assert "ROUTE_DECODE" in letters
    # Status update went back to the origin's status topic unchanged.
    assert [r.value for r in back] == [codec.encode(STATUS_UPDATE, status)]
    assert stats.dead_lettered == 3
    assert stats.statuses == 1
    # The ledger has a ROUTED event per destination and a DEAD_LETTERED one per dead letter.
    ledger = [
        e
        for r in read_topic(provisioned, names.ledger, at_least=1)
        for e in decode_events(codec, r.value)
    ]
    routed = [e for e in ledger if e["event"] == "ROUTED"]
    assert len(routed) == 6  # multi x2, urgent, unserved, red, derived
    assert {e["reason"] for e in routed if e["referral_id"] == rid(multi)} == {
        "DE:HOSTING",
        "FR:VICTIM_LOCATION",
    }
    assert sum(e["event"] == "DEAD_LETTERED" for e in ledger) == 3
    assert sum(e["event"] == "STATUS_ROUTED" for e in ledger) == 1
    assert all(e["trace_id"] == "a" * 32 for e in routed)
