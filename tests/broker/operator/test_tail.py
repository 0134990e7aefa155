"""What ``tail`` shows of a record: ids and routing only; restricted bodies redacted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from broker.operator.tail import decoded, record_view
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, STATUS_UPDATE, EmbeddedRegistry
from broker.wire.topics import HEADER_DLQ_PREFIX, Headers
from tests.support.factories import make_referral, make_status_update

CODEC = Codec(EmbeddedRegistry())


@dataclass
class Record:
    topic: str = "referrals.intake"
    partition: int = 1
    offset: int = 7
    timestamp: int = 1_765_000_000_000
    key: bytes | None = b"k"
    value: bytes | None = b""
    headers: Any = ()


def _referral(tlp: str) -> bytes:
    recipients = ["police-de"] if tlp == "RED" else []
    handling = {"tlp": tlp, "recipients": recipients, "handling_code": "H0"}
    datum = make_referral(handling=handling).to_avro()
    return CODEC.encode(REFERRAL, datum)


def test_metadata_without_the_body_unless_asked() -> None:
    out = decoded(CODEC, _referral("AMBER"))
    assert out["record"] == "Referral"
    assert out["tlp"] == "AMBER"
    assert "body" not in out
    shown = decoded(CODEC, _referral("AMBER"), body=True)
    assert isinstance(shown["body"], dict)
    assert shown["body"]["items"]
    assert "revealed" not in shown


@pytest.mark.parametrize("tlp", ["RED", "AMBER_STRICT"])
def test_a_restricted_body_is_redacted_unless_revealed_and_then_flagged(tlp: str) -> None:
    value = _referral(tlp)
    redacted = decoded(CODEC, value, body=True)
    assert isinstance(redacted["body"], str)
    assert redacted["body"].startswith("(redacted: TLP")
    assert "revealed" not in redacted
    revealed = decoded(CODEC, value, body=True, reveal=True)
    assert revealed["revealed"] is True
    assert isinstance(revealed["body"], dict)


def test_a_status_note_only_with_body_and_bad_bytes_never_raise() -> None:
    update = make_status_update(note="synthetic note")
    value = CODEC.encode(STATUS_UPDATE, update.to_avro())
    assert "note" not in decoded(CODEC, value)
    assert decoded(CODEC, value, body=True)["note"] == "synthetic note"
    garbage = decoded(CODEC, b"\x00garbage")
    assert set(garbage) == {"undecodable", "size"}
    assert garbage["size"] == 8
    assert decoded(CODEC, None)["size"] == 0


def test_the_record_view_shows_only_chosen_headers_and_a_safe_key() -> None:
    headers = [
        (Headers.REFERRAL_ID, b"rid-1"),
        (HEADER_DLQ_PREFIX + "stage", b"ROUTE_DECIDE"),
        ("x-private", b"https://leak.example.org/x"),
    ]
    view = record_view(Record(headers=headers, key=b"\x1b[2Jwipe"), None)
    assert view["headers"] == {
        Headers.REFERRAL_ID: "rid-1",
        HEADER_DLQ_PREFIX + "stage": "ROUTE_DECIDE",
    }
    assert view["key"] == "(8 bytes)"  # a control character never reaches the terminal
    assert "value" not in view
    assert record_view(Record(key=b"case-1"), {"x": 1})["key"] == "case-1"
    assert record_view(Record(key="é".encode()), None)["key"] == "(2 bytes)"
    assert record_view(Record(key=b"a" * 101), None)["key"] == "(101 bytes)"
