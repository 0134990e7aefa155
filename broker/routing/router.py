"""The router service: intake → jurisdiction topics, status intake → origin status topics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from broker.config import Settings
from broker.errors import CodecError, ReferralError, RoutingError, SignatureInvalid
from broker.kafka.deadletter import DeadLetterStage
from broker.kafka.loop import LoopStats, RecordContext
from broker.kafka.partitioning import key_hash as murmur2_key_hash
from broker.kafka.service import Durable, LoopService
from broker.ledger.checkpoint import Checkpoint, Checkpointer
from broker.ledger.events import HandoverEventType
from broker.metrics import Metrics
from broker.network import Network
from broker.origin.erase_request import ERASE_KIND, erase_reason, is_erase_request
from broker.origin.withdrawal import WITHDRAWAL_KIND, is_withdrawal, withdrawal_reason
from broker.routing.decide import DecisionCache, Destination, status_destination
from broker.routing.fallback import committed_offsets, fallback_group, seed_offsets
from broker.routing.members import RouterAssignor
from broker.security.keys import ROUTER, LiveKeys, LiveTrust, key_dir
from broker.security.signing import has_signature, ledger_signer
from broker.tracing import Tracing
from broker.wire.codec import Codec
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers

__all__ = ["STATUS_UPDATE", "Router"]

log = logging.getLogger("referral.router")

ACTOR = ROUTER
_ROUTE_HEADERS = frozenset({Headers.ROUTE_REASON, Headers.DESTINATION_ORGS, Headers.RECORD_KIND})
_TRACE_HEADERS = frozenset({Headers.TRACEPARENT, Headers.TRACESTATE})
_WITHDRAWAL = (Headers.RECORD_KIND, WITHDRAWAL_KIND)
_ERASE = (Headers.RECORD_KIND, ERASE_KIND)


def _kept_headers(headers: Sequence[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in headers or () if k not in _ROUTE_HEADERS]


class Router(LoopService[Durable]):
    """A member of the router consumer group (run several for scale-out)."""

    name = ACTOR

    def __init__(
        self,
        settings: Settings,
        network: Network,
        codec: Codec,
        *,
        group_id: str = "router",
        consumer_factory: Callable[..., KafkaConsumer] | None = None,
        producer: KafkaProducer | None = None,
        poll_timeout_ms: int = 200,
        max_records: int = 2000,
        emit_ledger: bool = True,
        tracing: Tracing | None = None,
        metrics: Metrics | None = None,
        keys: LiveKeys | None = None,
        checkpoint_every: float | None = None,
    ) -> None:
        self.network = network
        self._max_records = max_records
        self._partitions: dict[str, int] = {}
        self._headers: dict[int, tuple[Destination, str, tuple[tuple[str, bytes], ...]]] = {}
        names = settings.topic_names()
        self._decisions = DecisionCache(network, names)
        #: The router's own signing key (ledger batches, checkpoints); re-read on rotation.
        self.keys = keys or LiveKeys(key_dir(settings, ACTOR), ACTOR)
        #: Partitions only for members a router's key vouches for (:mod:`.members`).
        self.assignor = RouterAssignor(
            settings.topic_prefix + group_id,
            self.keys,
            LiveTrust(network, settings.network_file).current,
            on_stranger=_stranger_counter(metrics),
        )
        self.assignor.on_unvouched = self._led_by_stranger
        #: Set while this router leaves a group a stranger leads: the group's offsets then.
        self._moving: dict[Any, int] | None = None
        #: Fallback groups this router moved to (:mod:`.fallback`).
        self.fallbacks = 0
        tracing = tracing or Tracing(None, ACTOR)
        super().__init__(
            settings,
            ACTOR,
            codec,
            [names.intake, names.status_intake],
            group_id,
            [],
            producer=producer,
            consumer_factory=consumer_factory,
            poll_timeout_ms=poll_timeout_ms,
            tracing=tracing,
            signer=ledger_signer(self.keys, ACTOR),
            emit_ledger=emit_ledger,
            # Disabled tracing forwards the trace headers untouched: no middleware at all.
            trace_records=tracing.enabled,
            metrics=metrics,
        )
        self.checkpointer = Checkpointer(
            settings, codec, self.keys, self.producer, interval=checkpoint_every or 30.0
        )
        self._checkpoint_every = checkpoint_every

    # -- lifecycle -------------------------------------------------------------------
    @property
    def role(self) -> str:
        """The client role: ``router``."""
        return ACTOR

    def _led_by_stranger(self) -> None:
        """A stranger leads the group: note where it stands and leave (at the next idle poll)."""
        if self._moving is not None:
            return
        group = self.settings.topic_prefix + self.group_id
        self._moving = committed_offsets(self.settings, group, self.topics)
        if self.loop.consumer is not None:
            self.loop.consumer.starved = True  # the loop closes it and subscribes anew

    def _move(self, offsets: dict[Any, int]) -> None:
        """Join the fallback group, seeded with the offsets the stranger's group had."""
        current = self.keys.current()
        if current is None:
            return
        old = self.settings.topic_prefix + self.group_id
        self.group_id = fallback_group(self.group_id, current.signing)
        new = self.settings.topic_prefix + self.group_id
        self.assignor.group = new
        seeded = seed_offsets(self.settings, new, offsets)
        self.fallbacks += 1
        log.warning(
            "router group %s is led by a stranger: this router moves to group %s (%s)",
            old,
            new,
            f"from the {len(offsets)} offsets committed when noticed" if seeded else "as it stands",
        )

    def _subscribe(self) -> KafkaConsumer:
        moving, self._moving = self._moving, None
        if moving is not None:
            self._move(moving)
        consumer = self._consumer_factory(
            self.settings,
            group_id=self.group_id,
            role=self.role,
            max_poll_records=self._max_records,
            partition_assignment_strategy=[self.assignor],
        )
        self.assignor.member_id = _member_id_of(consumer)
        consumer.subscribe(self.topics, listener=_AssignmentLog())
        return consumer

    def run(self, stop: threading.Event, *, idle_exit_s: float | None = None) -> LoopStats:
        """Route until ``stop`` is set (or, with ``idle_exit_s``, after that long idle).

        With ``checkpoint_every``, signed checkpoints are published meanwhile, and once
        more on the way out.
        """
        if self._checkpoint_every:
            self.checkpointer.start()
        try:
            return self.loop.run(stop, idle_exit_s=idle_exit_s)
        finally:
            self.checkpointer.stop(final=True)
            self.close()

    def checkpoint(self) -> Checkpoint | None:
        """Publish a signed checkpoint of the ledger now (None without the router's key)."""
        return self.checkpointer.publish_now(force=True)

    # -- the handler -----------------------------------------------------------------
    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Route one intake referral or status update (none under a stranger's lead: the
        fallback group reads them again)."""
        if self._moving is not None:
            return
        if record.topic == self.names.intake:
            self._route_referral(record, ctx)
        elif record.topic == self.names.status_intake:
            self._route_status(record, ctx)

    def _partition(self, topic: str, key_hash: int) -> int | None:
        """The default partitioner's choice for a key hash, without hashing again."""
        count = self._partitions.get(topic)
        if count is None:
            parts = self.producer.partitions_for(topic)
            if not parts:
                return None
            count = self._partitions[topic] = len(parts)
        return key_hash % count

    def _send(
        self,
        ctx: RecordContext,
        topic: str,
        key: bytes,
        headers: list[tuple[str, bytes]],
        partition: int | None,
        attrs: Callable[[], dict[str, Any]],
    ) -> None:
        """Forward the record's value; with tracing on, under a ``send <topic>`` span.

        ``attrs`` makes the span's attributes (only called when tracing is on).
        """
        value = ctx.record.value
        if ctx.trace is None:
            ctx.send(topic, key=key, value=value, headers=headers, partition=partition)
            return
        headers = [(k, v) for k, v in headers if k not in _TRACE_HEADERS]
        with self.tracing.send(topic, headers, parent=ctx.trace, attributes=attrs()):
            ctx.send(topic, key=key, value=value, headers=headers, partition=partition)

    def _route_referral(self, record: Any, ctx: RecordContext) -> None:
        self.stats.referrals += 1
        try:
            envelope = self.codec.decode_routing(record.value or b"")
        except CodecError as exc:
            # Verified by no one yet: junk gets no ledger event of its own (a summary counts it).
            ctx.dead_letter(DeadLetterStage.ROUTE_DECODE, exc, recorded=False)
            return
        referral_id = str(envelope.get("referral_id", ""))
        try:
            decision = self._decisions.decide(envelope)
        except ReferralError as exc:
            ctx.dead_letter(DeadLetterStage.ROUTE_DECIDE, exc, referral_id)
            return
        key = referral_id.encode()
        # Hash the key once for every destination (same choice as the default partitioner).
        key_hash = murmur2_key_hash(key)
        base = _kept_headers(record.headers)
        origin = str(envelope.get("origin_org", ""))
        case_id = str(envelope.get("case_id", ""))
        for dest in decision.destinations:
            orgs, route = self._route_headers(dest)

            def attrs(dest: Destination = dest, orgs: str = orgs) -> dict[str, Any]:
                return {
                    "referral.id": referral_id,
                    "referral.origin": origin,
                    "referral.route.reason": dest.basis,
                    "referral.route.orgs": orgs,
                }

            self._send(
                ctx, dest.topic, key, [*base, *route], self._partition(dest.topic, key_hash), attrs
            )
            self.stats.published += 1
            ctx.event(
                HandoverEventType.ROUTED,
                referral_id,
                case_id,
                from_party=origin,
                to_party=orgs,
                topic=dest.topic,
                reason=dest.basis,
            )

    def _route_headers(self, dest: Destination) -> tuple[str, tuple[tuple[str, bytes], ...]]:
        """A destination's organisations and its two route headers (made once per destination).

        Keyed by identity: the decision cache hands out the same destination for the
        same envelope shape, and the entry keeps it alive so the id is not reused.
        """
        found = self._headers.get(id(dest))
        if found is None or found[0] is not dest:
            orgs = ",".join(dest.orgs)
            reason = (Headers.ROUTE_REASON, dest.basis.encode())
            found = (dest, orgs, (reason, (Headers.DESTINATION_ORGS, orgs.encode())))
            if len(self._headers) >= 4096:
                self._headers.clear()
            self._headers[id(dest)] = found
        return found[1], found[2]

    def _route_status(self, record: Any, ctx: RecordContext) -> None:
        """Forward a status update to its origin's status topic (STATUS_ROUTED); a
        withdrawal by the origin to the dropped recipient's referral topic instead.

        Undecodable, unaddressable, or unsigned where the network requires
        signatures: dead-lettered (``STATUS_ROUTE``), counted in the batch's
        summary event, none of its own (the router verifies no signature, so it
        can hold no one to it).
        """
        self.stats.statuses += 1
        try:
            _, status = self.codec.decode(record.value or b"", expected=STATUS_UPDATE)
            if not self.network.network.allow_plain and not has_signature(record.headers):
                raise SignatureInvalid("unsigned status update on a network that requires them")
            erase = is_erase_request(status)
            withdrawal = is_withdrawal(status)
            if withdrawal or erase:
                topic, to_party = self._withdrawal_topic(status), str(status["destination_org"])
            else:
                topic = status_destination(status, self.network, self.names)
                to_party = str(status.get("origin_org", ""))
        except ReferralError as exc:
            ctx.dead_letter(DeadLetterStage.STATUS_ROUTE, exc, recorded=False)
            return
        referral_id = str(status.get("referral_id", ""))
        headers = _kept_headers(record.headers)
        reason = str(status.get("status", ""))
        if withdrawal:
            # A withdrawal, on the dropped recipient's referral topic, for it alone.
            headers += [(Headers.DESTINATION_ORGS, to_party.encode()), _WITHDRAWAL]
            reason = withdrawal_reason(int(status.get("referral_version") or 1))
        elif erase:
            # An erase request, on the recipient's referral topic, for it alone.
            headers += [(Headers.DESTINATION_ORGS, to_party.encode()), _ERASE]
            reason = erase_reason(str(status.get("note") or ""))
        self._send(
            ctx,
            topic,
            referral_id.encode(),
            headers,
            None,
            lambda: {
                "referral.id": referral_id,
                "referral.status": str(status.get("status", "")),
            },
        )
        self.stats.published += 1
        ctx.event(
            HandoverEventType.STATUS_ROUTED,
            referral_id,
            str(status.get("case_id", "")),
            from_party=str(status.get("emitted_by", "")),
            to_party=to_party,
            topic=topic,
            reason=reason,
        )

    def _withdrawal_topic(self, status: Mapping[str, Any]) -> str:
        """The referral topic of a withdrawal's recipient (its first jurisdiction's lane)."""
        org = str(status["destination_org"])
        topics = (
            self.network.subscriptions(org, self.names)
            if self.network.has_organisation(org)
            else []
        )
        if not topics:
            raise RoutingError("withdrawal for an organisation that receives no referrals")
        return topics[0]


def _member_id_of(consumer: Any) -> Callable[[], str]:
    """This consumer's member id in its group, as kafka-python's coordinator holds it."""
    coordinator = getattr(consumer, "_coordinator", None)

    def member_id() -> str:
        generation = getattr(coordinator, "_generation", None)
        return str(getattr(generation, "member_id", "") or "")

    return member_id


def _stranger_counter(metrics: Metrics | None) -> Callable[[int], None] | None:
    """Counts the members refused partitions on ``referral.router.strangers`` (metrics on)."""
    meter = metrics.meter(ACTOR) if metrics is not None else None
    if meter is None:
        return None
    counter = meter.create_counter(
        "referral.router.strangers", "{member}", "Group members refused partitions (no router key)."
    )
    return lambda n: counter.add(n)


class _AssignmentLog(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs each (re)assignment: which partitions this router owns now."""

    def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("router partitions revoked: %d", len(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        parts = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        log.info("router partitions assigned: %d %s", len(parts), " ".join(parts))
