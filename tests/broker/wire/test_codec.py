"""Confluent wire format: exact bytes, other implementations, evolution, hostile input."""

from __future__ import annotations

import copy
import io
import json
import shutil
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.errors import (
    CodecError,
    CorruptDatum,
    NotFramed,
    RecordTooLarge,
    SchemaMismatch,
    UnknownSchemaId,
)
from broker.wire import models as m
from broker.wire.codec import ROUTING_FIELDS, Codec, SerializationContext
from broker.wire.registry import (
    HANDOVER_EVENT,
    REFERRAL,
    STATUS_UPDATE,
    EmbeddedRegistry,
    default_schema_dir,
    load_working_schemas,
)
from tests.support.factories import (
    handover_events,
    make_referral,
    make_status_update,
    referrals,
    status_updates,
)

FIXED_TS = datetime(2024, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)

#: The wire bytes of fixed_referral() with schema id 10 (Referral version 4: the envelope ends with
#: its version, 1 = ``02``, and no parent, union branch 0 = ``00``; each item ends with its
#: item_id and its own classification). A change here is a wire change.
FIXED_REFERRAL_HEX = (
    "000000000a4830303030303030302d303030302d343030302d383030302d30303030303030303030303112"
    "636173652d3030303114686f746c696e652d6e6c044e4c0204444500010000021273796e74686574696308"
    "0212706f6c6963652d64650004a691f39fbf63020004783100020000023868747470733a2f2f686f73742d"
    "312e6578616d706c652e6f72672f6104020040303030303030303030303030303030303030303030303030"
    "3030303030303030000202123139322e302e322e3102e8ef070002044445024864343530643864392d6437"
    "30612d356234652d623639392d61366230636432333866393500000000000200000600a691f39fbf630000"
    "02a691f39fbf630002186e65757472616c2074657874"
)
#: The same referral as written by Referral version 3 (schema id 6: item ids, no version/parent).
FIXED_REFERRAL_V3_HEX = (
    "00000000064830303030303030302d303030302d343030302d383030302d30303030303030303030303112"
    "636173652d3030303114686f746c696e652d6e6c044e4c0204444500010000021273796e74686574696308"
    "0212706f6c6963652d64650004a691f39fbf6302000478310000023868747470733a2f2f686f73742d312e"
    "6578616d706c652e6f72672f61040200403030303030303030303030303030303030303030303030303030"
    "303030303030000202123139322e302e322e3102e8ef070002044445024864343530643864392d64373061"
    "2d356234652d623639392d61366230636432333866393500000000000200000600a691f39fbf63000002a6"
    "91f39fbf630002186e65757472616c2074657874"
)
#: The item id derived for fixed_referral()'s one item (UUIDv5, schemas/README.md).
FIXED_ITEM_ID = "d450d8d9-d70a-5b4e-b699-a6b0cd238f95"
#: The same referral as written by Referral version 2 (schema id 5: the body union, no item ids).
FIXED_REFERRAL_V2_HEX = (
    "00000000054830303030303030302d303030302d343030302d383030302d30303030303030303030303112"
    "636173652d3030303114686f746c696e652d6e6c044e4c0204444500010000021273796e74686574696308"
    "0212706f6c6963652d64650004a691f39fbf6302000478310000023868747470733a2f2f686f73742d312e"
    "6578616d706c652e6f72672f61040200403030303030303030303030303030303030303030303030303030"
    "303030303030000202123139322e302e322e3102e8ef070002044445000000000200000600a691f39fbf63"
    "000002a691f39fbf630002186e65757472616c2074657874"
)
#: The same referral as written by Referral version 1 (schema id 1, body a plain CaseBody).
FIXED_REFERRAL_V1_HEX = (
    "00000000014830303030303030302d303030302d343030302d383030302d30303030303030303030303112"
    "636173652d3030303114686f746c696e652d6e6c044e4c0204444500010000021273796e74686574696308"
    "0212706f6c6963652d64650004a691f39fbf63020004783100023868747470733a2f2f686f73742d312e65"
    "78616d706c652e6f72672f6104020040303030303030303030303030303030303030303030303030303030"
    "3030303030000202123139322e302e322e3102e8ef070002044445000000000200000600a691f39fbf6300"
    "0002a691f39fbf630002186e65757472616c2074657874"
)


def fixed_referral() -> m.Referral:
    """A referral with every value fixed (no clock, no randomness)."""
    return m.Referral.model_validate(
        {
            "envelope": {
                "referral_id": "00000000-0000-4000-8000-000000000001",
                "case_id": "case-0001",
                "origin_org": "hotline-nl",
                "origin_country": "NL",
                "jurisdictions": [{"country": "DE", "basis": "HOSTING", "derived": True}],
                "priority": "URGENT",
                "urgency_reason": "synthetic",
                "handling": {"tlp": "RED", "recipients": ["police-de"], "handling_code": "H2"},
                "created_at": FIXED_TS,
                "external_refs": [{"system": "ICCAM", "id": "x1"}],
            },
            "body": {
                "items": [
                    {
                        "url": "https://host-1.example.org/a",
                        "media_type": "WEBPAGE",
                        "hashes": [{"algorithm": "MD5", "value": "0" * 32}],
                        "hosting": {
                            "ip": "192.0.2.1",
                            "asn": 64500,
                            "provider": None,
                            "country": "DE",
                        },
                    }
                ],
                "classification": {
                    "legal_status": "BASELINE",
                    "assessed_under": None,
                    "incident_type": "CSAM_IMAGERY",
                    "annotations": ["GENERATIVE_AI"],
                    "victim_age_group": "UNKNOWN",
                },
                "timeline": {"incident_at": None, "received_at": FIXED_TS, "assessed_at": None},
                "prior_actions": {"ntd_sent_at": None, "reported_to_le_at": FIXED_TS},
                "duplicate_of": None,
                "summary": "neutral text",
            },
        }
    )


def fixed_status() -> m.StatusUpdate:
    """A status update with three item outcomes, every value fixed."""
    return m.StatusUpdate.model_validate(
        {
            "referral_id": "00000000-0000-4000-8000-000000000001",
            "case_id": "case-0001",
            "emitted_by": "police-de",
            "emitted_at": FIXED_TS,
            "status": "NTD_SENT",
            "origin_org": "hotline-nl",
            "item_outcomes": [
                {
                    "item_id": "00000000-0000-5000-8000-00000000000a",
                    "outcome": "REMOVED",
                    "observed_at": FIXED_TS,
                },
                {
                    "item_id": "00000000-0000-5000-8000-00000000000b",
                    "outcome": "STILL_ONLINE",
                    "observed_at": FIXED_TS,
                    "hosting": {"ip": "192.0.2.9", "country": "FR"},
                },
                {
                    "item_id": "00000000-0000-5000-8000-00000000000c",
                    "outcome": "NOT_ILLEGAL",
                    "observed_at": FIXED_TS,
                    "assessed_under": "DE",
                },
            ],
        }
    )


#: The wire bytes of fixed_status() with schema id 15 (StatusUpdate version 4: item outcomes,
#: the referral version, then the sealed content, both null = ``00``).
FIXED_STATUS_HEX = (
    "000000000f4830303030303030302d303030302d343030302d383030302d30303030303030303030303112"
    "636173652d3030303112706f6c6963652d6465a691f39fbf630a0000000014686f746c696e652d6e6c0648"
    "30303030303030302d303030302d353030302d383030302d30303030303030303030306100a691f39fbf63"
    "00004830303030303030302d303030302d353030302d383030302d30303030303030303030306202a691f3"
    "9fbf630202123139322e302e322e39000002044652004830303030303030302d303030302d353030302d38"
    "3030302d30303030303030303030306306a691f39fbf630002044445000000"
)
#: fixed_status() as StatusUpdate version 3 wrote it (schema id 11: item outcomes, then the
#: referral version, null = ``00``; no sealed content).
FIXED_STATUS_V3_HEX = (
    "000000000b4830303030303030302d303030302d343030302d383030302d30303030303030303030303112"
    "636173652d3030303112706f6c6963652d6465a691f39fbf630a0000000014686f746c696e652d6e6c0648"
    "30303030303030302d303030302d353030302d383030302d30303030303030303030306100a691f39fbf63"
    "00004830303030303030302d303030302d353030302d383030302d30303030303030303030306202a691f3"
    "9fbf630202123139322e302e322e39000002044652004830303030303030302d303030302d353030302d38"
    "3030302d30303030303030303030306306a691f39fbf6300020444450000"
)
#: fixed_status() as StatusUpdate version 2 wrote it (schema id 7: no referral version).
FIXED_STATUS_V2_HEX = (
    "00000000074830303030303030302d303030302d343030302d383030302d30303030303030303030303112"
    "636173652d3030303112706f6c6963652d6465a691f39fbf630a0000000014686f746c696e652d6e6c0648"
    "30303030303030302d303030302d353030302d383030302d30303030303030303030306100a691f39fbf63"
    "00004830303030303030302d303030302d353030302d383030302d30303030303030303030306202a691f3"
    "9fbf630202123139322e302e322e39000002044652004830303030303030302d303030302d353030302d38"
    "3030302d30303030303030303030306306a691f39fbf63000204444500"
)
#: fixed_status() without its outcomes as StatusUpdate version 1 wrote it (schema id 2).
FIXED_STATUS_V1_HEX = (
    "00000000024830303030303030302d303030302d343030302d383030302d30303030303030303030303112"
    "636173652d3030303112706f6c6963652d6465a691f39fbf630a0000000014686f746c696e652d6e6c"
)

CODEC = Codec(EmbeddedRegistry())
VALID = CODEC.encode(REFERRAL, make_referral().to_avro())
VALID_STATUS = CODEC.encode(STATUS_UPDATE, make_status_update().to_avro())


def test_fixed_referral_encodes_to_the_checked_in_bytes() -> None:
    data = CODEC.encode(REFERRAL, fixed_referral().to_avro())
    assert data.hex() == FIXED_REFERRAL_HEX
    name, datum = CODEC.decode(bytes.fromhex(FIXED_REFERRAL_HEX))
    assert name == REFERRAL
    assert m.Referral.from_avro(datum) == fixed_referral()


def test_version_2_bytes_still_decode_to_the_same_referral_with_the_same_item_ids() -> None:
    """Version 2 writers sent no item ids: the reader derives the ones version 3 writes."""
    v2 = bytes.fromhex(FIXED_REFERRAL_V2_HEX)
    assert CODEC.schema_id_of(v2) == 5
    name, datum = CODEC.decode(v2)
    assert name == REFERRAL
    assert datum["body"]["items"][0]["item_id"] is None  # the schema's default
    assert datum["body"]["items"][0]["classification"] is None
    referral = m.Referral.from_avro(datum)
    assert referral == fixed_referral()
    assert isinstance(referral.body, m.CaseBody)
    assert referral.body.items[0].item_id == FIXED_ITEM_ID
    assert CODEC.decode_envelope(v2) == CODEC.decode_envelope(bytes.fromhex(FIXED_REFERRAL_HEX))


def test_version_3_bytes_still_decode_as_version_1_of_the_referral() -> None:
    """Version 3 writers knew no amendments or re-referrals: the reader's defaults apply."""
    v3 = bytes.fromhex(FIXED_REFERRAL_V3_HEX)
    assert CODEC.schema_id_of(v3) == 6
    _, datum = CODEC.decode(v3, expected=REFERRAL)
    assert (datum["envelope"]["version"], datum["envelope"]["parent_referral_id"]) == (1, None)
    assert m.Referral.from_avro(datum) == fixed_referral()
    envelope = CODEC.decode_envelope(v3)
    assert envelope == CODEC.decode_envelope(bytes.fromhex(FIXED_REFERRAL_HEX))
    assert envelope["version"] == 1


def test_an_amended_child_referral_round_trips() -> None:
    parent = "00000000-0000-4000-8000-0000000000aa"
    amended = fixed_referral().model_copy(
        update={
            "envelope": fixed_referral().envelope.model_copy(
                update={"version": 3, "parent_referral_id": parent}
            )
        }
    )
    data = CODEC.encode(REFERRAL, amended.to_avro())
    assert CODEC.decode_envelope(data)["version"] == 3
    assert m.Referral.from_avro(CODEC.decode(data)[1]) == amended


@pytest.mark.parametrize(("record", "old_id"), [(REFERRAL, 6), (STATUS_UPDATE, 7)])
def test_old_consumers_read_the_new_bytes_with_their_own_schema(record: str, old_id: int) -> None:
    """A consumer on Referral v3 / StatusUpdate v2 reads v4 / v3 bytes (new fields skipped)."""
    import fastavro

    model = fixed_referral() if record == REFERRAL else fixed_status()
    data = CODEC.encode(record, model.to_avro())
    registry = EmbeddedRegistry()
    writer = fastavro.parse_schema(registry.by_id(CODEC.schema_id_of(data)).schema)
    reader = fastavro.parse_schema(registry.by_id(old_id).schema)
    old = fastavro.schemaless_reader(io.BytesIO(data[5:]), writer, reader)
    assert isinstance(old, dict)
    if record == REFERRAL:
        assert "version" not in old["envelope"]
        assert str(old["envelope"]["referral_id"]) == model.to_avro()["envelope"]["referral_id"]
    else:
        assert "referral_version" not in old
        assert len(old["item_outcomes"]) == 3


def test_status_version_2_bytes_decode_about_version_1() -> None:
    v2 = bytes.fromhex(FIXED_STATUS_V2_HEX)
    assert CODEC.schema_id_of(v2) == 7
    _, datum = CODEC.decode(v2, expected=STATUS_UPDATE)
    assert datum["referral_version"] is None
    assert m.StatusUpdate.from_avro(datum) == fixed_status()


def test_status_version_3_bytes_decode_unsealed() -> None:
    v3 = bytes.fromhex(FIXED_STATUS_V3_HEX)
    assert CODEC.schema_id_of(v3) == 11
    _, datum = CODEC.decode(v3, expected=STATUS_UPDATE)
    assert datum["sealed"] is None
    assert m.StatusUpdate.from_avro(datum) == fixed_status()


def test_fixed_status_encodes_to_the_checked_in_bytes() -> None:
    data = CODEC.encode(STATUS_UPDATE, fixed_status().to_avro())
    assert data.hex() == FIXED_STATUS_HEX
    name, datum = CODEC.decode(data, expected=STATUS_UPDATE)
    assert name == STATUS_UPDATE
    assert m.StatusUpdate.from_avro(datum) == fixed_status()


def test_status_version_1_bytes_decode_with_no_item_outcomes() -> None:
    v1 = bytes.fromhex(FIXED_STATUS_V1_HEX)
    assert CODEC.schema_id_of(v1) == 2
    _, datum = CODEC.decode(v1, expected=STATUS_UPDATE)
    assert datum["item_outcomes"] == []
    status = m.StatusUpdate.from_avro(datum)
    assert status == fixed_status().model_copy(update={"item_outcomes": ()})


def test_version_1_bytes_still_decode_to_the_same_referral() -> None:
    """What version 1 writers sent (a plain body, no union branch) reads as before."""
    v1 = bytes.fromhex(FIXED_REFERRAL_V1_HEX)
    assert CODEC.schema_id_of(v1) == 1
    name, datum = CODEC.decode(v1)
    assert name == REFERRAL
    assert m.Referral.from_avro(datum) == fixed_referral()
    assert CODEC.decode_envelope(v1) == CODEC.decode_envelope(bytes.fromhex(FIXED_REFERRAL_HEX))


def test_frame_is_magic_byte_and_big_endian_schema_id() -> None:
    assert VALID[0] == 0
    assert CODEC.schema_id_of(VALID) == EmbeddedRegistry().latest(REFERRAL).id
    assert VALID[1:5] == CODEC.schema_id_of(VALID).to_bytes(4, "big")


def test_apache_avro_decodes_project_bytes_from_the_avsc_alone() -> None:
    """A different implementation, given only the schema, reads what we write."""
    schema = avro.schema.parse(json.dumps(load_working_schemas()[REFERRAL]))
    referral = fixed_referral()
    data = CODEC.encode(REFERRAL, referral.to_avro())
    reader = avro.io.DatumReader(schema)
    datum = reader.read(avro.io.BinaryDecoder(io.BytesIO(data[5:])))
    assert isinstance(datum, dict)
    assert datum["envelope"]["referral_id"] == referral.envelope.referral_id
    assert datum["envelope"]["handling"]["recipients"] == ["police-de"]
    assert datum["body"]["items"][0]["url"] == "https://host-1.example.org/a"
    assert datum["envelope"]["created_at"] == FIXED_TS
    assert m.Referral.from_avro(datum) == referral


@pytest.mark.slow  # 200 generated referrals: about 2 s alone, a minute on a busy machine
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(referrals)
def test_referral_round_trip(referral: m.Referral) -> None:
    data = CODEC.encode(REFERRAL, referral.to_avro())
    name, datum = CODEC.decode(data, expected="Referral")
    assert name == REFERRAL
    assert m.Referral.from_avro(datum) == referral
    assert m.ReferralEnvelope.from_avro(CODEC.decode_envelope(data)) == referral.envelope
    envelope = referral.envelope.to_avro()
    assert CODEC.decode_routing(data) == {k: envelope[k] for k in ROUTING_FIELDS}


@settings(max_examples=100, deadline=None)
@given(status_updates, handover_events)
def test_status_and_event_round_trip(status: m.StatusUpdate, event: m.HandoverEvent) -> None:
    assert (
        m.StatusUpdate.from_avro(CODEC.decode(CODEC.encode("StatusUpdate", status.to_avro()))[1])
        == status
    )
    assert (
        m.HandoverEvent.from_avro(CODEC.decode(CODEC.encode(HANDOVER_EVENT, event.to_avro()))[1])
        == event
    )


def test_decode_envelope_reads_only_the_envelope() -> None:
    referral = make_referral()
    data = CODEC.encode(REFERRAL, referral.to_avro())
    env = CODEC.decode_envelope(data)
    assert set(env) == set(m.ReferralEnvelope.model_fields)
    assert isinstance(env["referral_id"], str)
    # The body is never parsed: garbage after the envelope does not matter.
    body_start = len(CODEC.encode(REFERRAL, referral.to_avro())) - len(_body_bytes(referral))
    garbage = data[:body_start] + b"\xff" * 7
    assert CODEC.decode_envelope(garbage) == env
    with pytest.raises(CorruptDatum):
        CODEC.decode(garbage)
    with pytest.raises(CorruptDatum, match="no body"):
        CODEC.decode_envelope(data[:body_start])


def _body_bytes(referral: m.Referral) -> bytes:
    import fastavro

    schema = load_working_schemas()[REFERRAL]
    body_schema = copy.deepcopy(schema["fields"][1]["type"])
    named: dict[str, Any] = {}
    fastavro.parse_schema(schema["fields"][0]["type"], named_schemas=named)
    parsed = fastavro.parse_schema(body_schema, named_schemas=named)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, referral.body.to_avro())
    return buf.getvalue()


def test_decode_routing_reads_the_envelope_up_to_handling_of_every_version() -> None:
    hexes = (FIXED_REFERRAL_V1_HEX, FIXED_REFERRAL_V2_HEX, FIXED_REFERRAL_V3_HEX)
    for data in [bytes.fromhex(h) for h in (*hexes, FIXED_REFERRAL_HEX)]:
        env = CODEC.decode_envelope(data)
        assert CODEC.decode_routing(data) == {k: env[k] for k in ROUTING_FIELDS}
    referral = make_referral()
    data = CODEC.encode(REFERRAL, referral.to_avro())
    body_start = len(data) - len(_body_bytes(referral))
    # Neither the envelope's last fields nor the body are parsed.
    assert CODEC.decode_routing(data[:body_start] + b"\xff" * 7) == CODEC.decode_routing(data)
    with pytest.raises(CorruptDatum, match="EOFError"):
        CODEC.decode_routing(data[: 5 + 1 + 36])


def test_decode_envelope_refuses_other_records() -> None:
    with pytest.raises(SchemaMismatch, match="not a Referral"):
        CODEC.decode_envelope(VALID_STATUS)
    with pytest.raises(SchemaMismatch, match="not a Referral"):
        CODEC.decode_routing(VALID_STATUS)
    with pytest.raises(SchemaMismatch):
        CODEC.decode(VALID_STATUS, expected="Referral")


def test_frame_errors() -> None:
    with pytest.raises(NotFramed):
        CODEC.decode(b"")
    with pytest.raises(NotFramed):
        CODEC.decode(b"\x01" + VALID[1:])
    with pytest.raises(NotFramed):
        CODEC.decode_envelope(b"\x00\x00\x00")
    with pytest.raises(UnknownSchemaId, match="999999"):
        CODEC.decode(b"\x00" + (999999).to_bytes(4, "big") + VALID[5:])
    with pytest.raises(UnknownSchemaId):
        CODEC.decode_envelope(b"\x00" + (999999).to_bytes(4, "big") + VALID[5:])
    with pytest.raises(CorruptDatum, match="trailing"):
        CODEC.decode(VALID + b"\x00")


def test_size_limit_on_both_sides() -> None:
    small = Codec(EmbeddedRegistry(), max_record_bytes=100)
    with pytest.raises(RecordTooLarge):
        small.encode(REFERRAL, make_referral().to_avro())
    with pytest.raises(RecordTooLarge):
        small.decode(VALID)
    with pytest.raises(RecordTooLarge):
        small.decode_envelope(VALID)
    with pytest.raises(RecordTooLarge):
        small.decode_routing(VALID)


def test_encode_error_names_fields_not_values() -> None:
    datum = make_referral().to_avro()
    datum["envelope"]["case_id"] = 12345
    with pytest.raises(SchemaMismatch, match="case_id") as info:
        CODEC.encode(REFERRAL, datum)
    assert "12345" not in str(info.value)
    with pytest.raises(SchemaMismatch):
        CODEC.encode("NoSuchRecord", {})


def test_serializer_contract() -> None:
    ctx = SerializationContext("referrals.intake", {"traceparent": b"00-x"})
    serialize = CODEC.serializer("Referral")
    deserialize = CODEC.deserializer("Referral", m.model_from_avro)
    referral = make_referral()
    assert deserialize(serialize(referral, ctx), ctx) == referral
    assert (
        CODEC.deserializer()(serialize(referral.to_avro(), ctx), ctx)["envelope"]["referral_id"]
        == referral.referral_id
    )
    with pytest.raises(SchemaMismatch):
        serialize(object(), ctx)


def _old_referral_schema() -> dict[str, Any]:
    """The working Referral without two optional fields: an 'older version'."""
    old = copy.deepcopy(load_working_schemas()[REFERRAL])
    env, body = old["fields"][0]["type"], old["fields"][1]["type"][0]  # the CaseBody branch
    env["fields"] = [f for f in env["fields"] if f["name"] != "external_refs"]
    body["fields"] = [f for f in body["fields"] if f["name"] != "summary"]
    return old


def test_older_writer_versions_resolve_to_the_current_schema(tmp_path: Path) -> None:
    for f in default_schema_dir().glob("*.avsc"):
        shutil.copy(f, tmp_path)
    registry = EmbeddedRegistry(path=tmp_path / "registry.json", schema_dir=tmp_path)
    registry.register(REFERRAL, _old_referral_schema())
    old_codec = Codec(registry)
    datum = make_referral(summary=None, external_refs=[]).to_avro()
    del datum["envelope"]["external_refs"]
    del datum["body"]["summary"]
    old_bytes = old_codec.encode(REFERRAL, datum)

    registry.register(REFERRAL)  # the working schema becomes version 2
    new_codec = Codec(EmbeddedRegistry(path=tmp_path / "registry.json", schema_dir=tmp_path))
    assert new_codec.schema_id_of(old_bytes) == 1
    _name, decoded = new_codec.decode(old_bytes)
    assert decoded["body"]["summary"] is None
    assert decoded["envelope"]["external_refs"] == []
    m.Referral.from_avro(decoded)
    env = new_codec.decode_envelope(old_bytes)
    assert env["external_refs"] == []
    assert new_codec.decode_routing(old_bytes) == {k: env[k] for k in ROUTING_FIELDS}
    new_bytes = new_codec.encode(REFERRAL, make_referral().to_avro())
    assert new_codec.schema_id_of(new_bytes) == 2


# -- hostile input ---------------------------------------------------------------------------

_HEADER = VALID[:5]


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """Random, truncated, mutated and spliced versions of valid frames."""
    base = draw(st.sampled_from([VALID, VALID_STATUS]))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return _HEADER + draw(st.binary(max_size=64))
    if kind == 2:
        return base[: draw(st.integers(0, len(base)))]
    if kind == 3:
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(5, len(data) - 1))
            data[pos] = draw(st.integers(0, 255))
        return bytes(data)
    cut = draw(st.integers(5, len(base)))
    return base[:cut] + draw(st.binary(max_size=32)) + base[cut:]


def _only_codec_errors(data: bytes) -> None:
    for call in (CODEC.decode, CODEC.decode_envelope, CODEC.decode_routing):
        try:
            call(data)
        except CodecError as exc:
            text = str(exc)
            assert "example.org" not in text
            assert "hotline-nl" not in text
        # anything else propagates and fails the test


@pytest.mark.slow  # 10,000 inputs: about 9 s alone, two minutes on a busy machine
@settings(max_examples=10_000, deadline=None)
@given(hostile())
def test_hostile_bytes_raise_only_codec_errors(data: bytes) -> None:
    _only_codec_errors(data)


@pytest.mark.parametrize(
    "tail",
    [
        b"\xfe\xff\xff\xff\x0f",  # string length 2**31-1 at the first field
        b"\x02\x00\x02\x00" + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f",  # huge array count
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # over-long varint
        b"\x01",  # negative string length
    ],
)
def test_small_hostile_inputs_use_little_memory(tail: bytes) -> None:
    data = _HEADER + tail
    tracemalloc.start()
    try:
        with pytest.raises(CodecError):
            CODEC.decode(data)
        with pytest.raises(CodecError):
            CODEC.decode_envelope(data)
        with pytest.raises(CodecError):
            CODEC.decode_routing(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024


def test_huge_array_count_after_valid_prefix_uses_little_memory() -> None:
    """A valid envelope prefix, then jurisdictions claiming 2**62 items."""
    env = m.ReferralEnvelope.from_avro(make_referral().envelope.to_avro()).to_avro()
    prefix = CODEC.encode(REFERRAL, make_referral().to_avro())
    # referral_id (37 bytes), case_id, origin_org, origin_country precede the array count.
    pos = 5
    for key in ("referral_id", "case_id", "origin_org", "origin_country"):
        pos += 1 + len(env[key].encode())
    data = prefix[:pos] + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + b"\x00" * 4
    tracemalloc.start()
    try:
        with pytest.raises(CorruptDatum):
            CODEC.decode_envelope(data)
        with pytest.raises(CorruptDatum):
            CODEC.decode_routing(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024


#: A DELIVERED event as HandoverEvent version 1 wrote it (schema id 3, before RESOLVED).
EVENT_V1_HEX = (
    "00000000034839333635616661622d616366302d356533642d383163372d3231643237303033343231314830"
    "303030303030302d303030302d343030302d383030302d30303030303030303030303112636173652d303030"
    "310612706f6c6963652d6465020a686c2d6e6c0212706f6c6963652d6465021e726566657272616c732e746f"
    "2e44450200020e020c73716c697465000080a0d5edee66"
)


def test_handover_event_version_1_bytes_still_decode_and_version_2_writes_resolved() -> None:
    v1 = bytes.fromhex(EVENT_V1_HEX)
    assert CODEC.schema_id_of(v1) == 3
    _, datum = CODEC.decode(v1, expected=HANDOVER_EVENT)
    assert (datum["event"], datum["actor"], datum["offset"]) == ("DELIVERED", "police-de", 7)
    # version 2 added RESOLVED, 3 AMENDED and REROUTED, 4 the REQUEST_* events, 5 TAKEDOWN,
    # 6 the evaluator's two (known content)
    for kind in ("RESOLVED", "AMENDED", "REROUTED", "REQUEST_OVERDUE", "TAKEDOWN", "EVALUATED"):
        data = CODEC.encode(HANDOVER_EVENT, {**datum, "event": kind})
        assert CODEC.schema_id_of(data) == EmbeddedRegistry().latest(HANDOVER_EVENT).id == 21
        assert CODEC.decode(data, expected=HANDOVER_EVENT)[1]["event"] == kind
