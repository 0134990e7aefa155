"""Dead letters: the original record, intact, plus Kafka Connect-style error headers."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from broker.kafka.reader import TopicReader
from broker.wire.topics import HEADER_DLQ_PREFIX, HeaderList, Headers, RecordHeaders, header

__all__ = [
    "REFERENCE_PREFIX_BYTES",
    "DeadLetter",
    "DeadLetterStage",
    "dead_letter_headers",
    "read_dead_letters",
    "replay_dead_letter",
    "send_dead_letter",
    "strip_error_headers",
]

H_TOPIC = HEADER_DLQ_PREFIX + "topic"
H_PARTITION = HEADER_DLQ_PREFIX + "partition"
H_OFFSET = HEADER_DLQ_PREFIX + "offset"
H_STAGE = HEADER_DLQ_PREFIX + "stage"
H_CLASS = HEADER_DLQ_PREFIX + "exception.class.name"
H_MESSAGE = HEADER_DLQ_PREFIX + "exception.message"
H_CONNECTOR = HEADER_DLQ_PREFIX + "connector.name"
H_AT = HEADER_DLQ_PREFIX + "timestamp"
H_REFERENCE = HEADER_DLQ_PREFIX + "by.reference"
H_KEY_SIZE = HEADER_DLQ_PREFIX + "original.key.size"
H_VALUE_SIZE = HEADER_DLQ_PREFIX + "original.value.size"
H_HEADERS_SIZE = HEADER_DLQ_PREFIX + "original.headers.size"
H_VALUE_SHA256 = HEADER_DLQ_PREFIX + "original.value.sha256"

#: How much of a too-large value a by-reference dead letter keeps.
REFERENCE_PREFIX_BYTES = 1024


class DeadLetterStage(StrEnum):
    """Where a record failed: the ``__connect.errors.stage`` header of its dead letter."""

    #: the router could not decode the referral envelope
    ROUTE_DECODE = "ROUTE_DECODE"
    #: the router could not decide the destinations (e.g. a bad country code)
    ROUTE_DECIDE = "ROUTE_DECIDE"
    #: the router could not decode or address a status update
    STATUS_ROUTE = "STATUS_ROUTE"
    #: a sink or status feed could not decode the record
    SINK_DECODE = "SINK_DECODE"
    #: the organisation's system refused the delivery
    DELIVER = "DELIVER"
    #: the signature did not verify
    VERIFY = "VERIFY"
    #: the signature was made too long ago, or in the future beyond the network's clock skew
    SIGNATURE_WINDOW = "SIGNATURE_WINDOW"
    #: the signed envelope does not route the referral to this topic, lane or organisation
    ROUTE_CHECK = "ROUTE_CHECK"
    #: a status update is unsigned where signatures are required, badly signed, not about one
    #: of the origin's referrals, or from an organisation the referral was not routed to
    STATUS_VERIFY = "STATUS_VERIFY"
    #: a status update may not follow the referral's current status (e.g. ACCEPTED after CLOSED)
    STATUS_LIFECYCLE = "STATUS_LIFECYCLE"
    #: the sealed body could not be opened
    UNSEAL = "UNSEAL"
    #: the handling rules (TLP, handling codes) forbid delivery
    HANDLING = "HANDLING"
    #: the handler failed unexpectedly (a bug); the record is kept intact
    HANDLER = "HANDLER"
    #: the record's sends kept failing while the broker took others: dead-lettered whole
    SEND = "SEND"
    #: the record could not be sent on as it is (too large): dead-lettered by reference
    UNSENDABLE = "UNSENDABLE"


def dead_letter_headers(record: Any, stage: str, exc: BaseException, actor: str) -> HeaderList:
    """Error headers for ``record`` (a kafka ConsumerRecord) that failed at ``stage``."""
    cls = type(exc)
    message = str(exc).splitlines()[0] if str(exc) else cls.__name__
    return [
        (H_TOPIC, str(record.topic).encode()),
        (H_PARTITION, str(record.partition).encode()),
        (H_OFFSET, str(record.offset).encode()),
        (H_STAGE, stage.encode()),
        (H_CLASS, f"{cls.__module__}.{cls.__qualname__}".encode()),
        (H_MESSAGE, message[:500].encode("utf-8", "replace")),
        (H_CONNECTOR, actor.encode()),
        (H_AT, str(int(time.time() * 1000)).encode()),
    ]


def strip_error_headers(headers: Sequence[tuple[str, bytes]]) -> HeaderList:
    """``headers`` without the dead-letter error headers (for a replay)."""
    return [(k, v) for k, v in headers if not k.startswith(HEADER_DLQ_PREFIX)]


def send_dead_letter(
    producer: KafkaProducer,
    topic: str,
    record: Any,
    stage: str,
    exc: BaseException,
    actor: str,
) -> FutureRecordMetadata:
    """Publish ``record`` unchanged to the dead-letter ``topic`` with error headers."""
    headers = strip_error_headers(record.headers or []) + dead_letter_headers(
        record, stage, exc, actor
    )
    return producer.send(topic, key=record.key, value=record.value, headers=headers)


def send_dead_letter_reference(
    producer: KafkaProducer,
    topic: str,
    record: Any,
    exc: BaseException,
    actor: str,
) -> FutureRecordMetadata:
    """Dead-letter ``record`` by reference: where it is, how big, its digest, its first bytes.

    For a record that cannot be sent on as it is (neither forwarded nor
    dead-lettered whole): the value carried is only the first
    :data:`REFERENCE_PREFIX_BYTES`; the original headers are left out (they may
    be what made it too large) but for the referral id.
    """
    value = record.value or b""
    original_headers = list(record.headers or [])
    kept = [(k, v) for k, v in original_headers if k == Headers.REFERRAL_ID][:1]
    headers = [
        *kept,
        *dead_letter_headers(record, DeadLetterStage.UNSENDABLE, exc, actor),
        (H_REFERENCE, b"1"),
        (H_KEY_SIZE, str(len(record.key or b"")).encode()),
        (H_VALUE_SIZE, str(len(value)).encode()),
        (H_HEADERS_SIZE, str(sum(len(k) + len(v or b"") for k, v in original_headers)).encode()),
        (H_VALUE_SHA256, hashlib.sha256(value).hexdigest().encode()),
    ]
    key = record.key if record.key is None or len(record.key) <= 256 else record.key[:256]
    return producer.send(topic, key=key, value=value[:REFERENCE_PREFIX_BYTES], headers=headers)


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as read back from the topic; ``id`` is ``partition:offset``."""

    id: str
    original_topic: str
    original_partition: int
    original_offset: int
    stage: str
    error_class: str
    message: str
    actor: str
    referral_id: str | None
    at_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    #: True for a record too large to carry: only its reference and first bytes are here
    by_reference: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (no payload bytes)."""
        return {
            "id": self.id,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "stage": self.stage,
            "error_class": self.error_class,
            "message": self.message,
            "actor": self.actor,
            "referral_id": self.referral_id,
            "at_ms": self.at_ms,
            "size": len(self.value or b""),
            "by_reference": self.by_reference,
        }


def _header(headers: RecordHeaders, name: str) -> str:
    return header(headers, name) or ""


def _int(text: str, default: int = -1) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def read_dead_letters(
    consumer: KafkaConsumer, topic: str, timeout: float = 10.0
) -> Iterator[DeadLetter]:
    """Every dead letter on ``topic`` from the beginning (``consumer`` has no group)."""
    for rec in TopicReader(consumer, topic, timeout=timeout, idle=0.3, poll_ms=300).records():
        headers = tuple(rec.headers or ())
        yield DeadLetter(
            id=f"{rec.partition}:{rec.offset}",
            original_topic=_header(headers, H_TOPIC),
            original_partition=_int(_header(headers, H_PARTITION)),
            original_offset=_int(_header(headers, H_OFFSET)),
            stage=_header(headers, H_STAGE),
            error_class=_header(headers, H_CLASS),
            message=_header(headers, H_MESSAGE),
            actor=_header(headers, H_CONNECTOR),
            referral_id=_header(headers, Headers.REFERRAL_ID) or None,
            at_ms=_int(_header(headers, H_AT), 0),
            key=rec.key,
            value=rec.value,
            headers=headers,
            by_reference=_header(headers, H_REFERENCE) == "1",
        )


def replay_dead_letter(producer: Any, letter: DeadLetter, replayable: Iterable[str]) -> str | None:
    """Send ``letter`` back to its original topic, error headers removed (not awaited).

    Returns None when sent, else why it was skipped: a letter carried by reference
    only, or one whose original topic is not among ``replayable`` (the intakes).
    """
    if letter.by_reference:
        return (
            f"too large to carry, only its reference is here (fetch {letter.original_topic}"
            f"[{letter.original_partition}]@{letter.original_offset})"
        )
    if letter.original_topic not in set(replayable):
        return f"original topic {letter.original_topic} is not replayable"
    producer.send(
        letter.original_topic,
        key=letter.key,
        value=letter.value,
        headers=strip_error_headers(letter.headers),
    )
    return None
