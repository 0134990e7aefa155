"""The ledger's packed HandoverBatch: read back as exactly the events it stands for."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import CorruptDatum
from broker.ledger.batchwriter import MAX_PACKED_EVENTS, BatchWriter, EventFacts, event_id, pack
from broker.ledger.events import decode_events, handover_event
from broker.wire.codec import Codec
from broker.wire.models import HandoverEventType
from broker.wire.registry import HANDOVER_BATCH, EmbeddedRegistry

CODEC = Codec(EmbeddedRegistry())
TEXT = st.text(min_size=1, max_size=40)
OPT = st.none() | st.just("") | TEXT


def _listed(actor: str, facts: list[EventFacts]) -> bytes:
    """The same events as HandoverBatch versions 1-3 list them, one datum each."""
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
    st.uuids().map(str) | st.just(""),
    TEXT | st.just(""),
    OPT,
    OPT,
    OPT,
    st.none() | st.integers(0, 2**31 - 1),
    st.none() | st.integers(0, 2**63 - 1),
    OPT,
    st.none() | st.text("0123456789abcdef", min_size=32, max_size=32),
    st.integers(0, 2**50),
)


def test_writer_packs_for_the_registered_schema() -> None:
    writer = BatchWriter(CODEC, "router")
    assert writer.packed
    value = writer.encode([EventFacts("ROUTED", "", "c", "a", "b", "t", 0, 1, "r", None, 1)])
    assert CODEC.schema_id_of(value) == EmbeddedRegistry().latest(HANDOVER_BATCH).id == 22
    assert CODEC.decode(value)[1]["events"] == []


@settings(max_examples=80, deadline=None)
@given(st.lists(FACTS, max_size=12), st.sampled_from(["router", "rtr-ü"]))
def test_packed_reads_back_as_the_listed_events(facts: list[EventFacts], actor: str) -> None:
    packed = BatchWriter(CODEC, actor).encode(facts)
    assert _read(packed) == _read(_listed(actor, facts))


def _read(value: bytes) -> list[dict[str, object]] | str:
    """The events, or "corrupt" (a time past the year 9999 is corrupt in either form)."""
    try:
        return decode_events(CODEC, value)
    except CorruptDatum:
        return "corrupt"


def test_a_router_batch_packs_into_fewer_bytes() -> None:
    facts = [
        EventFacts(
            "ROUTED",
            str(uuid.uuid4()),
            f"case-{i:012x}",
            "hl-nl",
            "police-de",
            "referrals.to.DE",
            i % 3,
            10_000 + i,
            "DE:HOSTING",
            uuid.uuid4().hex,
            1_700_000_000_000 + i,
        )
        for i in range(500)
    ]
    packed, listed = BatchWriter(CODEC, "router").encode(facts), _listed("router", facts)
    assert len(packed) < 0.6 * len(listed)
    assert decode_events(CODEC, packed) == decode_events(CODEC, listed)


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


def _forged(**change: object) -> bytes:
    facts = [
        EventFacts("ROUTED", str(uuid.uuid4()), "c", "a", "b", "t", 0, i, "r", None, 1)
        for i in range(3)
    ]
    packed = {**pack(facts), **change}
    return CODEC.encode(HANDOVER_BATCH, {"actor": "router", "events": [], "packed": packed})


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"offset": [1, 2]}, "unequal length"),
        ({"route": [0, 0, 1]}, "route 1 of 1"),
        ({"route": [0, -1, 0]}, "route -1 of 1"),
        ({"at": [1, 2, 2**62]}, "out of range"),
    ],
)
def test_packed_columns_that_do_not_line_up_are_corrupt(
    change: dict[str, object], says: str
) -> None:
    with pytest.raises(CorruptDatum, match=says):
        decode_events(CODEC, _forged(**change))


def test_a_packed_record_expands_to_a_bounded_number_of_events() -> None:
    n = MAX_PACKED_EVENTS + 1
    value = _forged(
        route=[0] * n,
        referral_id=[""] * n,
        case_id=[""] * n,
        partition=[0] * n,
        offset=[0] * n,
        trace_id=[None] * n,
        at=[0] * n,
    )
    with pytest.raises(CorruptDatum, match="at most"):
        decode_events(CODEC, value)


def test_a_registry_without_version_4_gets_listed_events(tmp_path: Path) -> None:
    data = json.loads(Path(EmbeddedRegistry().path).read_text(encoding="utf-8"))
    data["schemas"] = [s for s in data["schemas"] if s["id"] < 14]
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    old = Codec(EmbeddedRegistry(path))
    writer = BatchWriter(old, "router")
    fact = EventFacts("ROUTED", str(uuid.uuid4()), "c", "a", "b", "t", 0, 1, "r", None, 1)
    value = writer.encode([fact])
    assert not writer.packed
    assert old.schema_id_of(value) == 13
    assert decode_events(CODEC, value) == decode_events(CODEC, _listed("router", [fact]))
