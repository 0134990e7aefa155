"""Models mirror the schemas exactly and add the checks Avro cannot express."""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from pydantic import BaseModel

from broker.errors import ValidationFailed
from broker.wire import models as m
from broker.wire.registry import (
    HANDOVER_BATCH,
    HANDOVER_EVENT,
    REFERRAL,
    STATUS_UPDATE,
    load_working_schemas,
)
from tests.support.factories import (
    handover_events,
    make_handover_event,
    make_referral,
    make_status_update,
    referrals,
    status_updates,
)

WORKING = load_working_schemas()


def _inner_types(annotation: Any) -> list[Any]:
    """Model classes and enums inside an annotation (Optional, tuple, Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _inner_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, tuple, list):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is not Ellipsis and arg is not type(None):
                out += _inner_types(arg)
        return out
    return [annotation]


def _schema_types(node: Any, named: dict[str, Any]) -> list[dict[str, Any]]:
    """Named record/enum schemas inside a field type (unions, arrays, references)."""
    if isinstance(node, str):
        key = node.rpartition(".")[2]
        return [named[key]] if key in named else []
    if isinstance(node, list):
        return [t for b in node for t in _schema_types(b, named)]
    if node.get("type") in ("record", "enum"):
        named[node["name"]] = node
        return [node]
    if node.get("type") == "array":
        return _schema_types(node["items"], named)
    return []


def _compare(schema: dict[str, Any], model: type[BaseModel], named: dict[str, Any]) -> None:
    assert schema["name"] == model.__name__
    schema_fields = {f["name"]: f for f in schema["fields"]}
    assert set(schema_fields) == set(model.model_fields), model.__name__
    for name, field in schema_fields.items():
        stypes = _schema_types(field["type"], named)
        mtypes = [
            t for t in _inner_types(model.model_fields[name].annotation) if isinstance(t, type)
        ]
        mtypes = [t for t in mtypes if issubclass(t, (BaseModel, StrEnum))]
        assert len(stypes) == len(mtypes), f"{model.__name__}.{name}"
        for st, mt in zip(stypes, mtypes, strict=True):
            if st["type"] == "enum":
                assert issubclass(mt, StrEnum)
                assert mt.__name__ == st["name"]
                assert [e.value for e in mt] == st["symbols"], f"{mt.__name__} symbols differ"
            else:
                _compare(st, mt, named)


@pytest.mark.parametrize(
    ("record", "model"),
    [
        (REFERRAL, m.Referral),
        (STATUS_UPDATE, m.StatusUpdate),
        (HANDOVER_EVENT, m.HandoverEvent),
        (HANDOVER_BATCH, m.HandoverBatch),
    ],
)
def test_every_schema_field_has_a_model_field_and_vice_versa(
    record: str, model: type[BaseModel]
) -> None:
    _compare(WORKING[record], model, {})


def test_field_comparison_detects_a_missing_field() -> None:
    schema = WORKING[STATUS_UPDATE]
    broken = {**schema, "fields": [*schema["fields"], {"name": "extra", "type": "string"}]}
    with pytest.raises(AssertionError):
        _compare(broken, m.StatusUpdate, {})


@settings(max_examples=200, deadline=None)
@given(referrals)
def test_referral_avro_dict_round_trip(referral: m.Referral) -> None:
    assert m.Referral.from_avro(referral.to_avro()) == referral


@settings(max_examples=100, deadline=None)
@given(status_updates, handover_events)
def test_status_and_event_round_trip(status: m.StatusUpdate, event: m.HandoverEvent) -> None:
    assert m.StatusUpdate.from_avro(status.to_avro()) == status
    assert m.HandoverEvent.from_avro(event.to_avro()) == event


def test_factories_make_valid_models() -> None:
    r = make_referral(priority="URGENT")
    assert r.envelope.priority is m.Priority.URGENT
    assert make_status_update().status is m.ReferralStatus.RECEIVED
    assert make_handover_event().event is m.HandoverEventType.ROUTED
    assert make_referral().referral_id != make_referral().referral_id


def _problems(**overrides: Any) -> list[str]:
    data = make_referral().to_avro()
    for dotted, value in overrides.items():
        node = data
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        last = keys[-1]
        node[int(last) if last.isdigit() else last] = value
    with pytest.raises(ValidationFailed) as info:
        m.parse_referral(data)
    return info.value.problems


def test_unknown_country_is_named_by_path() -> None:
    problems = _problems(envelope__jurisdictions__0__country="XX")
    assert problems == [
        "envelope.jurisdictions.0.country: "
        "not an assigned upper-case ISO 3166-1 alpha-2 country code"
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host-1.example.org/x", "scheme"),
        ("https:///nohost", "no host"),
        ("https://host-1.example.org/a b", "whitespace"),
        ("not a url", "whitespace"),
        ("https://host-1.example.org:99999/", "not a valid URL"),
    ],
)
def test_bad_urls_rejected_without_echoing_them(url: str, message: str) -> None:
    problems = _problems(body__items__0__url=url)
    assert len(problems) == 1
    assert problems[0].startswith("body.items.0.url: ")
    assert message in problems[0]
    assert url not in problems[0]


@pytest.mark.parametrize(
    ("algorithm", "value", "ok"),
    [
        ("MD5", "a" * 32, True),
        ("MD5", "A" * 32, True),
        ("MD5", "a" * 31, False),
        ("SHA1", "0" * 40, True),
        ("SHA256", "f" * 64, True),
        ("SHA256", "g" * 64, False),
        ("PDQ", "1" * 64, True),
        ("PHOTODNA", "2" * 288, True),
        ("PHOTODNA", "2" * 64, False),
    ],
)
def test_hash_shape_per_algorithm(algorithm: str, value: str, ok: bool) -> None:
    if ok:
        h = m.Hash(algorithm=m.HashAlgorithm(algorithm), value=value)
        assert h.value == value.lower()
        return
    problems = _problems(body__items__0__hashes__0={"algorithm": algorithm, "value": value})
    assert problems == [
        f"body.items.0.hashes.0: {algorithm} hash must be "
        f"{m.HASH_HEX_LENGTHS[m.HashAlgorithm(algorithm)]} hex digits"
    ]
    assert value not in problems[0]


def test_red_needs_named_recipients() -> None:
    problems = _problems(envelope__handling={"tlp": "RED", "recipients": [], "handling_code": "H0"})
    assert problems == ["envelope.handling: TLP:RED needs at least one named recipient"]
    ok = make_referral(handling={"tlp": "RED", "recipients": ["police-de"], "handling_code": "H0"})
    assert ok.envelope.handling.recipients == ("police-de",)


def test_future_timestamps_rejected_beyond_clock_skew() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=2)
    assert make_referral(created_at=soon).envelope.created_at <= soon
    problems = _problems(envelope__created_at=datetime.now(UTC) + timedelta(hours=1))
    assert problems == [
        "envelope.created_at: timestamp lies in the future (more than 0:05:00 ahead)"
    ]


def test_naive_timestamps_rejected() -> None:
    problems = _problems(body__timeline__received_at=datetime(2024, 1, 1))
    assert problems == ["body.timeline.received_at: timestamp must be timezone-aware"]


def test_timestamps_normalised_to_utc_milliseconds() -> None:
    from datetime import timezone

    cet = timezone(timedelta(hours=1))
    r = make_referral(created_at=datetime(2024, 1, 1, 13, 0, 0, 123456, tzinfo=cet))
    assert r.envelope.created_at == datetime(2024, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert r.envelope.created_at.tzinfo is UTC


def test_needs_a_jurisdiction_or_hosting_evidence() -> None:
    no_juris = make_referral(jurisdictions=[])  # hosting evidence still present
    assert no_juris.envelope.jurisdictions == ()
    data = no_juris.to_avro()
    data["body"]["items"][0]["hosting"] = None
    with pytest.raises(ValidationFailed) as info:
        m.parse_referral(data)
    assert info.value.problems == [
        "(record): needs at least one jurisdiction or one item with hosting evidence "
        "(ip or country)"
    ]


def test_all_problems_listed_and_no_payload_quoted() -> None:
    data = make_referral(summary="SECRET-NARRATIVE").to_avro()
    data["envelope"]["origin_country"] = "ZZ"
    data["body"]["items"][0]["url"] = "gopher://SECRET-HOST.invalid/"
    data["body"]["items"][0]["hashes"][0]["value"] = "SECRETHASH"
    data["body"]["summary"] = "x" * 9000
    with pytest.raises(ValidationFailed) as info:
        m.parse_referral(data)
    text = str(info.value)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "envelope.origin_country",
        "body.items.0.url",
        "body.items.0.hashes.0",
        "body.summary",
    ]
    assert "SECRET" not in text
    assert "xxxx" not in text
    for p in info.value.problems:
        assert ": " in p


def test_status_update_rules() -> None:
    with pytest.raises(ValidationFailed) as info:
        m.parse_status_update(
            make_status_update(status="REROUTED", destination_org="police-fr").to_avro()
            | {"destination_org": None}
        )
    assert info.value.problems == ["(record): REROUTED needs destination_org"]
    far = datetime.now(UTC) + timedelta(days=7)
    delayed = make_status_update(status="DELAYED", reason_code="BACKLOG", next_update_due=far)
    assert delayed.next_update_due is not None  # deadlines may lie in the future


def test_model_from_avro_dispatches_by_record_name() -> None:
    r = make_referral()
    assert m.model_from_avro("Referral", r.to_avro()) == r
    with pytest.raises(ValidationFailed):
        m.model_from_avro("Nope", {})


def test_models_are_frozen() -> None:
    r = make_referral()
    with pytest.raises(Exception, match="frozen"):
        r.envelope.case_id = "other"  # type: ignore[misc]
    hash(r)


def test_a_packed_batch_validates_its_columns() -> None:
    route = {"event": "ROUTED", "from_party": "a", "to_party": "b", "topic": "t", "reason": "r"}
    packed = {
        "routes": [route],
        "route": [0, 0],
        "referral_id": ["x", "y"],
        "case_id": ["c", "c"],
        "partition": [0, 1],
        "offset": [5, 6],
        "trace_id": [None, None],
        "at": [1, 2],
    }
    batch = m.HandoverBatch.from_avro({"actor": "router", "events": [], "packed": packed})
    assert batch.packed is not None
    assert batch.packed.route == (0, 0)
    with pytest.raises(ValidationFailed, match="unequal length"):
        m.HandoverBatch.from_avro(
            {"actor": "router", "events": [], "packed": {**packed, "at": [1]}}
        )
    with pytest.raises(ValidationFailed, match="route index"):
        m.HandoverBatch.from_avro(
            {"actor": "router", "events": [], "packed": {**packed, "route": [0, 3]}}
        )
