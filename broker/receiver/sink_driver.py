"""The receiver's sink driver: verify each referral, hand it to every sink once, answer it.

The rules (skips, repeats, amendments, refusals, receipts) are in broker/receiver/README.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kafka.producer.future import FutureRecordMetadata

from broker.config import Settings
from broker.contracts import Delivery, Sink, jsonable
from broker.errors import CodecError, DeliveryError, SealError, SecurityError
from broker.kafka.deadletter import DeadLetterStage
from broker.kafka.loop import BatchContext, RecordContext
from broker.kafka.service import LoopService
from broker.kafka.tally import attributable
from broker.ledger.events import HandoverEventType
from broker.lifecycle import reason_code
from broker.receiver.erase_requests import EraseRequests, is_erase_record
from broker.receiver.erasure import ReceiverEraser, shredder_for
from broker.receiver.inbox import DeliveryState, Inbox, SinkRefusal
from broker.receiver.statuses import StatusSender
from broker.receiver.withdrawals import Withdrawals, is_withdrawal_record
from broker.security.rules import ReceiverSecurity, stage_of
from broker.security.shredding import Held
from broker.shapes import check_ids
from broker.wire.codec import Codec
from broker.wire.models import ReferralStatus, StatusUpdate, utc_now_ms
from broker.wire.registry import REFERRAL
from broker.wire.topics import Headers, header

__all__ = ["SinkDriver"]

log = logging.getLogger("referral.receiver.sink_driver")


class SinkDriver(LoopService[Sink]):
    """Feeds an organisation's sinks from its referral topics (group ``sink-<org>``)."""

    name = "sink"

    def __init__(
        self,
        settings: Settings,
        org_id: str,
        codec: Codec,
        topics: Sequence[str],
        sinks: Sequence[Sink],
        inbox: Inbox,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("group_id", f"sink-{org_id}")
        group_id = kwargs.pop("group_id")
        #: Verifies, checks routing, opens and checks handling before delivery (None: no checks).
        self.security: ReceiverSecurity | None = kwargs.pop("security", None)
        if self.security is not None:
            kwargs.setdefault("signer", self.security.ledger_signer())
        super().__init__(settings, org_id, codec, topics, group_id, sinks, **kwargs)
        self.inbox = inbox
        self.status = StatusSender(
            self.producer, codec, self.names, self.tracing, security=self.security
        )
        #: The batch's answers (RECEIVED, REJECTED), sent once its sinks are durable.
        self._answers: list[tuple[RecordContext, Callable[[], FutureRecordMetadata]]] = []
        #: The batch's deliveries ``(delivery, sink, resolves failures)``, recorded in the
        #: inbox in one transaction once the sinks are durable; by (origin, id, sink) the
        #: version each delivered, which later records of the batch see.
        self._recorded: list[tuple[Delivery, str, bool]] = []
        self._batch_versions: dict[tuple[str, str, str], int] = {}
        #: Repeats of a delivery still unrecorded: counted once it is recorded.
        self._batch_repeats: list[tuple[str, str, str]] = []
        #: Withdrawals by the origins of referrals an amendment no longer sends here.
        self.withdrawals = Withdrawals(org_id, codec, self.security, sinks, inbox, self.stats)
        #: Shreds erased referrals' period keys (None: no keys); holds what arrives sealed.
        self.shredder = (
            shredder_for(settings, self.security.network, org_id)
            if self.security is not None
            else None
        )
        self._next_destroy_check = 0.0
        #: The sealed body of the record :meth:`_open` opened last.
        self._sealed: Mapping[str, Any] | None = None
        #: Erase requests by the origins of referrals received here (answered ERASED).
        self.erase_requests = EraseRequests(
            org_id,
            codec,
            self.security,
            ReceiverEraser(settings, org_id, sinks, inbox, self.shredder, self.keys_changed),
            self.stats,
            self._answer,
        )

    def step(self, stop: threading.Event) -> int:
        """One consume cycle, then the period keys an erasure scheduled for destruction
        (looked at once a second)."""
        n = super().step(stop)
        if self.shredder is not None and time.monotonic() >= self._next_destroy_check:
            self._next_destroy_check = time.monotonic() + 1.0
            if self.shredder.destroy_due():
                self.keys_changed()
        return n

    def keys_changed(self) -> None:
        """Period keys were destroyed: drop them from the checks at once."""
        if self.security is not None:
            self.security.live_keys.refresh()

    def before_commit(self, batch: BatchContext) -> None:
        """Make every sink durable, then answer the batch's records, back to back.

        No receipt leaves before what it acknowledges is durable; if a sink cannot
        be made durable, nothing is answered and the loop handles the batch again.
        Sent together, the answers share the producer's batches (one wake-up of its
        sender, one produce request per partition, not one per record). The inbox
        records the batch's deliveries in one transaction after the sinks are flushed:
        a crash before leaves them unrecorded and uncommitted, so they are delivered
        again (at least once), never remembered as delivered yet lost.
        """
        answers, self._answers = self._answers, []
        recorded, self._recorded = self._recorded, []
        repeats, self._batch_repeats = self._batch_repeats, []
        withdrawn = self.withdrawals.take()
        self._batch_versions.clear()
        super().before_commit(batch)
        if self.shredder is not None:
            self.shredder.flush()  # before the inbox says delivered: erasable from then on
        self.withdrawals.record(withdrawn)
        if recorded:
            # Only now: the inbox never says delivered what a sink could still lose.
            self.inbox.record_many(recorded)
            for origin, referral_id, kind in repeats:
                self.inbox.count_duplicate(origin, referral_id, kind)
            self.inbox.flush()
        for ctx, send in answers:
            ctx.track(send)

    def close(self) -> None:
        """Leave the group, flush and close every sink, then close the security checks."""
        try:
            super().close()
        finally:
            if self.shredder is not None:
                self.shredder.close()
            if self.security is not None:
                self.security.close()

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Deliver one record addressed to this organisation (idempotently)."""
        orgs = header(record.headers, Headers.DESTINATION_ORGS)
        if orgs is None or self.org_id not in orgs.split(","):
            self.stats.skipped += 1
            return
        if is_withdrawal_record(record):
            self.withdrawals.handle(record, ctx)
            return
        if is_erase_record(record):
            self.erase_requests.handle(record, ctx)
            return
        delivery = self._open(record, ctx)
        if delivery is None:
            return
        state = self._state(delivery)
        if state.erased:
            # Erased here (by a retention rule or on request): never delivered again.
            self.stats.duplicates += 1
            self._event(ctx, delivery, HandoverEventType.DUPLICATE_SKIPPED, "ERASED")
            return
        if self.shredder is not None and self._sealed is not None:
            held = Held(delivery.origin_org, delivery.referral_id, self._sealed, delivery.version)
            self.shredder.hold(held)
        refused = state.refusal
        if refused is not None and refused.version >= delivery.version:
            # Refused for good before: the same answer again, nothing delivered or dead-lettered.
            self.stats.duplicates += 1
            self._event(
                ctx, delivery, HandoverEventType.DUPLICATE_SKIPPED, f"REJECTED {refused.reason}"
            )
            self._rejection(ctx, refused)
            return
        # A version is delivered once per sink; an older or the same one again is a repeat.
        # (The signature checked above is the origin's: only it can make a newer version.)
        pending: list[tuple[Sink, int | None]] = []
        for s in self.sinks:
            before = state.versions.get(s.kind)
            if before is None or before < delivery.version:
                pending.append((s, before))
        if not pending:
            self._repeat(ctx, delivery)
            return
        delivered = self._deliver(ctx, delivery, pending, state)
        if not delivered:
            return
        origin, referral_id = delivery.origin_org, delivery.referral_id
        if refused is not None and self.inbox.refusal(origin, referral_id) == refused:
            self.inbox.clear_refusal(origin, referral_id)  # the amendment answered the refusal
        self.stats.delivered += 1
        version = delivery.version
        said = ",".join(delivered) + (f" version {version}" if version > 1 else "")
        self._event(ctx, delivery, HandoverEventType.DELIVERED, said)
        self._receipt(ctx, referral_id, delivery.case_id, origin, version)

    def _open(self, record: Any, ctx: RecordContext) -> Delivery | None:
        """The record as a delivery once every check passed; else dead-lettered and None."""
        self._sealed = None
        try:
            if self.security is not None:
                # Signature before decoding, then the sealed body and the handling rules.
                datum, self._sealed = self.security.receive_sealed(
                    self.codec, record.topic, record.value or b"", record.headers
                )
            else:
                _, datum = self.codec.decode(record.value or b"", expected=REFERRAL)
            envelope = datum["envelope"]
            check_ids(envelope, "envelope.")
            return Delivery(
                referral_id=str(envelope["referral_id"]),
                case_id=str(envelope["case_id"]),
                origin_org=str(envelope["origin_org"]),
                value=bytes(record.value),
                document=jsonable(datum),
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                route_reason=header(record.headers, Headers.ROUTE_REASON) or "",
                version=int(envelope.get("version") or 1),
            )
        except SealError as exc:
            if not self._shredded(record, ctx):
                ctx.dead_letter(stage_of(exc), exc, recorded=self._attributable(record, exc))
        except SecurityError as exc:
            ctx.dead_letter(stage_of(exc), exc, recorded=self._attributable(record, exc))
        except (CodecError, KeyError, TypeError) as exc:
            recorded = self._attributable(record, exc)
            ctx.dead_letter(DeadLetterStage.SINK_DECODE, exc, recorded=recorded)
        return None

    def _shredded(self, record: Any, ctx: RecordContext) -> bool:
        """True (a repeat, skipped) if a sealed copy that no longer opens is of a referral
        erased here: its key was shredded. (A SealError comes after the signature check.)"""
        try:
            envelope = self.codec.decode_envelope(record.value or b"")
            origin, rid = str(envelope["origin_org"]), str(envelope["referral_id"])
        except (CodecError, KeyError, TypeError):
            return False
        if not self.inbox.state(origin, rid).erased:
            return False
        self.stats.duplicates += 1
        ctx.event(
            HandoverEventType.DUPLICATE_SKIPPED,
            rid,
            str(envelope.get("case_id") or ""),
            from_party=origin,
            to_party=self.org_id,
            reason="ERASED",
        )
        return True

    def _attributable(self, record: Any, exc: BaseException) -> bool:
        """Whether the refused record gets a ledger event of its own (see broker.kafka.tally)."""
        return attributable(exc, record.headers, verified=self.security is not None)

    def _state(self, delivery: Delivery) -> DeliveryState:
        """One look-up: what each sink delivered, the refusal and the open failures (and
        what the sinks delivered earlier in this batch, not yet recorded)."""
        origin, referral_id = delivery.origin_org, delivery.referral_id
        state = self.inbox.state(origin, referral_id)
        if self._batch_versions:
            for s in self.sinks:
                v = self._batch_versions.get((origin, referral_id, s.kind))
                if v is not None:
                    state.versions[s.kind] = max(v, state.versions.get(s.kind, 0))
                    state.failures.pop(s.kind, None)
        return state

    def _event(
        self, ctx: RecordContext, delivery: Delivery, kind: HandoverEventType, reason: str | None
    ) -> None:
        ctx.event(
            kind,
            delivery.referral_id,
            delivery.case_id,
            from_party=delivery.origin_org,
            to_party=self.org_id,
            reason=reason,
        )

    def _repeat(self, ctx: RecordContext, delivery: Delivery) -> None:
        """Every sink has this version already: count the repeat, answer RECEIVED again."""
        self.stats.duplicates += 1
        origin, referral_id, version = delivery.origin_org, delivery.referral_id, delivery.version
        kind = self.sinks[0].kind if self.sinks else ""
        if (origin, referral_id, kind) in self._batch_versions:
            self._batch_repeats.append((origin, referral_id, kind))
        else:
            self.inbox.count_duplicate(origin, referral_id, kind)
        said = f"version {version}" if version > 1 else None
        self._event(ctx, delivery, HandoverEventType.DUPLICATE_SKIPPED, said)
        self._receipt(ctx, referral_id, delivery.case_id, origin, version)

    def _deliver(
        self,
        ctx: RecordContext,
        delivery: Delivery,
        pending: Sequence[tuple[Sink, int | None]],
        state: DeliveryState,
    ) -> list[str]:
        """Hand the delivery to each pending sink; the kinds that took it."""
        origin, referral_id = delivery.origin_org, delivery.referral_id
        delivered = []
        for sink, before in pending:
            handed = replace(delivery, previous_version=before) if before is not None else delivery
            try:
                sink.deliver(handed)
            except DeliveryError as exc:
                ctx.dead_letter(DeadLetterStage.DELIVER, exc, referral_id)
                if exc.permanent:
                    # Refused for good: the sinks after it are not tried; it is the answer.
                    self._refused(ctx, delivery, sink.kind, exc)
                    break
                self.inbox.record_failure(origin, referral_id, sink.kind)
                continue
            # The delivery and the end of the sink's open failures: recorded with the
            # batch's, in one transaction, once the sinks are durable (before_commit).
            failed_before = bool(state.failures.get(sink.kind))
            self._recorded.append((handed, sink.kind, failed_before))
            self._batch_versions[(origin, referral_id, sink.kind)] = delivery.version
            delivered.append(sink.kind)
            if failed_before:
                said = f"{DeadLetterStage.DELIVER}: delivered by {sink.kind}"
                self._event(ctx, delivery, HandoverEventType.RESOLVED, said)
        return delivered

    def _refused(
        self, ctx: RecordContext, delivery: Delivery, sink: str, exc: DeliveryError
    ) -> None:
        """The organisation's system refused a referral for good: remember it, answer REJECTED."""
        self.stats.refused += 1
        refusal = self.inbox.record_refusal(
            SinkRefusal(
                origin_org=delivery.origin_org,
                referral_id=delivery.referral_id,
                case_id=delivery.case_id,
                sink=sink,
                reason=reason_code(exc.reason),
                emitted_at_ms=int(utc_now_ms().timestamp() * 1000),
                version=delivery.version,
            )
        )
        self.inbox.record_sent_status(
            delivery.origin_org, delivery.referral_id, ReferralStatus.REJECTED.value
        )
        self._rejection(ctx, refusal)

    def _rejection(self, ctx: RecordContext, refusal: SinkRefusal) -> None:
        """Answer (again) with the signed REJECTED of a refusal: same update, same emission time
        (sent by :meth:`before_commit`)."""
        update = StatusUpdate(
            referral_id=refusal.referral_id,
            case_id=refusal.case_id,
            emitted_by=self.org_id,
            emitted_at=datetime.fromtimestamp(refusal.emitted_at_ms / 1000, tz=UTC),
            status=ReferralStatus.REJECTED,
            reason_code=refusal.reason,
            origin_org=refusal.origin_org,
            referral_version=refusal.version if refusal.version > 1 else None,
        )
        self._answers.append((ctx, lambda: self.status.send(update, ctx.trace)))

    def _answer(self, ctx: RecordContext, update: StatusUpdate) -> None:
        """Send ``update`` once the batch is durable (by :meth:`before_commit`)."""
        self._answers.append((ctx, lambda: self.status.send(update, ctx.trace)))

    def _receipt(
        self, ctx: RecordContext, referral_id: str, case_id: str, origin: str, version: int = 1
    ) -> None:
        """Answer RECEIVED (sent by :meth:`before_commit`; a failure to build or send it is
        the record's: it is handled again)."""
        self._answers.append(
            (
                ctx,
                lambda: self.status.received(
                    self.org_id, referral_id, case_id, origin, ctx.trace, version
                ),
            )
        )
