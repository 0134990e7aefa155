"""Sending a status update by hand: what ``referral status`` and the web console both do.

A receiving organisation's person reports where a referral stands. The update is
signed with the organisation's keys and published to status intake
(:class:`~connectors.delivery.StatusSender`), the hop is recorded in the
ledger as STATUS_SENT (signed by the organisation), and the organisation's
inbox remembers it (the lifecycle of the next update starts from there).
Checking the lifecycle and building the update are the caller's.
"""

from __future__ import annotations

from typing import Any

from kafka.errors import KafkaError

from broker.config import Settings
from broker.errors import BrokerError
from broker.ledger.events import HandoverEventType, LedgerEmitter, handover_event
from broker.lifecycle import LifecycleError, advance
from broker.network import Network
from broker.security.rules import ReceiverSecurity
from broker.wire.codec import Codec
from broker.wire.models import ReferralStatus, StatusUpdate
from connectors.delivery import StatusSender
from connectors.inbox import Inbox

__all__ = ["current_status", "send_status_update"]


def current_status(inbox: Inbox, origin_org: str, referral_id: str) -> ReferralStatus | None:
    """Where the lifecycle stands after what this organisation sent (RECEIVED on delivery)."""
    current: ReferralStatus | None = ReferralStatus.RECEIVED
    for sent in inbox.sent_statuses(origin_org, referral_id):
        try:
            current = advance(current, sent)
        except (LifecycleError, ValueError):  # refused at the time: the furthest valid one stands
            continue
    return current


def send_status_update(
    settings: Settings, network: Network, codec: Codec, producer: Any, update: StatusUpdate
) -> None:
    """Sign and publish ``update`` as its emitter, record STATUS_SENT, remember it in the inbox.

    Waits for the broker's acknowledgements; BrokerError if they do not come.
    """
    org = update.emitted_by
    names = settings.topic_names()
    security = ReceiverSecurity.load(settings, network, org)
    try:
        sender = StatusSender(producer, codec, names, security=security)
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
        raise BrokerError(f"status not sent: {type(exc).__name__}") from exc
    finally:
        security.close()
    inbox = Inbox.for_org(settings, org)
    try:
        inbox.record_sent_status(update.origin_org, update.referral_id, update.status.value)
    finally:
        inbox.close()
