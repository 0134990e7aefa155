"""What ``tail`` shows of a record: chosen headers, a safe key, the decoded metadata.

A referral body is shown only on demand; a TLP RED / AMBER+STRICT one is redacted
unless revealed (and the caller records the reveal, :mod:`broker.operator.access`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from broker.errors import CodecError
from broker.ledger.events import decode_events
from broker.security.rules import RESTRICTED_TLP
from broker.security.sealing import is_sealed, sealed_for
from broker.wire.codec import Codec
from broker.wire.registry import HANDOVER_BATCH, HANDOVER_EVENT, REFERRAL, STATUS_UPDATE
from broker.wire.topics import HEADER_DLQ_PREFIX, Headers

__all__ = ["RESTRICTED_TLP", "SHOWN_HEADERS", "decoded", "record_view"]

#: Headers ``tail`` shows (ids, organisations, routing and dead-letter positions only).
SHOWN_HEADERS = (
    Headers.REFERRAL_ID,
    Headers.CASE_ID,
    Headers.ORIGIN,
    Headers.ROUTE_REASON,
    Headers.DESTINATION_ORGS,
    Headers.RECORD_KIND,
    HEADER_DLQ_PREFIX + "topic",
    HEADER_DLQ_PREFIX + "partition",
    HEADER_DLQ_PREFIX + "offset",
    HEADER_DLQ_PREFIX + "stage",
    HEADER_DLQ_PREFIX + "exception.class.name",
)


def _safe_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        return f"({len(key)} bytes)"
    return text if text.isprintable() and len(text) <= 100 else f"({len(key)} bytes)"


def _event_fields(e: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: e.get(k)
        for k in (
            "event_id", "referral_id", "case_id", "event", "actor", "from_party", "to_party",
            "topic", "partition", "offset", "reason", "trace_id",
        )
    }  # fmt: skip
    at = e.get("at")
    out["at"] = at.isoformat() if isinstance(at, datetime) else at
    return out


def _body_view(datum_body: Any, tlp: Any, reveal: bool) -> tuple[Any, bool]:
    """What ``tail --body`` shows of a referral body, and whether it was shown under ``--reveal``
    (every such body is recorded, restricted or not)."""
    if is_sealed(datum_body):
        return {"sealed_for": sealed_for(datum_body)}, False
    if tlp in RESTRICTED_TLP and not reveal:
        return f'(redacted: TLP {tlp}; --reveal --reason "..." shows it, on record)', False
    return json.loads(json.dumps(datum_body, default=str)), reveal


def _referral(datum: dict[str, Any], body: bool, reveal: bool) -> dict[str, Any]:
    env = datum["envelope"]
    handling = env.get("handling") or {}
    out: dict[str, Any] = {
        "referral_id": env["referral_id"],
        "case_id": env["case_id"],
        "origin_org": env["origin_org"],
        "origin_country": env["origin_country"],
        "jurisdictions": [j["country"] for j in env.get("jurisdictions") or ()],
        "priority": env["priority"],
        "tlp": handling.get("tlp"),
        "handling_code": handling.get("handling_code"),
    }
    if body:
        out["body"], revealed = _body_view(datum["body"], handling.get("tlp"), reveal)
        if revealed:
            out["revealed"] = True
    return out


def decoded(
    codec: Codec, value: bytes | None, *, body: bool = False, reveal: bool = False
) -> dict[str, Any]:
    """What ``tail --decode`` shows of one record value; never raises on bad bytes.

    A body marked TLP RED or AMBER_STRICT is redacted unless ``reveal``; any body
    shown under ``reveal`` is flagged ``revealed`` (the caller records the access).
    """
    data = value or b""
    try:
        name, datum = codec.decode(data)
    except CodecError as exc:
        return {"undecodable": type(exc).__name__, "size": len(data)}
    out: dict[str, Any] = {"record": name.rsplit(".", 1)[-1]}
    try:
        if name == REFERRAL:
            out.update(_referral(datum, body, reveal))
        elif name == STATUS_UPDATE:
            keys = ("referral_id", "case_id", "emitted_by", "status", "reason_code")
            out.update({k: datum.get(k) for k in keys})
            out.update(destination_org=datum.get("destination_org"), origin_org=datum["origin_org"])
            if datum.get("sealed") is not None:
                out["sealed"] = True  # what it says is for its origin only
            elif body:
                out["note"] = datum.get("note")
        elif name in (HANDOVER_EVENT, HANDOVER_BATCH):
            out["events"] = [_event_fields(e) for e in decode_events(codec, data)]
    except (KeyError, TypeError, CodecError) as exc:
        return {"undecodable": type(exc).__name__, "size": len(data)}
    return out


def record_view(record: Any, info: dict[str, Any] | None) -> dict[str, Any]:
    """One record as ``tail`` shows it: position, time, safe key, size, shown headers, ``info``."""
    headers = {
        k: v.decode("utf-8", "replace") for k, v in record.headers or () if k in SHOWN_HEADERS
    }
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(),
        "key": _safe_key(record.key),
        "size": len(record.value or b""),
        "headers": headers,
    }
    if info is not None:
        out["value"] = info
    return out
