"""Sending a status update by hand: what ``referral status`` and the web console both do.

The rules it follows: broker/receiver/README.md, section `statuses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata
from opentelemetry.context import Context
from pydantic import ValidationError

from broker.config import Settings
from broker.errors import KafkaBrokerError, ValidationFailed
from broker.ledger.events import HandoverEventType, LedgerEmitter, handover_event
from broker.lifecycle import LifecycleError, advance, allowed_next
from broker.network import Network
from broker.receiver.inbox import Inbox, InboxRecord
from broker.security.rules import OriginSecurity, ReceiverSecurity
from broker.tracing import Tracing
from broker.wire.codec import Codec
from broker.wire.models import ItemOutcome, ReferralStatus, StatusUpdate, problems_of, utc_now_ms
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers, TopicNames

__all__ = ["StatusSender", "current_status", "new_status_update", "send_status_update"]


class StatusSender:
    """Encodes status updates, signs them and publishes them to status intake.

    Records are keyed by referral id; the signature headers come from
    ``security`` (the emitting organisation's keys; without them, plain, only
    where the network allows plain referrals — else SecurityError), which also
    seals what an update says (note, reason, item outcomes) for its origin.
    """

    def __init__(
        self,
        producer: KafkaProducer,
        codec: Codec,
        names: TopicNames,
        tracing: Tracing | None = None,
        security: OriginSecurity | ReceiverSecurity | None = None,
    ) -> None:
        self.producer = producer
        self.codec = codec
        self.names = names
        self.tracing = tracing or Tracing(None, "status")
        self.security = security

    def send(self, update: StatusUpdate, parent: Context | None = None) -> FutureRecordMetadata:
        """Publish one (validated) status update asynchronously, in the referral's trace.

        With ``security``, what the update says is sealed for its origin before it is signed.
        """
        datum = update.to_avro()
        if self.security is not None:
            datum = self.security.seal_status(self.codec, datum)
        value = self.codec.encode(STATUS_UPDATE, datum)
        headers = [
            (Headers.REFERRAL_ID, update.referral_id.encode()),
            (Headers.CASE_ID, update.case_id.encode()),
            (Headers.ORIGIN, update.origin_org.encode()),
        ]
        if self.security is not None:
            headers += self.security.sign_status(value, datum)
        with self.tracing.send(
            self.names.status_intake,
            headers,
            parent=parent,
            attributes={
                "referral.id": update.referral_id,
                "referral.org": update.emitted_by,
                "referral.status": str(update.status),
            },
        ):
            return self.producer.send(
                self.names.status_intake,
                key=update.referral_id.encode(),
                value=value,
                headers=headers,
            )

    def received(
        self,
        org_id: str,
        referral_id: str,
        case_id: str,
        origin: str,
        parent: Context | None = None,
        version: int = 1,
    ) -> FutureRecordMetadata:
        """Publish a RECEIVED receipt from ``org_id`` for one referral (of ``version``)."""
        update = StatusUpdate(
            referral_id=referral_id,
            case_id=case_id,
            emitted_by=org_id,
            emitted_at=utc_now_ms(),
            status=ReferralStatus.RECEIVED,
            origin_org=origin,
            referral_version=version if version > 1 else None,
        )
        return self.send(update, parent)


def current_status(inbox: Inbox, origin_org: str, referral_id: str) -> ReferralStatus | None:
    """Where the lifecycle stands after what this organisation sent (RECEIVED on delivery)."""
    current: ReferralStatus | None = ReferralStatus.RECEIVED
    for sent in inbox.sent_statuses(origin_org, referral_id):
        try:
            current = advance(current, sent)
        except (LifecycleError, ValueError):  # refused at the time: the furthest valid one stands
            continue
    return current


def new_status_update(
    inbox: Inbox,
    org: str,
    record: InboxRecord,
    status: ReferralStatus,
    outcomes: Sequence[ItemOutcome] = (),
    *,
    note: str | None = None,
    reason_code: str | None = None,
    destination: str | None = None,
) -> StatusUpdate:
    """The update ``org`` sends about the referral of ``record`` (its current version).

    LifecycleError if ``status`` does not follow the referral's current status
    (RECEIVED is the sink's, never sent by hand); ValidationFailed naming the
    field if the update is not valid.
    """
    current = current_status(inbox, record.origin_org, record.referral_id)
    if status not in allowed_next(current) or status is ReferralStatus.RECEIVED:
        raise LifecycleError(current, status)
    version = inbox.version(record.origin_org, record.referral_id, record.sink) or record.version
    try:
        return StatusUpdate(
            referral_id=record.referral_id,
            case_id=record.case_id,
            emitted_by=org,
            emitted_at=utc_now_ms(),
            status=status,
            reason_code=reason_code or None,
            note=note or None,
            destination_org=destination or None,
            origin_org=record.origin_org,
            item_outcomes=tuple(outcomes),
            referral_version=version if version > 1 else None,
        )
    except ValidationError as exc:
        problems = problems_of(exc)
        raise ValidationFailed("\n".join(problems), problems) from None


def send_status_update(
    settings: Settings,
    network: Network,
    codec: Codec,
    producer: Any,
    update: StatusUpdate,
    tracing: Tracing | None = None,
) -> None:
    """Sign and publish ``update`` as its emitter, record STATUS_SENT, remember it in the inbox.

    Waits for the broker's acknowledgements; KafkaBrokerError if they do not come. A
    destination not in the network is refused before anything is signed (UnknownName).
    With ``tracing``, the send is a PRODUCER span (the root of the status's trace).
    """
    if update.destination_org is not None:
        network.organisation(update.destination_org)
    org = update.emitted_by
    names = settings.topic_names()
    security = ReceiverSecurity.load(settings, network, org)
    try:
        sender = StatusSender(producer, codec, names, tracing=tracing, security=security)
        meta = sender.send(update).get(timeout=30)
        LedgerEmitter(producer, codec, names.ledger, signer=security.ledger_signer()).emit(
            handover_event(
                HandoverEventType.STATUS_SENT,
                referral_id=update.referral_id,
                case_id=update.case_id,
                actor=org,
                from_party=org,
                to_party=update.origin_org,
                topic=names.status_intake,
                partition=meta.partition,
                offset=meta.offset,
                reason=update.status.value,
            )
        )
        producer.flush(30)
    except KafkaError as exc:
        raise KafkaBrokerError(f"status not sent: {type(exc).__name__}") from exc
    finally:
        security.close()
    inbox = Inbox.for_org(settings, org)
    try:
        inbox.record_sent_status(
            update.origin_org,
            update.referral_id,
            update.status.value,
            outcomes=update.item_outcomes,
        )
    finally:
        inbox.close()
