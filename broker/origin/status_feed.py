"""The origin's status feed: acts on the verified status updates of its own referrals.

Rules (who may send what, lifecycle, item outcomes, re-referrals) are in broker/origin/README.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from broker.config import Settings
from broker.contracts import StatusDelivery, StatusSink, jsonable
from broker.errors import CodecError, DeliveryError, SecurityError, SignatureOutOfWindow
from broker.kafka.deadletter import DeadLetterStage
from broker.kafka.loop import BatchContext, RecordContext
from broker.kafka.service import LoopService
from broker.kafka.tally import attributable
from broker.ledger.events import HandoverEventType
from broker.lifecycle import LifecycleError, advance
from broker.network import Network
from broker.origin.erase_request import ERASED, ErasureBook, is_erased_answer
from broker.origin.outbox import Outbox, OutboxEntry
from broker.origin.status_log import Settled, StatusLog
from broker.outcomes import reroutes, status_reason, summarise
from broker.routing.decide import country_of_ip
from broker.security.rules import OriginSecurity
from broker.shapes import check_ids
from broker.wire.codec import Codec
from broker.wire.models import ItemOutcome, ReferralStatus
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers, header

__all__ = ["StatusFeed", "status_key", "superseded", "verified_outcomes"]

log = logging.getLogger("referral.origin.status_feed")


def status_key(status: Mapping[str, Any]) -> str:
    """Identity of a status update for de-duplication at the origin.

    A RECEIVED is the same receipt whenever it is repeated; any other status is
    one event, identified by who emitted it and when. The referral is named by
    its origin and id.
    """
    head = (
        f"{status.get('origin_org')}|{status.get('referral_id')}|{status.get('emitted_by')}|"
        f"{status.get('status')}"
    )
    if status.get("status") == "RECEIVED":
        version = status.get("referral_version")
        return f"{head}|v{version}" if isinstance(version, int) and version > 1 else head
    at = status.get("emitted_at")
    stamp = int(at.timestamp() * 1000) if isinstance(at, datetime) else at
    return f"{head}|{stamp}"


def superseded(entry: OutboxEntry | None, status: str, version: int) -> bool:
    """True for a REJECTED of a version the origin has since amended (the amendment answers
    it): it changes neither the outbox nor the recipient's lifecycle."""
    return status == ReferralStatus.REJECTED and entry is not None and version < entry.version


def verified_outcomes(
    datum: Mapping[str, Any], entry: OutboxEntry | None, *, strict: bool = True
) -> list[ItemOutcome]:
    """A status update's item outcomes, each about an item of the referral (else
    SecurityError); ``strict``: none for a referral the origin does not hold."""
    raw = datum.get("item_outcomes") or []
    if not raw:
        return []
    try:
        outcomes = [ItemOutcome.model_validate(o) for o in raw]
    except ValueError as exc:
        raise SecurityError("status update with an invalid item outcome") from exc
    if entry is None:
        return [] if strict else outcomes
    known = {i.item_id for i in entry.items}
    unknown = [o for o in outcomes if o.item_id not in known]
    if known and unknown:
        raise SecurityError(
            f"status update of {datum.get('emitted_by')} names {len(unknown)} item(s)"
            f" not in referral {datum['referral_id']}"
        )
    return outcomes


class StatusFeed(LoopService[StatusSink]):
    """Feeds an origin's outbox and status sinks from ``status.to.<org>``, verified first.

    Each status reads its outbox entry once; the status log is written once per batch.
    """

    name = "status"

    def __init__(
        self,
        settings: Settings,
        org_id: str,
        codec: Codec,
        sinks: Sequence[StatusSink],
        outbox: Outbox,
        status_log: StatusLog,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("group_id", f"status-{org_id}")
        #: The network (its served jurisdictions) for re-referring moved items; None: never.
        self.network: Network | None = kwargs.pop("network", None)
        group_id = kwargs.pop("group_id")
        #: Checks each status before it is acted on (None: no checks at all).
        self.security: OriginSecurity | None = kwargs.pop("security", None)
        if self.security is not None:
            kwargs.setdefault("signer", self.security.ledger_signer())
        names = settings.topic_names()
        super().__init__(settings, org_id, codec, [names.status(org_id)], group_id, sinks, **kwargs)
        self.outbox = outbox
        self.status_log = status_log
        #: Who was asked to erase and who answered ERASED (:mod:`broker.origin.erase_request`).
        self.erasures = ErasureBook.for_org(settings, org_id)
        self._erased: list[tuple[str, str]] = []
        #: Refused status updates of this run, by dead-letter stage (persisted in the log too).
        self.refused: dict[str, int] = {}
        #: The batch's handed-on statuses and skipped repeats, written once its sinks are
        #: durable; by (referral, emitter) the state each reached, which later records see.
        self._settled: list[Settled] = []
        self._batch_keys: set[str] = set()
        self._batch_states: dict[tuple[str, str], tuple[str, int]] = {}
        self._repeats = 0

    def before_commit(self, batch: BatchContext) -> None:
        """Make the status sinks durable, then record the batch in the status log at once."""
        settled, self._settled = self._settled, []
        repeats, self._repeats = self._repeats, 0
        self._batch_keys.clear()
        self._batch_states.clear()
        erased, self._erased = self._erased, []
        super().before_commit(batch)
        if settled or repeats:
            self.status_log.settle(settled, repeats)
            self.status_log.flush()
        for referral_id, recipient in erased:
            self.erasures.answer(referral_id, recipient)
        for referral_id in dict.fromkeys(rid for rid, _ in erased):
            if self.erasures.all_answered(referral_id):
                self._erase_here(referral_id)

    def close(self) -> None:
        """Leave the group and close the loop, then the erasure book."""
        try:
            super().close()
        finally:
            self.erasures.close()

    def _erase_here(self, referral_id: str) -> None:
        """Every recipient erased ``referral_id``: erase the origin's own copies too."""
        if self.erasures.erased_here(referral_id):
            return
        for sink in self.sinks:
            sink.erase_statuses(referral_id)
        self.status_log.erase(referral_id)
        self.outbox.erase(referral_id)
        self.erasures.mark_erased_here(referral_id)
        log.info("erased referral %s at its origin %s", referral_id, self.org_id)

    def _refuse(
        self, ctx: RecordContext, stage: str, exc: BaseException, referral_id: str | None
    ) -> None:
        self.refused[stage] = self.refused.get(stage, 0) + 1
        record = ctx.record
        self.status_log.count_refused_status(
            stage, f"{record.topic}/{record.partition}/{record.offset}"
        )
        ctx.dead_letter(stage, exc, referral_id, recorded=self._attributable(record, exc))

    def _attributable(self, record: Any, exc: BaseException) -> bool:
        """Whether the refused record gets a ledger event of its own (see broker.kafka.tally)."""
        return attributable(exc, record.headers, verified=self.security is not None)

    def _verified(
        self, record: Any, ctx: RecordContext
    ) -> tuple[dict[str, Any], OutboxEntry | None] | None:
        """The status update and its outbox entry if it may be acted on; else dead-lettered."""
        value = record.value or b""
        rid = header(record.headers, Headers.REFERRAL_ID)
        try:
            if self.security is None:
                _, datum = self.codec.decode(value, expected=STATUS_UPDATE)
                return dict(datum), self.outbox.get(str(datum["referral_id"]))
            datum, _ = self.security.receive_status(self.codec, value, record.headers)
            rid = str(datum["referral_id"])
            entry = self.outbox.get(rid)
            envelope = self.codec.decode_envelope(entry.value) if entry is not None else None
            if not self._asked_to_erase(datum):
                self.security.check_status_sender(datum, envelope)
        except SignatureOutOfWindow as exc:
            self._refuse(ctx, DeadLetterStage.SIGNATURE_WINDOW, exc, rid)
            return None
        except SecurityError as exc:
            self._refuse(ctx, DeadLetterStage.STATUS_VERIFY, exc, rid)
            return None
        except (CodecError, KeyError, TypeError) as exc:
            recorded = self._attributable(record, exc)
            ctx.dead_letter(DeadLetterStage.SINK_DECODE, exc, recorded=recorded)
            return None
        return datum, entry

    def _asked_to_erase(self, datum: Mapping[str, Any]) -> bool:
        """True for a (signed) ERASED from an organisation this origin asked to erase: a
        recipient of an earlier version too, whom the current one no longer routes to."""
        return is_erased_answer(datum) and self.erasures.was_asked(
            str(datum.get("referral_id")), str(datum.get("emitted_by"))
        )

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Act on a verified status: clear the outbox on RECEIVED, feed the status sinks once."""
        verified = self._verified(record, ctx)
        if verified is None:
            return
        datum, entry = verified
        try:
            check_ids(datum)
            referral_id = str(datum["referral_id"])
            status = str(datum["status"])
            emitted_by = str(datum["emitted_by"])
        except (CodecError, KeyError, TypeError) as exc:
            recorded = self._attributable(record, exc)
            ctx.dead_letter(DeadLetterStage.SINK_DECODE, exc, recorded=recorded)
            return
        self.stats.statuses += 1
        try:
            outcomes = verified_outcomes(datum, entry, strict=self.security is not None)
        except SecurityError as exc:
            self._refuse(ctx, DeadLetterStage.STATUS_VERIFY, exc, referral_id)
            return
        version = self._published_version(ctx, datum, entry, referral_id, emitted_by)
        if version is None:
            return
        if status == ReferralStatus.RECEIVED:
            self.outbox.mark_received(referral_id, emitted_by, version=version)
        elif status == ReferralStatus.REJECTED:
            # A verified refusal from a recipient: republishing to it stops.
            self.outbox.mark_refused(
                referral_id, emitted_by, datum.get("reason_code"), version=version
            )
        if is_erased_answer(datum):
            self._erased_answer(ctx, datum, referral_id, emitted_by)
            return
        key = status_key(datum)
        if (
            superseded(entry, status, version)
            or key in self._batch_keys
            or self.status_log.has_status(key)
        ):
            self.stats.duplicates += 1
            self._repeats += 1
            return
        try:
            state = advance(self._state(referral_id, emitted_by, version), status)
        except LifecycleError as exc:
            self._refuse(ctx, DeadLetterStage.STATUS_LIFECYCLE, exc, referral_id)
            return
        if not self._hand_on(record, ctx, datum):
            return
        at = datum.get("emitted_at")
        stamp = int(at.timestamp() * 1000) if isinstance(at, datetime) else 0
        summary = ""
        if outcomes:
            count = len(entry.items) if entry is not None and entry.items else None
            # The ledger is read by every member: counts only, not where items moved.
            summary = summarise(outcomes, count, countries=False)
            self._queue_reroutes(entry, referral_id, outcomes)
        reached = state.value if state is not None else None
        self._settled.append(
            Settled(key, referral_id, emitted_by, reached, version, outcomes, stamp)
        )
        self._batch_keys.add(key)
        if reached is not None:
            self._batch_states[(referral_id, emitted_by)] = (reached, version)
        self.stats.delivered += 1
        # The origin's own record that it accepted this status (the trace reads it).
        ctx.event(
            HandoverEventType.DELIVERED,
            referral_id,
            str(datum.get("case_id", "")),
            from_party=emitted_by,
            to_party=self.org_id,
            reason=status_reason(status, summary),
        )

    def _published_version(
        self,
        ctx: RecordContext,
        datum: Mapping[str, Any],
        entry: Any,
        referral_id: str,
        emitted_by: str,
    ) -> int | None:
        """The version the status names, if its origin published it; else refused, None."""
        raw_version = datum.get("referral_version")
        version = raw_version if isinstance(raw_version, int) else 1
        if entry is not None and not 1 <= version <= entry.version:
            unpublished = SecurityError(
                f"status of {emitted_by} names version {version} of referral {referral_id},"
                f" which its origin never published (latest {entry.version})"
            )
            self._refuse(ctx, DeadLetterStage.STATUS_VERIFY, unpublished, referral_id)
            return None
        return version

    def _erased_answer(
        self, ctx: RecordContext, datum: Mapping[str, Any], referral_id: str, emitted_by: str
    ) -> None:
        """A recipient erased it (verified): no life-cycle step, nothing for the status sinks
        (the origin erases their copies once every recipient answered)."""
        self._erased.append((referral_id, emitted_by))
        self.stats.delivered += 1
        ctx.event(
            HandoverEventType.DELIVERED,
            referral_id,
            str(datum.get("case_id", "")),
            from_party=emitted_by,
            to_party=self.org_id,
            reason=ERASED,
        )

    def _hand_on(self, record: Any, ctx: RecordContext, datum: Mapping[str, Any]) -> bool:
        """Hand a verified status to every status sink; False if one could not take it."""
        delivery = StatusDelivery(
            referral_id=str(datum["referral_id"]),
            status=str(datum["status"]),
            emitted_by=str(datum["emitted_by"]),
            document=jsonable(datum),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        handed = True
        for sink in self.sinks:
            try:
                sink.deliver_status(delivery)
            except DeliveryError as exc:
                handed = False
                ctx.dead_letter(DeadLetterStage.DELIVER, exc, delivery.referral_id)
        return handed

    def _state(self, referral_id: str, emitter: str, version: int) -> str | None:
        """The emitter's lifecycle state: reached earlier in this batch, else the log's."""
        pending = self._batch_states.get((referral_id, emitter))
        if pending is not None:
            state, at = pending
            if not (state == "REJECTED" and version > at):
                return state
            return None
        return self.status_log.status_state(referral_id, emitter, version)

    def _queue_reroutes(
        self, entry: OutboxEntry | None, referral_id: str, outcomes: Sequence[ItemOutcome]
    ) -> None:
        """Queue the re-referral of moved items (the publisher sends them on its next sweep)."""
        if self.network is None or entry is None:
            return
        items = {i.item_id: i for i in entry.items}
        for reroute in reroutes(
            referral_id, outcomes, items, self.network.served(), entry.countries, country_of_ip
        ):
            if self.outbox.request_reroute(reroute):
                log.info(
                    "%s: item %s of %s moved to %s: re-referral %s queued",
                    self.org_id,
                    reroute.item_id,
                    referral_id,
                    reroute.country,
                    reroute.child_referral_id,
                )
