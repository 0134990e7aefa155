"""The router's pre-compiled HandoverBatch writer: byte for byte the codec's encoding."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.ledger.batchwriter import BatchWriter, EventFacts, event_id
from broker.ledger.events import decode_events, handover_event
from broker.wire.codec import Codec
from broker.wire.models import HandoverEventType
from broker.wire.registry import HANDOVER_BATCH, EmbeddedRegistry

CODEC = Codec(EmbeddedRegistry())
TEXT = st.text(min_size=1, max_size=40)
OPT = st.none() | TEXT


def _by_dicts(actor: str, facts: list[EventFacts]) -> bytes:
    events = [
        handover_event(
            f.kind,
            referral_id=f.referral_id,
            case_id=f.case_id,
            actor=actor,
            from_party=f.from_party,
            to_party=f.to_party,
            topic=f.topic,
            partition=f.partition,
            offset=f.offset,
            reason=f.reason,
            trace_id=f.trace_id,
            at_ms=f.at_ms,
        )
        for f in facts
    ]
    return CODEC.encode(HANDOVER_BATCH, {"actor": actor, "events": events})


FACTS = st.builds(
    EventFacts,
    st.sampled_from([k.value for k in HandoverEventType]),
    st.uuids().map(str),
    TEXT,
    OPT,
    OPT,
    OPT,
    st.none() | st.integers(0, 2**31 - 1),
    st.none() | st.integers(0, 2**63 - 1),
    OPT,
    st.none() | st.text("0123456789abcdef", min_size=32, max_size=32),
    st.integers(0, 2**50),
)


def test_writer_is_compiled_for_the_registered_schema() -> None:
    assert BatchWriter(CODEC, "router").compiled


@settings(max_examples=60, deadline=None)
@given(st.lists(FACTS, max_size=8), st.sampled_from(["router", "rtr-ü"]))
def test_same_bytes_as_the_codec(facts: list[EventFacts], actor: str) -> None:
    assert BatchWriter(CODEC, actor).encode(facts) == _by_dicts(actor, facts)


def test_events_read_back_with_the_derived_ids() -> None:
    rid = str(uuid.uuid4())
    fact = EventFacts("ROUTED", rid, "c", "hl-nl", "police-nl", "t", 2, 7, "HOSTING", None, 1)
    (event,) = decode_events(CODEC, BatchWriter(CODEC, "router").encode([fact]))
    assert event["event_id"] == event_id(
        rid, "ROUTED", "router", "hl-nl", "police-nl", "t", 2, 7, "HOSTING"
    )
    assert str(uuid.UUID(event["event_id"])) == event["event_id"]
    assert uuid.UUID(event["event_id"]).version == 5


def test_unknown_kind_is_refused() -> None:
    fact = EventFacts("NOPE", str(uuid.uuid4()), "c", None, None, None, None, None, None, None, 1)
    with pytest.raises((KeyError, ValueError)):
        BatchWriter(CODEC, "router").encode([fact])
