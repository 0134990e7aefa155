"""An erase request at a recipient: verified, every copy erased, answered with ERASED.

The origin's erase request (:mod:`broker.origin.erase_request`) reaches the
recipient's sink driver on its referral topic, marked ``referral.kind: erase``
(a hint: what decides is the check). It counts only if it is signed by the
referral's origin, within the signature window, shaped as an erase request,
addressed to this organisation and about a referral it received from that
origin; else it is dead-lettered like a forged withdrawal. Then
:class:`broker.receiver.erasure.ReceiverEraser` erases the referral from every
sink, the handling log and the inbox (which keeps a tombstone), the ledger
records DELIVERED (``ERASE <code>``) and a signed ERASED goes back to the
origin. A request about a referral already erased here is answered again (the
origin may have missed the answer), nothing else done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.errors import CodecError, DeliveryError, NotARecipient, SecurityError, SignatureInvalid
from broker.kafka.deadletter import DeadLetterStage
from broker.kafka.loop import LoopStats, RecordContext
from broker.kafka.tally import attributable
from broker.ledger.events import HandoverEventType
from broker.origin.erase_request import (
    ERASE_KIND,
    ERASED,
    erase_code,
    erase_reason,
    erased_update,
    is_erase_request,
)
from broker.receiver.erasure import ReceiverEraser
from broker.security.rules import ReceiverSecurity, stage_of
from broker.security.signing import StatusContext, check_status, has_signature, verify_signed
from broker.wire.codec import Codec
from broker.wire.models import StatusUpdate
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers, header

__all__ = ["EraseRequests", "is_erase_record", "verify_erase_request"]

#: Sends a status answer once the batch is durable (the sink driver's queue).
Answer = Callable[[RecordContext, StatusUpdate], None]


def is_erase_record(record: Any) -> bool:
    """True if a record on a referral topic says it is an erase request (checked before use)."""
    return header(record.headers, Headers.RECORD_KIND) == ERASE_KIND.decode()


def verify_erase_request(
    security: ReceiverSecurity | None, codec: Codec, org_id: str, value: bytes, headers: Any
) -> dict[str, Any]:
    """The erase request datum, signed by the referral's origin and addressed to ``org_id``.

    SecurityError if it is not; codec errors pass through.
    """
    context = None
    if security is not None and has_signature(headers):
        context = verify_signed(headers, value, security.trust, StatusContext)
        security.window.check(context.signed_at_ms, what="erase request signature")
    _, datum = codec.decode(value, expected=STATUS_UPDATE)
    origin = str(datum.get("origin_org"))
    if context is not None:
        check_status(context, datum)
    elif security is not None and (
        not security.network.network.allow_plain or security.trust.has_signing_keys(origin)
    ):
        raise SignatureInvalid(f"missing signature on an erase request from {origin}")
    if not is_erase_request(datum):
        raise NotARecipient(f"a status of {datum.get('emitted_by')} marked as an erase request")
    if datum.get("destination_org") != org_id:
        raise NotARecipient(f"erase request for {datum.get('destination_org')}, not {org_id}")
    return dict(datum)


class EraseRequests:
    """The sink driver's part for erase requests: check, erase everywhere, answer ERASED."""

    def __init__(
        self,
        org_id: str,
        codec: Codec,
        security: ReceiverSecurity | None,
        eraser: ReceiverEraser,
        stats: LoopStats,
        answer: Answer,
    ) -> None:
        self.org_id = org_id
        self.codec = codec
        self.security = security
        self.eraser = eraser
        self.stats = stats
        self.answer = answer

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Act on one record marked as an erase request (dead-lettered if it is not one)."""
        try:
            datum = verify_erase_request(
                self.security, self.codec, self.org_id, record.value or b"", record.headers
            )
            origin, referral_id = str(datum["origin_org"]), str(datum["referral_id"])
            case_id = str(datum["case_id"])
            state = self.eraser.inbox.state(origin, referral_id)
            if not state.versions and not state.erased:
                raise NotARecipient(
                    f"erase request of a referral {self.org_id} never received from {origin}"
                )
        except SecurityError as exc:
            ctx.dead_letter(stage_of(exc), exc, recorded=self._attributable(record, exc))
            return
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            recorded = self._attributable(record, exc)
            ctx.dead_letter(DeadLetterStage.SINK_DECODE, exc, recorded=recorded)
            return
        code = erase_code(datum.get("note"))
        if state.erased:
            self.stats.duplicates += 1  # erased before: answer again, nothing to erase
        else:
            try:
                self.eraser.erase(origin, referral_id, f"request:{code}")
            except DeliveryError as exc:
                ctx.dead_letter(DeadLetterStage.DELIVER, exc, referral_id)
                return
            self.stats.delivered += 1
            ctx.event(
                HandoverEventType.DELIVERED,
                referral_id,
                case_id,
                from_party=origin,
                to_party=self.org_id,
                reason=erase_reason(code),
            )
        self.answer(ctx, erased_update(referral_id, case_id, origin, self.org_id))
        ctx.event(
            HandoverEventType.STATUS_SENT,
            referral_id,
            case_id,
            from_party=self.org_id,
            to_party=origin,
            reason=ERASED,
        )

    def _attributable(self, record: Any, exc: BaseException) -> bool:
        return attributable(exc, record.headers, verified=self.security is not None)
