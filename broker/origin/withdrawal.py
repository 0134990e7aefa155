"""Withdrawals: an amendment that drops a recipient tells it so, signed by the origin.

Amending a referral so that it no longer goes to an organisation (NL → FR:
police-nl drops out) would leave that organisation holding the earlier version
as current. The origin sends each dropped recipient a **withdrawal** of the
version it holds: a ``StatusUpdate`` emitted by the origin itself (``emitted_by
== origin_org``) with status ``CLOSED``, reason code ``WITHDRAWN``,
``destination_org`` the dropped recipient and ``referral_version`` the version
withdrawn; signed like every status (its signature binds the referral, the
origin, the emitter and the status). It goes to status intake like any status;
the router sends it to the dropped recipient's referral topic (not back to the
origin), where its sink driver verifies it and marks the referral withdrawn
(:mod:`broker.receiver.withdrawals`). The origin records it in the ledger as
``STATUS_SENT`` to the recipient, reason ``WITHDRAWN version <n>``, signed by
the origin.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from broker.errors import ReferralError
from broker.ledger.events import HandoverEventType, LedgerEmitter, handover_event
from broker.network import Network
from broker.origin.outbox import OutboxEntry
from broker.routing.decide import decide
from broker.security.rules import OriginSecurity
from broker.wire.codec import Codec
from broker.wire.models import ReferralStatus, StatusUpdate, utc_now_ms
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers, TopicNames

__all__ = [
    "WITHDRAWAL_KIND",
    "WITHDRAWN",
    "Withdrawer",
    "dropped_recipients",
    "is_withdrawal",
    "withdrawal_reason",
    "withdrawal_update",
]

log = logging.getLogger("referral.origin.withdrawal")

#: The reason code of a withdrawal (a CLOSED emitted by the referral's origin).
WITHDRAWN = "WITHDRAWN"
#: The ``referral.kind`` header of a withdrawal on a referral topic (a hint; it is verified).
WITHDRAWAL_KIND = b"withdrawal"


def is_withdrawal(status: Mapping[str, Any]) -> bool:
    """True if a status update datum is shaped as a withdrawal (says nothing of its signature)."""
    return (
        status.get("status") == ReferralStatus.CLOSED
        and status.get("reason_code") == WITHDRAWN
        and status.get("emitted_by") == status.get("origin_org")
        and isinstance(status.get("destination_org"), str)
    )


def withdrawal_reason(version: int) -> str:
    """The ledger reason of a withdrawal of ``version``."""
    return f"{WITHDRAWN} version {version}"


def withdrawal_update(entry: OutboxEntry, origin: str, recipient: str) -> StatusUpdate:
    """The withdrawal of ``entry``'s current version, from ``origin`` to ``recipient``."""
    return StatusUpdate(
        referral_id=entry.referral_id,
        case_id=entry.case_id,
        emitted_by=origin,
        emitted_at=utc_now_ms(),
        status=ReferralStatus.CLOSED,
        reason_code=WITHDRAWN,
        destination_org=recipient,
        origin_org=origin,
        referral_version=entry.version,
    )


def dropped_recipients(
    entry: OutboxEntry | None,
    codec: Codec,
    network: Network,
    names: TopicNames,
    now_to: Sequence[str],
) -> list[str]:
    """The organisations ``entry``'s current version was routed to that ``now_to`` leaves out."""
    if entry is None:
        return []
    try:
        before = decide(codec.decode_envelope(entry.value), network, names).orgs
    except ReferralError:
        return []  # the stored version no longer routes anywhere: nobody to tell
    kept = set(now_to)
    return [org for org in before if org not in kept]


class Withdrawer:
    """Signs and sends an origin's withdrawals, and records each in the ledger."""

    def __init__(
        self,
        producer: KafkaProducer,
        codec: Codec,
        names: TopicNames,
        security: OriginSecurity,
        ledger: LedgerEmitter,
        *,
        ack_timeout: float = 30.0,
    ) -> None:
        self.producer = producer
        self.codec = codec
        self.names = names
        self.security = security
        self.ledger = ledger
        self.ack_timeout = ack_timeout

    def withdraw(self, entry: OutboxEntry, recipients: Sequence[str]) -> list[str]:
        """Withdraw ``entry``'s current version from each of ``recipients``; those sent."""
        sent = []
        for org in recipients:
            update = withdrawal_update(entry, self.security.org_id, org)
            datum = update.to_avro()
            value = self.codec.encode(STATUS_UPDATE, datum)
            headers = [
                (Headers.REFERRAL_ID, entry.referral_id.encode()),
                (Headers.CASE_ID, entry.case_id.encode()),
                (Headers.ORIGIN, self.security.org_id.encode()),
                (Headers.RECORD_KIND, WITHDRAWAL_KIND),
                *self.security.sign_status(value, datum),
            ]
            try:
                meta = self.producer.send(
                    self.names.status_intake,
                    key=entry.referral_id.encode(),
                    value=value,
                    headers=headers,
                ).get(timeout=self.ack_timeout)
            except KafkaError as exc:
                log.warning(
                    "withdrawal of %s from %s not sent: %s",
                    entry.referral_id,
                    org,
                    type(exc).__name__,
                )
                continue
            self.ledger.emit(
                handover_event(
                    HandoverEventType.STATUS_SENT,
                    referral_id=entry.referral_id,
                    case_id=entry.case_id,
                    actor=self.security.org_id,
                    from_party=self.security.org_id,
                    to_party=org,
                    topic=self.names.status_intake,
                    partition=meta.partition,
                    offset=meta.offset,
                    reason=withdrawal_reason(entry.version),
                )
            )
            sent.append(org)
        return sent
