"""A SPOC's request desk: asks, answers, refuses, clarifies, delays; reads what comes in.

Every step is checked against the request's state first (one-line
:class:`RequestError`), then sent signed and sealed to ``requests.intake``,
recorded in the SPOC's :class:`RequestStore` at the desk's clock, and written
to the ledger as a signed event of this SPOC: ``REQUEST_SENT`` /
``REQUEST_RECEIVED`` for the request, ``REQUEST_<step>`` for the others, by
the sender when sent and by the receiver when received (its ``actor`` says
which), ``reason`` codes only. Clocks are injectable (``clock()``: ms).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.config import Settings
from broker.errors import CodecError, SecurityError
from broker.kafka import clients
from broker.ledger.events import LedgerEmitter, handover_event
from broker.network import Network
from broker.requests.codes import MessageKind
from broker.requests.routes import REQUESTS_INTAKE, check_route, to_topic
from broker.requests.store import OPEN_STATES, RequestRow, RequestStore
from broker.requests.wire import (
    RequestError,
    build_message,
    open_message,
    verify_message,
    window_of,
)
from broker.security.keys import LiveKeys, OrgKeys, TrustStore
from broker.security.signing import ledger_signer
from broker.wire.codec import Codec

__all__ = ["EVENT_OF", "Clock", "Desk", "event_reason", "system_clock"]

log = logging.getLogger(__name__)

#: Milliseconds since the epoch, now (injectable: tests run days on a simulated clock).
Clock = Callable[[], int]

#: The ledger event of each message kind (a REQUEST: SENT by its sender, RECEIVED by its receiver).
EVENT_OF = {
    MessageKind.ANSWER: "REQUEST_ANSWERED",
    MessageKind.REFUSAL: "REQUEST_REFUSED",
    MessageKind.CLARIFICATION_ASKED: "REQUEST_CLARIFICATION_ASKED",
    MessageKind.CLARIFICATION_GIVEN: "REQUEST_CLARIFICATION_GIVEN",
    MessageKind.DELAY: "REQUEST_DELAYED",
}


def system_clock() -> int:
    """The wall clock in ms."""
    return int(time.time() * 1000)


def event_reason(kind: MessageKind, message_id: str, content: Mapping[str, Any]) -> str:
    """The ledger ``reason`` of a message: its id and codes (never its text)."""
    parts = [f"msg={message_id}"]
    if kind is MessageKind.REQUEST:
        parts += [f"urgent={int(bool(content['urgent']))}", f"access={content['access']}"]
    elif kind is MessageKind.REFUSAL:
        parts.append(f"ground={content['ground']}")
    elif kind is MessageKind.DELAY:
        parts += [f"delay={content['reason']}", f"until={int(content['expected_ms'])}"]
    return ";".join(parts)


class Desk:
    """One SPOC's side of police requests (its keys, store, producer and reader)."""

    def __init__(
        self,
        settings: Settings,
        network: Network,
        codec: Codec,
        keys: OrgKeys,
        trust: TrustStore,
        *,
        clock: Clock = system_clock,
        producer: KafkaProducer | None = None,
        store: RequestStore | None = None,
    ) -> None:
        self.settings, self.network, self.codec = settings, network, codec
        self.keys, self.trust, self.clock = keys, trust, clock
        self.me = keys.org_id
        self.names = settings.topic_names()
        self._own_producer = producer is None
        self.producer = producer or clients.producer(settings, role=f"requests-{self.me}")
        self.store = store or RequestStore(settings.org_dir(self.me) / "requests.sqlite3")
        signer = ledger_signer(LiveKeys.fixed(keys, self.me), self.me)
        self.ledger = LedgerEmitter(
            self.producer, codec, self.names.ledger, actor=self.me, signer=signer
        )
        self._consumer: KafkaConsumer | None = None
        self.window = window_of(network)

    def close(self) -> None:
        """Flush and close what the desk opened."""
        self.producer.flush()
        if self._consumer is not None:
            self._consumer.close()
        if self._own_producer:
            self.producer.close()
        self.store.close()

    # -- sending ---------------------------------------------------------------------------

    def request(
        self,
        to_org: str,
        case_id: str,
        content: Mapping[str, Any],
        *,
        referral_id: str | None = None,
    ) -> str:
        """Ask ``to_org`` (another country's SPOC) for information; the request id."""
        check_route(self.network, self.me, to_org)
        return self._send(MessageKind.REQUEST, None, case_id, referral_id, to_org, content)

    def answer(self, request_id: str, content: Mapping[str, Any]) -> str:
        """Answer a request asked of this SPOC (``text``, sealed ``attachments``)."""
        return self._reply(MessageKind.ANSWER, request_id, content)

    def refuse(self, request_id: str, content: Mapping[str, Any]) -> str:
        """Refuse a request asked of this SPOC on an Art. 6 ``ground``."""
        return self._reply(MessageKind.REFUSAL, request_id, content)

    def ask_clarification(self, request_id: str, content: Mapping[str, Any]) -> str:
        """Ask the requester to clarify (``question``); the clock pauses until it does."""
        return self._reply(MessageKind.CLARIFICATION_ASKED, request_id, content)

    def delay(self, request_id: str, content: Mapping[str, Any]) -> str:
        """Announce a delay (``reason``, ``expected_ms``) of an answer owed."""
        row = self.store.get(request_id)
        if int(content.get("expected_ms", 0)) <= self.clock():
            raise RequestError("the expected date of a delayed answer must lie in the future")
        return self._reply(MessageKind.DELAY, row.request_id, content)

    def give_clarification(self, request_id: str, content: Mapping[str, Any]) -> str:
        """Give the clarification asked of a request of this SPOC (``text``)."""
        row = self.store.get(request_id)
        if row.side != "by_me":
            raise RequestError(f"request {row.request_id[:8]} was not asked by {self.me}")
        if row.state != "PAUSED":
            raise RequestError(f"no clarification of request {row.request_id[:8]} is asked")
        return self._step(MessageKind.CLARIFICATION_GIVEN, row, content)

    def _reply(self, kind: MessageKind, request_id: str, content: Mapping[str, Any]) -> str:
        row = self.store.get(request_id)
        if row.side != "of_me":
            raise RequestError(f"request {row.request_id[:8]} was not asked of {self.me}")
        if row.state not in OPEN_STATES:
            raise RequestError(f"request {row.request_id[:8]} is already {row.state.lower()}")
        if kind is MessageKind.CLARIFICATION_ASKED and row.state == "PAUSED":
            raise RequestError(f"a clarification of request {row.request_id[:8]} is already asked")
        return self._step(kind, row, content)

    def _step(self, kind: MessageKind, row: RequestRow, content: Mapping[str, Any]) -> str:
        return self._send(
            kind, row.request_id, row.case_id, row.referral_id, row.counterpart, content
        )

    def _send(
        self,
        kind: MessageKind,
        request_id: str | None,
        case_id: str,
        referral_id: str | None,
        to_org: str,
        content: Mapping[str, Any],
    ) -> str:
        at = self.clock()
        msg = build_message(
            self.codec,
            self.keys,
            self.trust,
            kind=kind,
            request_id=request_id,
            case_id=case_id,
            referral_id=referral_id,
            to_org=to_org,
            sent_at_ms=at,
            signed_at_ms=system_clock(),
            content=content,
        )
        topic = self.names.prefix + REQUESTS_INTAKE
        self.producer.send(topic, key=msg.key, value=msg.value, headers=msg.headers)
        envelope = {
            "message_id": msg.message_id,
            "request_id": request_id or msg.message_id,
            "case_id": case_id,
            "referral_id": referral_id,
            "kind": kind.value,
            "from_org": self.me,
            "to_org": to_org,
        }
        self.store.record(envelope, content, me=self.me, at=at)
        self._event(kind, envelope, content, at, topic=topic)
        return str(envelope["request_id"])

    def _event(
        self,
        kind: MessageKind,
        envelope: Mapping[str, Any],
        content: Mapping[str, Any],
        at: int,
        **where: Any,
    ) -> None:
        outgoing = envelope["from_org"] == self.me
        name = EVENT_OF.get(kind) or ("REQUEST_SENT" if outgoing else "REQUEST_RECEIVED")
        self.ledger.emit(
            handover_event(
                name,
                referral_id=str(envelope["request_id"]),
                case_id=str(envelope["case_id"]),
                actor=self.me,
                from_party=str(envelope["from_org"]),
                to_party=str(envelope["to_org"]),
                reason=event_reason(kind, str(envelope["message_id"]), content),
                at_ms=at,
                **where,
            )
        )

    def flush(self) -> None:
        """Wait until everything sent is acknowledged."""
        self.producer.flush()

    # -- receiving -------------------------------------------------------------------------

    def _reader(self) -> KafkaConsumer:
        if self._consumer is None:
            topic = to_topic(self.names, self.me)
            consumer = clients.consumer(self.settings, group_id=None, role=f"requests-{self.me}")
            parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            known = self.store.positions(topic)
            for tp in tps:
                if tp.partition in known:
                    consumer.seek(tp, known[tp.partition])
                else:
                    consumer.seek_to_beginning(tp)
            self._consumer = consumer
        return self._consumer

    def receive(self, expect: int = 0, timeout: float = 10.0, idle: float = 0.5) -> int:
        """Read and apply what arrived; stops once ``expect`` are in and ``idle`` s bring none."""
        reader, done = self._reader(), 0
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = reader.poll(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    done += self._take(record)
            if batch:
                last = time.monotonic()
            elif done >= expect and time.monotonic() - last >= idle:
                break
        self.producer.flush()
        return done

    def _take(self, record: Any) -> int:
        try:
            envelope = verify_message(
                self.codec, self.trust, record.headers, record.value, self.window
            )
            if envelope["to_org"] != self.me:
                raise RequestError("not addressed to this point of contact")
            content = open_message(envelope, self.keys)
        except (SecurityError, CodecError, RequestError) as exc:
            log.warning(
                "police message at %s[%d]@%d refused: %s",
                record.topic,
                record.partition,
                record.offset,
                type(exc).__name__,
            )
            return 0
        at = self.clock()
        position = (record.topic, record.partition, record.offset)
        row = self.store.record(envelope, content, me=self.me, at=at, position=position)
        if row is None:
            return 0
        kind = MessageKind(str(envelope["kind"]))
        self._event(
            kind,
            envelope,
            content,
            at,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        return 1

    # -- the clock -------------------------------------------------------------------------

    def flag_overdue(self) -> list[RequestRow]:
        """Flag every request owed that is now past its limit (once each, a signed event each)."""
        now = self.clock()
        found = self.store.flag_overdue(now)
        for row in found:
            self.ledger.emit(
                handover_event(
                    "REQUEST_OVERDUE",
                    referral_id=row.request_id,
                    case_id=row.case_id,
                    actor=self.me,
                    from_party=row.counterpart,
                    to_party=self.me,
                    reason=f"due={row.due_at};alarm={row.alarm_at}",
                    at_ms=now,
                )
            )
        return found
