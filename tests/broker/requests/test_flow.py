"""Police requests on the real broker: signed, sealed, routed SPOC to SPOC, every step on record."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import Settings
from broker.errors import ValidationFailed
from broker.ledger.events import decode_events
from broker.requests.codes import HOUR_MS, MessageKind
from broker.requests.router import REASON_HEADER
from broker.requests.routes import REQUESTS_DEADLETTER, REQUESTS_INTAKE, to_topic
from broker.requests.wire import RequestError, build_message, verify_message
from broker.security.window import now_ms
from broker.wire.codec import Codec
from tests.support.connectors import wait_for
from tests.support.kafka import header, publish, read_topic
from tests.support.requests import SimClock, keyed_example, org_keys, request_network

T0 = 1_767_600_000_000  # 2026-01-05 08:00 UTC


def _request(secret: str, *, urgent: bool = True, access: str = "DIRECT") -> dict[str, object]:
    return {
        "urgent": urgent,
        "access": access,
        "purpose": f"purpose {secret}",
        "items": [f"item {secret}"],
        "handling": "H2",
        "reliability": "B",
        "assessment": "2",
        "language": "sv",
    }


def test_request_answered_through_the_router_sealed_and_on_record(
    settings: Settings, tmp_path: Path
) -> None:
    network = keyed_example(settings, tmp_path)
    codec = Codec.from_settings(settings)
    clock = SimClock(T0)
    names = settings.topic_names()
    with request_network(settings, network, codec, clock) as net:
        se, no = net.desks["police-se"], net.desks["police-no"]
        rid = se.request("police-no", "case-77", _request("s3cr3t-q"), referral_id=None)
        se.flush()
        assert no.receive(expect=1) == 1
        got = no.store.get(rid)
        assert (got.side, got.state, got.urgent, got.due_at) == (
            "of_me",
            "OPEN",
            True,
            T0 + 8 * HOUR_MS,
        )
        assert no.store.messages(rid)[0]["content"]["purpose"] == "purpose s3cr3t-q"
        clock.now += HOUR_MS
        no.answer(
            rid,
            {
                "text": "answer s3cr3t-a",
                "attachments": [{"name": "a", "data": "s3cr3t-att"}],
                "language": "no",
            },
        )
        no.flush()
        assert se.receive(expect=1) == 1
        mine = se.store.get(rid)
        assert (mine.side, mine.state, mine.closed_at) == ("by_me", "ANSWERED", T0 + HOUR_MS)
        with pytest.raises(RequestError, match="already answered"):
            no.refuse(rid, {"ground": "NOT_AVAILABLE"})
        with pytest.raises(RequestError, match="not the police single point of contact"):
            se.request("hl-se", "case-78", _request("x"))
    raw = b"".join(
        r.value
        for t in (
            names.prefix + REQUESTS_INTAKE,
            to_topic(names, "police-no"),
            to_topic(names, "police-se"),
            names.ledger,
        )
        for r in read_topic(settings, t, at_least=1)
    )
    for secret in (b"s3cr3t-q", b"s3cr3t-a", b"s3cr3t-att", b"purpose", b"case-77-x"):
        assert secret not in raw
    events = [
        (e["event"], e["actor"])
        for r in read_topic(settings, names.ledger, at_least=5)
        for e in decode_events(codec, r.value)
    ]
    assert events.count(("REQUEST_SENT", "police-se")) == 1
    assert events.count(("REQUEST_RECEIVED", "police-no")) == 1
    assert events.count(("REQUEST_ROUTED", "router")) == 2
    assert events.count(("REQUEST_ANSWERED", "police-no")) == 1
    assert events.count(("REQUEST_ANSWERED", "police-se")) == 1


def test_router_refuses_a_message_to_a_hotline_and_an_altered_one(
    settings: Settings, tmp_path: Path
) -> None:
    network = keyed_example(settings, tmp_path)
    codec = Codec.from_settings(settings)
    names = settings.topic_names()
    with request_network(settings, network, codec, SimClock(T0), orgs=("police-se",)) as net:
        keys = org_keys(settings, "police-se")
        msg = build_message(
            codec,
            keys,
            net.trust,
            kind=MessageKind.REQUEST,
            request_id=None,
            case_id="c-1",
            referral_id=None,
            to_org="police-fi",
            sent_at_ms=T0,
            signed_at_ms=now_ms(),
            content=_request("q"),
        )
        altered = bytearray(msg.value)
        altered[10] ^= 1
        publish(settings, names.prefix + REQUESTS_INTAKE, [(msg.key, bytes(altered))], msg.headers)
        old = build_message(
            codec,
            keys,
            net.trust,
            kind=MessageKind.REQUEST,
            request_id=None,
            case_id="c-1",
            referral_id=None,
            to_org="police-fi",
            sent_at_ms=T0,
            signed_at_ms=now_ms() - 31 * 86_400_000,
            content=_request("q"),
        )
        publish(settings, names.prefix + REQUESTS_INTAKE, [(old.key, old.value)], old.headers)
        dead = read_topic(settings, names.prefix + REQUESTS_DEADLETTER, at_least=2)
        reasons = sorted(str(header(r, REASON_HEADER)) for r in dead)
        assert reasons == ["SignatureInvalid", "SignatureOutOfWindow"]
        assert verify_message(codec, net.trust, msg.headers, msg.value)["to_org"] == "police-fi"
        with pytest.raises(ValidationFailed):
            net.desks["police-se"].request("police-se", "c-2", _request("q"))


def test_a_third_spoc_cannot_answer_or_hijack_a_request(settings: Settings, tmp_path: Path) -> None:
    network = keyed_example(settings, tmp_path)
    codec = Codec.from_settings(settings)
    orgs = ("police-se", "police-no", "police-dk")
    with request_network(settings, network, codec, SimClock(T0), orgs=orgs) as net:
        se, no, dk = (net.desks[o] for o in orgs)
        rid = se.request("police-no", "case-5", _request("q", urgent=False))
        se.flush()
        assert no.receive(expect=1) == 1
        for kind, content in (
            (MessageKind.ANSWER, {"text": "forged"}),
            (MessageKind.REFUSAL, {"ground": "NOT_AVAILABLE"}),
        ):
            forged = build_message(
                codec,
                org_keys(settings, "police-dk"),
                net.trust,
                kind=kind,
                request_id=rid,
                case_id="case-5",
                referral_id=None,
                to_org="police-se",
                sent_at_ms=T0,
                signed_at_ms=now_ms(),
                content=content,
            )
            dk.producer.send(
                names_intake(settings), key=forged.key, value=forged.value, headers=forged.headers
            )
        reused = build_message(
            codec,
            org_keys(settings, "police-dk"),
            net.trust,
            kind=MessageKind.REQUEST,
            request_id=rid,
            case_id="case-5",
            referral_id=None,
            to_org="police-no",
            sent_at_ms=T0,
            signed_at_ms=now_ms(),
            content=_request("again"),
        )
        dk.producer.send(
            names_intake(settings), key=reused.key, value=reused.value, headers=reused.headers
        )
        dk.flush()
        wait_for(lambda: net.router.routed >= 4, 20, "the router")
        assert se.receive(idle=1.0) == 0
        assert no.receive(idle=1.0) == 0
        assert se.store.get(rid).state == "OPEN"
        assert no.store.get(rid).counterpart == "police-se"


def names_intake(settings: Settings) -> str:
    """The request intake topic of this test."""
    return settings.topic_names().prefix + REQUESTS_INTAKE
