"""The operator's view on hand-built handover records: timeline, awaited, overdue, flows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from broker.ledger.views import (
    UNKNOWN_REFERRAL,
    HandoverRecord,
    UnknownReferral,
    first_published,
    flows,
    percentile,
    role_routes,
    trace,
)
from broker.network import Deadlines
from broker.wire.topics import TopicNames

NAMES = TopicNames("acme.")
DEADLINES = Deadlines(receipt_hours=72, urgent_receipt_hours=8)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
_ids = count()


def rec(rid: str, event: str, minutes: float, actor: str, **kw: str | None) -> HandoverRecord:
    n = next(_ids)
    return HandoverRecord(
        event_id=f"e{n}",
        referral_id=rid,
        case_id="case-7",
        event=event,
        actor=actor,
        at=T0 + timedelta(minutes=minutes),
        index=n,
        **kw,  # type: ignore[arg-type]
    )


def published(rid: str, m: float, origin: str = "hl-nl") -> HandoverRecord:
    return rec(rid, "PUBLISHED", m, origin, from_party=origin, topic=NAMES.intake)


def routed(rid: str, m: float, topic: str, orgs: str, origin: str = "hl-nl") -> HandoverRecord:
    return rec(
        rid, "ROUTED", m, "router", from_party=origin, to_party=orgs, topic=topic, reason="X"
    )


def delivered(rid: str, m: float, topic: str, org: str) -> HandoverRecord:
    return rec(rid, "DELIVERED", m, org, from_party="hl-nl", to_party=org, topic=topic)


def status(rid: str, m: float, org: str, what: str = "RECEIVED") -> HandoverRecord:
    """The origin's record that it verified ``org``'s status and acted on it."""
    return rec(
        rid, "DELIVERED", m, "hl-nl", from_party=org, to_party="hl-nl",
        topic=NAMES.status("hl-nl"), reason=what,
    )  # fmt: skip


def transit(rid: str, m: float, org: str, what: str = "RECEIVED") -> HandoverRecord:
    """The router passing a status on: transit, checked by nobody yet."""
    return rec(
        rid, "STATUS_ROUTED", m, "router", from_party=org, to_party="hl-nl",
        topic=NAMES.status("hl-nl"), reason=what,
    )  # fmt: skip


def test_trace_orders_hops_and_measures_the_gaps() -> None:
    rid = str(uuid.uuid4())
    events = [
        status(rid, 30, "police-de", "ACCEPTED"),
        published(rid, 0),
        routed(rid, 1, NAMES.jurisdiction("DE"), "police-de"),
        delivered(rid, 5, NAMES.jurisdiction("DE"), "police-de"),
        status(rid, 6, "police-de"),
        published(str(uuid.uuid4()), 2),  # another referral: not in this trace
    ]
    t = trace(events, rid, DEADLINES, NAMES, now=T0 + timedelta(hours=1))
    assert [h.record.event for h in t.hops] == [
        "PUBLISHED", "ROUTED", "DELIVERED", "DELIVERED", "DELIVERED",
    ]  # fmt: skip
    assert [h.since_previous for h in t.hops] == [
        None, timedelta(minutes=1), timedelta(minutes=4), timedelta(minutes=1),
        timedelta(minutes=24),
    ]  # fmt: skip
    assert [h.jurisdiction for h in t.hops][:3] == [None, "DE", "DE"]
    assert t.origin == "hl-nl"
    assert t.case_id == "case-7"
    assert (t.status, t.status_by) == ("ACCEPTED", "police-de")
    assert t.route_reasons == {NAMES.jurisdiction("DE"): "X"}
    assert t.received == {"police-de": T0 + timedelta(minutes=6)}
    assert t.awaited == ()
    assert t.to_json()["hops"][1]["since_previous_s"] == 60.0


def test_only_statuses_the_origin_verified_count_and_the_current_one_is_by_lifecycle() -> None:
    rid = str(uuid.uuid4())
    base = [
        published(rid, 0),
        routed(rid, 1, NAMES.jurisdiction("DE"), "police-de"),
        routed(rid, 1, NAMES.jurisdiction("NL"), "police-nl"),
        delivered(rid, 5, NAMES.jurisdiction("DE"), "police-de"),
        # A forged RECEIVED passed on by the router: the origin refused it, nothing accepted.
        transit(rid, 6, "police-nl"),
    ]
    now = T0 + timedelta(hours=1)
    t = trace(base, rid, DEADLINES, NAMES, now=now)
    assert t.received == {}
    assert {a.org for a in t.awaited} == {"police-de", "police-nl"}
    assert t.status is None
    # A status "accepted" by someone else than the origin is no acceptance either.
    forged = rec(
        rid, "DELIVERED", 7, "police-nl", from_party="police-nl", to_party="hl-nl",
        topic=NAMES.status("hl-nl"), reason="RECEIVED",
    )  # fmt: skip
    assert trace([*base, forged], rid, DEADLINES, NAMES, now=now).received == {}
    # CLOSED then a late RECEIVED (a receipt for a redelivery): CLOSED stays current.
    done = [
        *base,
        status(rid, 8, "police-de"),
        status(rid, 9, "police-de", "ACCEPTED"),
        status(rid, 10, "police-de", "CLOSED"),
        status(rid, 11, "police-de", "RECEIVED"),
        status(rid, 12, "police-nl", "RECEIVED"),
        status(rid, 13, "police-nl", "DELAYED"),
    ]
    t = trace(done, rid, DEADLINES, NAMES, now=now)
    assert (t.status, t.status_by) == ("CLOSED", "police-de")
    assert t.statuses == {"police-de": "CLOSED", "police-nl": "RECEIVED"}
    assert t.awaited == ()


def test_awaited_destinations_and_their_deadlines() -> None:
    rid = str(uuid.uuid4())
    events = [
        published(rid, 0),
        routed(rid, 1, NAMES.urgent("DE"), "police-de"),
        routed(rid, 1, NAMES.jurisdiction("FR"), "police-fr,police-fr2"),
        routed(rid, 1, NAMES.unassigned, "secretariat"),
        # RECEIVED from police-fr2 only; a RECEIVED from someone else clears nobody else.
        status(rid, 2, "police-fr2"),
        status(rid, 3, "police-de", "ACCEPTED"),
    ]
    # Nine hours on: past the urgent 8 h, well within 72 h.
    t = trace(events, rid, DEADLINES, NAMES, now=T0 + timedelta(hours=9))
    by_org = {a.org: a for a in t.awaited}
    assert set(by_org) == {"police-de", "police-fr", "secretariat"}
    de = by_org["police-de"]
    assert (de.urgent, de.jurisdiction, de.overdue) == (True, "DE", True)
    assert de.due == T0 + timedelta(minutes=1, hours=8)
    assert de.late_by(T0 + timedelta(hours=9)) == timedelta(minutes=59)
    fr = by_org["police-fr"]
    assert (fr.urgent, fr.jurisdiction, fr.overdue) == (False, "FR", False)
    assert fr.due == T0 + timedelta(minutes=1, hours=72)
    assert by_org["secretariat"].jurisdiction is None
    assert [a.org for a in t.overdue] == ["police-de"]
    assert t.status == "ACCEPTED"
    # Just before the urgent deadline nothing is overdue.
    early = trace(events, rid, DEADLINES, NAMES, now=T0 + timedelta(hours=8))
    assert early.overdue == ()


def test_unknown_referral_is_an_error_naming_the_id() -> None:
    rid = str(uuid.uuid4())
    with pytest.raises(UnknownReferral, match=rid):
        trace([published(str(uuid.uuid4()), 0)], rid, DEADLINES, NAMES, now=T0)


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([3.0], 95) == 3.0
    assert percentile([10.0, 0.0], 50) == 5.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 101)


def test_flows_matrix_times_overdue_dead_letters_and_totals() -> None:
    de, fr, urgent_de = NAMES.jurisdiction("DE"), NAMES.jurisdiction("FR"), NAMES.urgent("DE")
    events: list[HandoverRecord] = []
    # hl-nl → DE, delivered and received, three times with growing handover times.
    for i in range(3):
        rid = str(uuid.uuid4())
        events += [
            published(rid, 0),
            routed(rid, 1, de, "police-de"),
            delivered(rid, 1 + (i + 1) * 2, de, "police-de"),  # 3, 5, 7 minutes after publish
            status(rid, 1 + (i + 1) * 2 + 1, "police-de"),  # 1 minute after delivery
        ]
    # hl-se → DE urgent lane, delivered, no RECEIVED for 9 hours: overdue (8 h urgent).
    late = str(uuid.uuid4())
    events += [
        published(late, 0, "hl-se"),
        routed(late, 1, urgent_de, "police-de", "hl-se"),
        delivered(late, 2, urgent_de, "police-de"),
    ]
    # hl-nl → unassigned (fallback delivers it; still counted as unassigned).
    fallback = str(uuid.uuid4())
    events += [
        published(fallback, 0),
        routed(fallback, 1, NAMES.unassigned, "secretariat"),
        delivered(fallback, 2, NAMES.unassigned, "secretariat"),
    ]
    # hl-nl → FR, the FR sink dead-letters it.
    dead = str(uuid.uuid4())
    events += [
        published(dead, 0),
        routed(dead, 1, fr, "police-fr"),
        rec(dead, "DEAD_LETTERED", 2, "police-fr", topic=fr, reason="DELIVER: DeliveryError"),
    ]
    # hl-nl → FR, routed, not yet delivered (pending, not yet overdue).
    pending = str(uuid.uuid4())
    events += [published(pending, 0), routed(pending, 1, fr, "police-fr")]
    # Two undecodable intake records: no referral id, each one counts.
    for _ in range(2):
        events.append(
            rec(
                UNKNOWN_REFERRAL,
                "DEAD_LETTERED",
                1,
                "router",
                topic=NAMES.deadletter,
                reason="ROUTE_DECODE: NotFramed",
            )
        )
    # An old referral before --since: left out entirely.
    old = str(uuid.uuid4())
    events += [
        rec(old, "PUBLISHED", -600, "hl-nl", from_party="hl-nl", topic=NAMES.intake),
        routed(old, -599, de, "police-de"),
    ]

    now = T0 + timedelta(hours=9)
    f = flows(events, DEADLINES, NAMES, now=now, since=T0 - timedelta(hours=1))

    assert f.matrix == {"hl-nl": {"DE": 3, "FR": 2, "unassigned": 1}, "hl-se": {"DE": 1}}
    assert f.columns == ["DE", "FR", "unassigned"]
    routes = {(r.origin, r.destination): r for r in f.routes}
    nl_de = routes[("hl-nl", "DE")]
    assert nl_de.referrals == 3
    assert sorted(nl_de.publish_to_deliver) == [180.0, 300.0, 420.0]
    assert nl_de.to_json()["published_to_delivered"] == {"n": 3, "p50_s": 300.0, "p95_s": 408.0}
    assert nl_de.to_json()["delivered_to_received"]["p95_s"] == 60.0
    assert routes[("hl-se", "DE")].deliver_to_receive == ()
    assert [(a.referral_id, a.org, a.urgent) for a in f.overdue] == [(late, "police-de", True)]
    assert f.dead_letters == {"DELIVER: DeliveryError": 1, "ROUTE_DECODE: NotFramed": 2}
    t = f.totals
    assert (t.published, t.delivered, t.dead_lettered, t.unassigned, t.pending) == (9, 4, 3, 1, 1)
    assert t.delivered + t.dead_lettered + t.unassigned + t.pending == t.published

    everything = flows(events, DEADLINES, NAMES, now=now)
    assert everything.totals.published == 10
    assert everything.matrix["hl-nl"]["DE"] == 4
    # The old referral (routed 10 h before T0, no RECEIVED) is overdue at 72 h only later.
    assert [a.referral_id for a in everything.overdue] == [late]
    later = flows(events, DEADLINES, NAMES, now=T0 + timedelta(hours=63))
    assert old in {a.referral_id for a in later.overdue}
    assert later.to_json()["totals"]["published"] == 10


def test_role_routes_count_each_referral_once_per_role_route() -> None:
    roles = {"hl-nl": "hotline", "hl-se": "hotline", "police-nl": "police", "police-se": "police"}
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    records = [
        rec(a, "ROUTED", 1, "router", from_party="hl-nl", to_party="hl-se",
            topic=NAMES.jurisdiction("SE"), reason="SE:HOSTING"),
        # the same decision again (a redelivered intake record): counted once
        rec(a, "ROUTED", 2, "router", from_party="hl-nl", to_party="hl-se",
            topic=NAMES.jurisdiction("SE"), reason="SE:HOSTING"),
        rec(b, "ROUTED", 3, "router", from_party="hl-nl", to_party="police-nl,police-se",
            topic=NAMES.jurisdiction("NL"), reason="NL:VICTIM_LOCATION"),
        rec(c, "ROUTED", 4, "router", from_party="hl-se", to_party="hl-se",
            topic=NAMES.jurisdiction("SE"), reason="SE:HOSTING"),
        rec(c, "ROUTED", 5, "router", from_party="stranger", to_party="secretariat",
            topic=NAMES.unassigned, reason="DK:HOSTING"),
        delivered(c, 6, NAMES.jurisdiction("SE"), "hl-se"),
    ]  # fmt: skip
    got = [r.to_json() for r in role_routes(records, roles.get)]
    assert got == [
        {"sender_role": "hotline", "basis": "HOSTING", "receiver_role": "hotline",
         "referrals": 2, "pairs": ["hl-nl → hl-se", "hl-se → hl-se"]},
        {"sender_role": "hotline", "basis": "VICTIM_LOCATION", "receiver_role": "police",
         "referrals": 1, "pairs": ["hl-nl → police-nl", "hl-nl → police-se"]},
        {"sender_role": "unknown", "basis": "HOSTING", "receiver_role": "unknown",
         "referrals": 1, "pairs": ["stranger → secretariat"]},
    ]  # fmt: skip


def test_flows_measure_from_the_first_publish_never_negative() -> None:
    """A republish, and a PUBLISHED stamped at the broker's acknowledgement (after the
    router and the sink had handled it, as the demo's ledger showed): hl-se → DE
    is measured from the first publication and is not negative."""
    de, nl = NAMES.jurisdiction("DE"), NAMES.jurisdiction("NL")
    rid, acked = str(uuid.uuid4()), str(uuid.uuid4())
    events = [
        # Published at 0, republished at 30 (the outbox's retry), delivered at 2.
        published(rid, 0, "hl-se"),
        routed(rid, 1, de, "police-de", "hl-se"),
        delivered(rid, 2, de, "police-de"),
        rec(rid, "REPUBLISHED", 30, "hl-se", from_party="hl-se", topic=NAMES.intake),
        # PUBLISHED recorded 0.1 min after the router and the sink had it (the ack's time).
        routed(acked, 0, nl, "police-nl", "hl-se"),
        delivered(acked, 0.5, nl, "police-nl"),
        published(acked, 0.6, "hl-se"),
    ]
    f = flows(events, DEADLINES, NAMES, now=T0 + timedelta(hours=1))
    times = {r.destination: r for r in f.routes}
    assert times["DE"].publish_to_deliver == (120.0,)  # from the first publish, not the retry
    assert times["NL"].publish_to_deliver == (30.0,)  # from the routing, not −6 s
    for route in f.routes:
        assert all(t >= 0 for t in route.publish_to_deliver)
    assert first_published(events[:4]) == T0
