"""The drivers that feed sinks from Kafka, the same way for every kind.

:class:`SinkDriver` (the receiving side) consumes the organisation's referral
topics. A record whose ``referral.route.orgs`` header does not name the
organisation is skipped (another organisation's on a shared topic; a header
can only make it skip, and the origin's outbox republishes what is not
answered). Every other record is checked (:class:`~broker.security.rules.ReceiverSecurity`:
signature, window, the routing decision recomputed from the signed envelope —
the header is a hint, never authority —, sealing, handling), handed to every
sink that has not delivered it yet (the :class:`~connectors.inbox.Inbox`
remembers, by origin and referral id), then answered with a RECEIVED status,
signed by the organisation, to status intake and a DELIVERED handover event.
A repeat is counted and answered with DUPLICATE_SKIPPED and another RECEIVED
(the first may have been lost; the origin's outbox ignores repeats). The
inbox remembers the version each sink delivered: a newer ``envelope.version``
(an amendment, signed by the origin like every referral it sends) is
delivered again, with the version it replaces; the same or an older version is
a repeat. The RECEIVED names the version (``referral_version``). What
cannot be decoded goes to the dead-letter topic (stage ``SINK_DECODE``); what
the checks refuse goes there with the check's stage (``VERIFY``,
``SIGNATURE_WINDOW``, ``ROUTE_CHECK``, ``UNSEAL``, ``HANDLING``); what the
organisation's system cannot take goes there too (stage ``DELIVER``) and is
not recorded as delivered. A refusal for good (a permanent
:class:`~broker.errors.DeliveryError`, e.g. HTTP 4xx) is dead-lettered once,
remembered in the inbox and answered with a signed REJECTED carrying the
reason code; a repeat of that referral gets the same REJECTED again (same
emission time, so the origin sees one status), nothing else. A transient
failure (an outage) is remembered as open; the delivery that later succeeds
records a RESOLVED handover event, so the dead letter reads as stale.

Both drivers are handlers in the one consume loop (:mod:`broker.kafka.loop`):
sinks are flushed before any commit, and a record is committed only once its
receipt, its handover events or its dead letter are acknowledged. The sink
driver sends a batch's receipts (RECEIVED, REJECTED) only after its sinks are
flushed, so nothing is acknowledged before it is durable. Each driver writes its
handover events of a consumed batch as one ``HandoverBatch`` record, signed by
its organisation, after the batch's records are settled.

:class:`StatusDriver` (the origin side) consumes ``status.to.<org>`` and acts
on a status update — clears a destination in the outbox on RECEIVED, marks it
refused on REJECTED (republishing to it stops), hands the
update to the organisation's status sinks once, records its delivery in the
ledger — only after :class:`~broker.security.rules.OriginSecurity` has checked
it: signed by the organisation it names as emitter (plain only where the
network allows plain referrals), within the window, about a referral this
origin published and kept in its outbox, from an organisation the routing
decision of that referral's signed envelope sends it to. Anything else is
dead-lettered (stage ``STATUS_VERIFY``, or ``SIGNATURE_WINDOW``) and counted
(``Inbox.refused_statuses``). An update the referral's lifecycle
(:mod:`broker.lifecycle`) does not allow after the emitter's current status is
refused too (stage ``STATUS_LIFECYCLE``); a late RECEIVED is a receipt, never
a step back. Item outcomes in a verified update must name items of the
referral (else ``STATUS_VERIFY``); they are kept in the inbox (the latest per
item and emitter), summarised in the DELIVERED event's reason, and an item
moved to a host in another served jurisdiction is queued in the outbox for
re-referral (:mod:`broker.outcomes` has the rule;
:meth:`~connectors.publisher.Publisher.reroute_due` publishes it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from kafka import KafkaConsumer, KafkaProducer
from kafka.producer.future import FutureRecordMetadata
from opentelemetry.context import Context

from broker.config import Settings
from broker.errors import (
    CodecError,
    DeliveryError,
    SecurityError,
    SignatureOutOfWindow,
)
from broker.kafka import clients
from broker.kafka.deadletter import DeadLetterStage
from broker.kafka.loop import BatchContext, ConsumeLoop, LoopStats, RecordContext
from broker.ledger.events import HandoverEventType, LedgerEmitter, Signer
from broker.lifecycle import LifecycleError, advance
from broker.network import Network
from broker.outcomes import reroutes, status_reason, summarise
from broker.routing.decide import country_of_ip
from broker.security.rules import OriginSecurity, ReceiverSecurity, stage_of
from broker.shapes import check_ids
from broker.tracing import Tracing
from broker.wire.codec import Codec
from broker.wire.models import ItemOutcome, ReferralStatus, StatusUpdate, utc_now_ms
from broker.wire.registry import REFERRAL, STATUS_UPDATE
from broker.wire.topics import Headers, TopicNames
from connectors.base import Delivery, Sink, StatusDelivery, StatusSink, jsonable
from connectors.inbox import Inbox, Refusal
from connectors.outbox import Outbox, reason_code

__all__ = [
    "SinkDriver",
    "StatusDriver",
    "StatusSender",
    "header_value",
    "status_key",
]

log = logging.getLogger("referral.connectors")

ConsumerFactory = Callable[..., KafkaConsumer]

#: The kind of sink a driver feeds (referral sinks or status sinks).
SinkT = TypeVar("SinkT", Sink, StatusSink)


def header_value(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """A record header as text, or None if absent."""
    for key, value in headers or ():
        if key == name:
            return (value or b"").decode("utf-8", "replace")
    return None


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


class StatusSender:
    """Encodes status updates, signs them and publishes them to status intake.

    Records are keyed by referral id; the signature headers come from
    ``security`` (the emitting organisation's keys; without them, plain, only
    where the network allows plain referrals — else SecurityError).
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
        """Publish one (validated) status update asynchronously, in the referral's trace."""
        datum = update.to_avro()
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


def _unique_events(batch: BatchContext) -> None:
    """Drop a record's repeated handover events (two sinks failing alike say the same thing).

    An event's id is derived from what it says, so a repeat inside one signed
    HandoverBatch would be one event to the ledger store but two to the signature.
    """
    for ctx in batch.records:
        if len(ctx.events) > 1:
            seen: set[tuple[Any, ...]] = set()
            unique = []
            for event in ctx.events:
                # What the event id is derived from (not the case id, trace or time).
                said = (
                    event.kind,
                    event.referral_id,
                    event.from_party,
                    event.to_party,
                    event.topic,
                    event.partition,
                    event.offset,
                    event.reason,
                )
                if said not in seen:
                    seen.add(said)
                    unique.append(event)
            ctx.events = unique


class _Driver(Generic[SinkT]):
    """Shared plumbing: a consume loop over ``topics`` feeding sinks; stop on an Event.

    The driver owns its sinks' lifecycle: they are opened before the group is
    joined, flushed before each commit (the loop's ``before_commit``) and
    flushed and closed after leaving.
    """

    name = "driver"

    def __init__(
        self,
        settings: Settings,
        org_id: str,
        codec: Codec,
        topics: Sequence[str],
        group_id: str,
        sinks: Sequence[SinkT],
        *,
        producer: KafkaProducer | None = None,
        consumer_factory: ConsumerFactory | None = None,
        poll_timeout_ms: int = 200,
        tracing: Tracing | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing(None, org_id)
        self.org_id = org_id
        self.codec = codec
        self.names = settings.topic_names()
        self.topics = list(topics)
        self.group_id = group_id
        self.sinks: list[SinkT] = list(sinks)
        self._consumer_factory = consumer_factory or clients.consumer
        self._own_producer = producer is None
        self.producer = producer or clients.producer(settings, role=f"{self.name}-{org_id}")
        self.loop = ConsumeLoop(
            self,
            consumer=self._subscribe,
            producer=self.producer,
            deadletter_topic=self.names.deadletter,
            actor=org_id,
            group=settings.topic_prefix + group_id,
            # One HandoverBatch per consumed batch, signed once, sent after the batch's
            # records are settled (the loop commits only once it is acknowledged).
            ledger=LedgerEmitter(
                self.producer, codec, self.names.ledger, batch=True, actor=org_id, signer=signer
            ),
            tracing=self.tracing,
            poll_timeout_ms=poll_timeout_ms,
        )
        self.stats: LoopStats = self.loop.stats

    def _subscribe(self) -> KafkaConsumer:
        return self._consumer_factory(
            self.settings, *self.topics, group_id=self.group_id, role=f"{self.name}-{self.org_id}"
        )

    def open(self) -> None:
        """Open every sink, then join the consumer group."""
        for sink in self.sinks:
            sink.open()
        self.loop.open()

    def close(self) -> None:
        """Leave the group and flush what is in flight, then flush and close every sink."""
        try:
            self.loop.close()
            if self._own_producer:
                clients.close_producer(self.producer, self.name, log)
        finally:
            for sink in self.sinks:
                try:
                    sink.flush()
                finally:
                    sink.close()

    def run(self, stop: threading.Event) -> LoopStats:
        """Consume until ``stop`` is set; each batch is committed once its fate is acked."""
        if self.loop.consumer is None:
            self.open()
        try:
            return self.loop.run(stop)
        finally:
            self.close()

    def poll_once(self) -> int:
        """One poll → handle → flush → commit cycle; returns the number of records."""
        return self.loop.poll_once()

    def step(self, stop: threading.Event) -> int:
        """One cycle after the loop's current backoff (interrupted by ``stop``)."""
        return self.loop.step(stop)

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Handle one consumed record (subclasses)."""
        raise NotImplementedError

    def before_commit(self, batch: BatchContext) -> None:
        """Make every sink durable before the offsets are committed."""
        for sink in self.sinks:
            sink.flush()
        _unique_events(batch)


class SinkDriver(_Driver[Sink]):
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
        self._batch_versions.clear()
        super().before_commit(batch)
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
            if self.security is not None:
                self.security.close()

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Deliver one record addressed to this organisation (idempotently)."""
        orgs = header_value(record.headers, Headers.DESTINATION_ORGS)
        if orgs is None or self.org_id not in orgs.split(","):
            self.stats.skipped += 1
            return
        try:
            if self.security is not None:
                # Signature before decoding, then the sealed body and the handling rules.
                datum = self.security.receive(
                    self.codec, record.topic, record.value or b"", record.headers
                )
            else:
                _, datum = self.codec.decode(record.value or b"", expected=REFERRAL)
            envelope = datum["envelope"]
            check_ids(envelope, "envelope.")
            referral_id = str(envelope["referral_id"])
            case_id = str(envelope["case_id"])
            origin = str(envelope["origin_org"])
            version = int(envelope.get("version") or 1)
        except SecurityError as exc:
            ctx.dead_letter(stage_of(exc), exc)
            return
        except (CodecError, KeyError, TypeError) as exc:
            ctx.dead_letter(DeadLetterStage.SINK_DECODE, exc)
            return
        delivery = Delivery(
            referral_id=referral_id,
            case_id=case_id,
            origin_org=origin,
            value=bytes(record.value),
            document=jsonable(datum),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            route_reason=header_value(record.headers, Headers.ROUTE_REASON) or "",
            version=version,
        )
        # One look-up: what each sink delivered, the refusal and the open failures
        # (and what the sinks delivered earlier in this batch, not yet recorded).
        state = self.inbox.state(origin, referral_id)
        if self._batch_versions:
            for s in self.sinks:
                v = self._batch_versions.get((origin, referral_id, s.kind))
                if v is not None:
                    state.versions[s.kind] = max(v, state.versions.get(s.kind, 0))
                    state.failures.pop(s.kind, None)
        refused = state.refusal
        if refused is not None and refused.version >= version:
            # Refused for good before: the same answer again, nothing delivered or dead-lettered.
            self.stats.duplicates += 1
            ctx.event(
                HandoverEventType.DUPLICATE_SKIPPED,
                referral_id,
                case_id,
                from_party=origin,
                to_party=self.org_id,
                reason=f"REJECTED {refused.reason}",
            )
            self._rejection(ctx, refused)
            return
        # A version is delivered once per sink; an older or the same one again is a repeat.
        # (The signature checked above is the origin's: only it can make a newer version.)
        pending: list[tuple[Sink, int | None]] = []
        for s in self.sinks:
            before = state.versions.get(s.kind)
            if before is None or before < version:
                pending.append((s, before))
        if not pending:
            self.stats.duplicates += 1
            kind = self.sinks[0].kind if self.sinks else ""
            if (origin, referral_id, kind) in self._batch_versions:
                self._batch_repeats.append((origin, referral_id, kind))
            else:
                self.inbox.count_duplicate(origin, referral_id, kind)
            ctx.event(
                HandoverEventType.DUPLICATE_SKIPPED,
                referral_id,
                case_id,
                from_party=origin,
                to_party=self.org_id,
                reason=f"version {version}" if version > 1 else None,
            )
            self._receipt(ctx, referral_id, case_id, origin, version)
            return
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
            self._batch_versions[(origin, referral_id, sink.kind)] = version
            delivered.append(sink.kind)
            if failed_before:
                ctx.event(
                    HandoverEventType.RESOLVED,
                    referral_id,
                    case_id,
                    from_party=origin,
                    to_party=self.org_id,
                    reason=f"{DeadLetterStage.DELIVER}: delivered by {sink.kind}",
                )
        if delivered and refused is not None and self.inbox.refusal(origin, referral_id) == refused:
            self.inbox.clear_refusal(origin, referral_id)  # the amendment answered the refusal
        if delivered:
            self.stats.delivered += 1
            ctx.event(
                HandoverEventType.DELIVERED,
                referral_id,
                case_id,
                from_party=origin,
                to_party=self.org_id,
                reason=",".join(delivered) + (f" version {version}" if version > 1 else ""),
            )
            self._receipt(ctx, referral_id, case_id, origin, version)

    def _refused(
        self, ctx: RecordContext, delivery: Delivery, sink: str, exc: DeliveryError
    ) -> None:
        """The organisation's system refused a referral for good: remember it, answer REJECTED."""
        self.stats.refused += 1
        refusal = self.inbox.record_refusal(
            Refusal(
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

    def _rejection(self, ctx: RecordContext, refusal: Refusal) -> None:
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


class StatusDriver(_Driver[StatusSink]):
    """Feeds an origin's outbox and status sinks from ``status.to.<org>``, verified first."""

    name = "status"

    def __init__(
        self,
        settings: Settings,
        org_id: str,
        codec: Codec,
        sinks: Sequence[StatusSink],
        outbox: Outbox,
        inbox: Inbox,
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
        self.inbox = inbox
        #: Refused status updates of this run, by dead-letter stage (persisted in the inbox too).
        self.refused: dict[str, int] = {}

    def _refuse(
        self, ctx: RecordContext, stage: str, exc: BaseException, referral_id: str | None
    ) -> None:
        self.refused[stage] = self.refused.get(stage, 0) + 1
        record = ctx.record
        self.inbox.count_refused_status(stage, f"{record.topic}/{record.partition}/{record.offset}")
        ctx.dead_letter(stage, exc, referral_id)

    def _verified(self, record: Any, ctx: RecordContext) -> dict[str, Any] | None:
        """The status update if it may be acted on; else dead-lettered and None."""
        value = record.value or b""
        rid = header_value(record.headers, Headers.REFERRAL_ID)
        try:
            if self.security is None:
                _, datum = self.codec.decode(value, expected=STATUS_UPDATE)
                return dict(datum)
            datum, _ = self.security.receive_status(self.codec, value, record.headers)
            rid = str(datum["referral_id"])
            entry = self.outbox.get(rid)
            envelope = self.codec.decode_envelope(entry.value) if entry is not None else None
            self.security.check_status_sender(datum, envelope)
        except SignatureOutOfWindow as exc:
            self._refuse(ctx, DeadLetterStage.SIGNATURE_WINDOW, exc, rid)
            return None
        except SecurityError as exc:
            self._refuse(ctx, DeadLetterStage.STATUS_VERIFY, exc, rid)
            return None
        except (CodecError, KeyError, TypeError) as exc:
            ctx.dead_letter(DeadLetterStage.SINK_DECODE, exc)
            return None
        return datum

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Act on a verified status: clear the outbox on RECEIVED, feed the status sinks once."""
        datum = self._verified(record, ctx)
        if datum is None:
            return
        try:
            check_ids(datum)
            referral_id = str(datum["referral_id"])
            status = str(datum["status"])
            emitted_by = str(datum["emitted_by"])
        except (CodecError, KeyError, TypeError) as exc:
            ctx.dead_letter(DeadLetterStage.SINK_DECODE, exc)
            return
        self.stats.statuses += 1
        try:
            outcomes = self._outcomes(datum)
        except SecurityError as exc:
            self._refuse(ctx, DeadLetterStage.STATUS_VERIFY, exc, referral_id)
            return
        raw_version = datum.get("referral_version")
        version = raw_version if isinstance(raw_version, int) else 1
        if status == ReferralStatus.RECEIVED:
            self.outbox.mark_received(referral_id, emitted_by, version=version)
        elif status == ReferralStatus.REJECTED:
            # A verified refusal from a recipient: republishing to it stops.
            self.outbox.mark_refused(
                referral_id, emitted_by, datum.get("reason_code"), version=version
            )
        key = status_key(datum)
        if self.inbox.has_status(key) or self._superseded(referral_id, status, version):
            self.stats.duplicates += 1
            self.inbox.count_status_duplicate()
            return
        try:
            state = advance(self.inbox.status_state(referral_id, emitted_by, version), status)
        except LifecycleError as exc:
            self._refuse(ctx, DeadLetterStage.STATUS_LIFECYCLE, exc, referral_id)
            return
        delivery = StatusDelivery(
            referral_id=referral_id,
            status=status,
            emitted_by=emitted_by,
            document=jsonable(datum),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        failed = False
        for sink in self.sinks:
            try:
                sink.deliver_status(delivery)
            except DeliveryError as exc:
                failed = True
                ctx.dead_letter(DeadLetterStage.DELIVER, exc, referral_id)
        if not failed:
            summary = ""
            if outcomes:
                at = datum.get("emitted_at")
                stamp = int(at.timestamp() * 1000) if isinstance(at, datetime) else 0
                self.inbox.record_outcomes(referral_id, emitted_by, outcomes, stamp)
                summary = summarise(outcomes, self._item_count(referral_id))
                self._queue_reroutes(referral_id, outcomes)
            self.inbox.record_status(key, referral_id)
            if state is not None:
                self.inbox.set_status_state(referral_id, emitted_by, state.value, version)
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

    def _superseded(self, referral_id: str, status: str, version: int) -> bool:
        """True for a REJECTED of a version the origin has since amended (the amendment
        answers it): it changes neither the outbox nor the recipient's lifecycle."""
        if status != ReferralStatus.REJECTED:
            return False
        entry = self.outbox.get(referral_id)
        return entry is not None and version < entry.version

    def _outcomes(self, datum: Mapping[str, Any]) -> list[ItemOutcome]:
        """The update's item outcomes, each about an item of the referral (else SecurityError)."""
        raw = datum.get("item_outcomes") or []
        if not raw:
            return []
        try:
            outcomes = [ItemOutcome.model_validate(o) for o in raw]
        except ValueError as exc:
            raise SecurityError("status update with an invalid item outcome") from exc
        entry = self.outbox.get(str(datum["referral_id"]))
        if entry is None:
            return outcomes if self.security is None else []
        known = {i.item_id for i in entry.items}
        unknown = [o for o in outcomes if o.item_id not in known]
        if known and unknown:
            raise SecurityError(
                f"status update of {datum.get('emitted_by')} names {len(unknown)} item(s)"
                f" not in referral {datum['referral_id']}"
            )
        return outcomes

    def _item_count(self, referral_id: str) -> int | None:
        entry = self.outbox.get(referral_id)
        return len(entry.items) if entry is not None and entry.items else None

    def _queue_reroutes(self, referral_id: str, outcomes: Sequence[ItemOutcome]) -> None:
        """Queue the re-referral of moved items (the publisher sends them on its next sweep)."""
        entry = self.outbox.get(referral_id)
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
