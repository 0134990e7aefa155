"""A withdrawal at the recipient an amendment dropped: verified, then shown by every sink.

The origin's withdrawal (:mod:`broker.origin.withdrawal`) reaches the dropped
recipient's sink driver on its referral topic, marked ``referral.kind:
withdrawal`` (a hint: what decides is the check). It counts only if it is
signed by the referral's origin (the emitter, whose key the trust file names),
within the signature window, shaped as a withdrawal, addressed to this
organisation, and about a referral this organisation received from that
origin; else it is dead-lettered (``VERIFY``, ``SIGNATURE_WINDOW``,
``STATUS_VERIFY``; unsigned or undecodable ones without a ledger event of
their own). A withdrawal of a version older than one the sinks hold is stale
(the origin sent a newer one since) and changes nothing; one already recorded
is a repeat. Otherwise each sink marks the referral withdrawn
(:meth:`broker.contracts.Sink.withdraw`), the inbox records it once the sinks
are durable, and the ledger records DELIVERED, reason ``WITHDRAWN version <n>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from broker.contracts import Sink, Withdrawal
from broker.errors import CodecError, DeliveryError, NotARecipient, SecurityError, SignatureInvalid
from broker.kafka.deadletter import DeadLetterStage
from broker.kafka.loop import LoopStats, RecordContext
from broker.kafka.tally import attributable
from broker.ledger.events import HandoverEventType
from broker.origin.withdrawal import WITHDRAWAL_KIND, is_withdrawal, withdrawal_reason
from broker.receiver.inbox import Inbox
from broker.security.rules import ReceiverSecurity, stage_of
from broker.security.signing import StatusContext, check_status, has_signature, verify_signed
from broker.wire.codec import Codec
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers, header

__all__ = ["Withdrawals", "is_withdrawal_record", "verify_withdrawal"]


def is_withdrawal_record(record: Any) -> bool:
    """True if a record on a referral topic says it is a withdrawal (checked before use)."""
    return header(record.headers, Headers.RECORD_KIND) == WITHDRAWAL_KIND.decode()


def verify_withdrawal(
    security: ReceiverSecurity | None, codec: Codec, org_id: str, value: bytes, headers: Any
) -> dict[str, Any]:
    """The withdrawal datum, signed by the referral's origin and addressed to ``org_id``.

    SecurityError if it is not (see :func:`broker.security.rules.stage_of`); codec
    errors pass through. Without ``security`` only its shape and address are checked.
    """
    context = None
    if security is not None and has_signature(headers):
        context = verify_signed(headers, value, security.trust, StatusContext)
        security.window.check(context.signed_at_ms, what="withdrawal signature")
    _, datum = codec.decode(value, expected=STATUS_UPDATE)
    origin = str(datum.get("origin_org"))
    if context is not None:
        check_status(context, datum)
    elif security is not None and (
        not security.network.network.allow_plain or security.trust.has_signing_keys(origin)
    ):
        raise SignatureInvalid(f"missing signature on a withdrawal from {origin}")
    if not is_withdrawal(datum):
        raise NotARecipient(f"a status of {datum.get('emitted_by')} marked as a withdrawal")
    if datum.get("destination_org") != org_id:
        raise NotARecipient(f"withdrawal for {datum.get('destination_org')}, not {org_id}")
    return dict(datum)


def _withdrawal(datum: Mapping[str, Any], record: Any) -> Withdrawal:
    at = datum.get("emitted_at")
    stamp = at if isinstance(at, datetime) else datetime.fromtimestamp(0, UTC)
    return Withdrawal(
        referral_id=str(datum["referral_id"]),
        case_id=str(datum["case_id"]),
        origin_org=str(datum["origin_org"]),
        version=int(datum.get("referral_version") or 1),
        withdrawn_at=stamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )


class Withdrawals:
    """The sink driver's part for withdrawals: check, hand to the sinks, record once durable."""

    def __init__(
        self,
        org_id: str,
        codec: Codec,
        security: ReceiverSecurity | None,
        sinks: Sequence[Sink],
        inbox: Inbox,
        stats: LoopStats,
    ) -> None:
        self.org_id = org_id
        self.codec = codec
        self.security = security
        self.sinks = sinks
        self.inbox = inbox
        self.stats = stats
        #: The batch's withdrawals, recorded in the inbox once the sinks are durable.
        self._pending: list[Withdrawal] = []

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Act on one record marked as a withdrawal (dead-lettered if it is not one)."""
        try:
            datum = verify_withdrawal(
                self.security, self.codec, self.org_id, record.value or b"", record.headers
            )
            origin, referral_id = str(datum["origin_org"]), str(datum["referral_id"])
            held = self.inbox.state(origin, referral_id).versions
            if not held:
                raise NotARecipient(
                    f"withdrawal of a referral {self.org_id} never received from {origin}"
                )
        except SecurityError as exc:
            ctx.dead_letter(stage_of(exc), exc, recorded=self._attributable(record, exc))
            return
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            recorded = self._attributable(record, exc)
            ctx.dead_letter(DeadLetterStage.SINK_DECODE, exc, recorded=recorded)
            return
        withdrawal = _withdrawal(datum, record)
        before = self.inbox.withdrawn_version(origin, referral_id)
        pending = any(
            (w.origin_org, w.referral_id) == (origin, referral_id)
            and w.version >= withdrawal.version
            for w in self._pending
        )
        if (
            max(held.values()) > withdrawal.version
            or pending
            or (before is not None and before >= withdrawal.version)
        ):
            self.stats.duplicates += 1  # stale (a newer version arrived since) or a repeat
            return
        for sink in self.sinks:
            try:
                sink.withdraw(withdrawal)
            except DeliveryError as exc:
                ctx.dead_letter(DeadLetterStage.DELIVER, exc, referral_id)
                return
        self._pending.append(withdrawal)
        ctx.event(
            HandoverEventType.DELIVERED,
            referral_id,
            withdrawal.case_id,
            from_party=origin,
            to_party=self.org_id,
            reason=withdrawal_reason(withdrawal.version),
        )

    def take(self) -> list[Withdrawal]:
        """The batch's withdrawals, forgotten here (recorded by :meth:`record`, or redone)."""
        pending, self._pending = self._pending, []
        return pending

    def record(self, withdrawals: Sequence[Withdrawal]) -> None:
        """Record withdrawals in the inbox (once the sinks that marked them are durable)."""
        for withdrawal in withdrawals:
            self.inbox.record_withdrawal(withdrawal)
        if withdrawals:
            self.inbox.flush()

    def _attributable(self, record: Any, exc: BaseException) -> bool:
        return attributable(exc, record.headers, verified=self.security is not None)
