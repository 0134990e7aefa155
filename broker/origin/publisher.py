"""The one publishing path every source shares (drop folder, HTTP intake, ``referral publish``).

The rules it follows: broker/origin/README.md, section `publisher`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from broker.config import Settings
from broker.contracts import jsonable
from broker.errors import (
    CodecError,
    ConfigError,
    ReferralError,
    RoutingError,
    SecurityError,
    ValidationFailed,
)
from broker.ledger.events import HandoverEventType, LedgerEmitter, handover_event
from broker.network import Network, Organisation
from broker.origin.outbox import Outbox, OutboxEntry, ReferralFacts, RepublishSchedule
from broker.origin.withdrawal import Withdrawer, dropped_recipients
from broker.outcomes import ItemRef, Reroute, child_reason, parent_reason
from broker.routing.decide import add_hosting_jurisdictions, country_of_ip, decide
from broker.security.rules import OriginSecurity
from broker.tracing import Tracing
from broker.wire.codec import Codec
from broker.wire.models import CaseBody, Referral, problems_of, utc_now_ms
from broker.wire.topics import Headers, TopicNames

__all__ = [
    "AMENDMENTS_HINT",
    "REFERRAL_ID_NAMESPACE",
    "BatchResult",
    "Prepared",
    "Published",
    "Publisher",
    "Rejected",
    "child_referral",
    "content_fingerprint",
    "referral_id_for",
]

log = logging.getLogger("referral.connectors.publisher")

#: Namespace of the referral ids derived from (origin organisation, case id).
#: ``(referral id, plain document)`` of each new referral -> what was known of its items.
KnownHook = Callable[[list[tuple[str, dict[str, Any]]]], Mapping[tuple[str, str], Any]]

REFERRAL_ID_NAMESPACE = uuid.UUID("0b9d6c84-5e4a-5c1f-9f3e-2a7d1c6e8b40")
#: Where a refused amendment points the sender.
AMENDMENTS_HINT = (
    "amendments are sent only when asked for: publish it with 'referral publish --amend'"
    " to send it as the next version (see connectors/README.md)"
)


def referral_id_for(origin_org: str, case_id: str) -> str:
    """The referral id of the origin's case when the source gives none: UUIDv5(origin, case)."""
    return str(uuid.uuid5(REFERRAL_ID_NAMESPACE, f"{origin_org}\n{case_id}"))


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


def content_fingerprint(model: Referral, *, received_at_filled: bool = False) -> str:
    """SHA-256 of what the referral says about the case (for telling repeats from amendments).

    Left out: the referral id, the origin (fixed by the source) and ``created_at``
    (when this copy was made), and ``received_at`` if the source filled it in.
    """
    datum = model.to_avro()
    envelope = datum["envelope"]
    for name in ("referral_id", "origin_org", "origin_country", "created_at", "version"):
        envelope.pop(name, None)
    if envelope.get("parent_referral_id") is None:  # as before re-referrals existed
        envelope.pop("parent_referral_id", None)
    timeline = datum["body"].get("timeline") if isinstance(datum["body"], dict) else None
    if received_at_filled and isinstance(timeline, dict):
        timeline.pop("received_at", None)
    text = json.dumps(datum, sort_keys=True, separators=(",", ":"), default=_canonical)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Prepared:
    """A validated, routable, encoded referral ready to publish."""

    referral_id: str
    case_id: str
    value: bytes
    expected: tuple[str, ...]
    #: Signature headers (``referral.sig*``) of a signed referral; empty for a plain one.
    security_headers: tuple[tuple[str, bytes], ...] = ()
    #: :func:`content_fingerprint` of the referral (tells a repeat from an amendment).
    fingerprint: str = ""
    #: What the outbox keeps beside the bytes (version, items, countries, plain document).
    facts: ReferralFacts = field(default_factory=ReferralFacts)

    @property
    def version(self) -> int:
        """The referral's version (above 1: an amendment)."""
        return self.facts.version


@dataclass(frozen=True)
class Published:
    """One referral handed to the broker (or, if ``sent`` is False, held in the outbox)."""

    label: str
    referral_id: str
    case_id: str
    expected: tuple[str, ...]
    #: True if the broker acknowledged it now; False = held in the outbox (or a repeat).
    sent: bool
    #: True if the origin had already published this referral with the same content:
    #: nothing was sent now (the outbox holds the first until every destination has it).
    repeat: bool = False
    #: The version published (above 1: an amendment).
    version: int = 1


@dataclass(frozen=True)
class Rejected:
    """One input (a row, line or list element) that was not published, and why."""

    label: str
    problems: tuple[str, ...]
    #: ``invalid`` (the input's problems), or ``amendment`` (its referral was already
    #: published with other content).
    kind: Literal["invalid", "amendment"] = "invalid"


@dataclass
class BatchResult:
    """What happened to each input of a batch, in input order."""

    published: list[Published] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: What was known before (``broker.known``): ``(referral id, item id)`` -> the earlier holder.
    known: dict[tuple[str, str], Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True if nothing was rejected."""
        return not self.rejected

    def extend(self, other: BatchResult) -> None:
        """Append another batch's results."""
        self.published.extend(other.published)
        self.rejected.extend(other.rejected)
        self.known.update(other.known)


class Publisher:
    """Publishes referrals of one origin organisation (thread-safe: the producer is)."""

    def __init__(
        self,
        settings: Settings,
        network: Network,
        org_id: str,
        codec: Codec,
        producer: KafkaProducer,
        outbox: Outbox,
        *,
        ack_timeout: float = 30.0,
        tracing: Tracing | None = None,
        security: OriginSecurity | None = None,
        known: KnownHook | None = None,
    ) -> None:
        #: Tokenises what was published onto ``match.tokens`` (``broker.known.publish``).
        self.known = known
        try:
            self.org: Organisation = network.organisation(org_id)
        except KeyError:
            raise ConfigError(f"organisation {org_id!r} is not in the network file") from None
        self.settings = settings
        self.network = network
        self.codec = codec
        self.names = settings.topic_names()
        self.producer = producer
        self.outbox = outbox
        self.ack_timeout = ack_timeout
        self.tracing = tracing or Tracing(None, org_id)
        #: Seals and signs (with the origin's keys), enforces plain-referral and handling rules.
        self._own_security = security is None
        self.security = security or OriginSecurity.load(settings, network, self.org.id)
        self.ledger = LedgerEmitter(
            producer, codec, self.names.ledger, signer=self.security.ledger_signer()
        )
        #: Tells a recipient an amendment dropped that its earlier version is withdrawn.
        self.withdrawer = Withdrawer(
            producer, codec, self.names, self.security, self.ledger, ack_timeout=ack_timeout
        )

    def close(self) -> None:
        """Release what the publisher opened itself (its handling log); idempotent."""
        if self._own_security:
            self.security.close()
            self._own_security = False

    # -- validation ----------------------------------------------------------------------------

    def _complete(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """``raw`` with what only the source knows filled in; and whether received_at was."""
        if not isinstance(raw, Mapping):
            raise ValidationFailed(
                "not a referral object", ["(record): must be a JSON object with envelope and body"]
            )
        data = dict(raw)
        received_filled = self._fill_received_at(data)
        envelope = data.get("envelope")
        if not isinstance(envelope, Mapping):
            return data, received_filled  # pydantic names the missing/invalid envelope
        env = dict(envelope)
        origin = env.get("origin_org")
        if origin is not None and origin != self.org.id:
            raise ValidationFailed(
                "origin mismatch",
                [f"envelope.origin_org: must be the publishing organisation {self.org.id}"],
            )
        env["origin_org"] = self.org.id
        env.setdefault("origin_country", self.org.country)
        if not env.get("referral_id"):
            case_id = env.get("case_id")
            env["referral_id"] = (
                referral_id_for(self.org.id, case_id)
                if isinstance(case_id, str) and case_id
                else str(uuid.uuid4())  # no case id: refused by validation anyway
            )
        if not env.get("created_at"):
            env["created_at"] = utc_now_ms()
        env.setdefault("jurisdictions", [])
        data["envelope"] = env
        return data, received_filled

    @staticmethod
    def _fill_received_at(data: dict[str, Any]) -> bool:
        """Fill in ``body.timeline.received_at`` (now) if the input left it out."""
        body = data.get("body")
        if not isinstance(body, Mapping):
            return False
        timeline = body.get("timeline")
        if not isinstance(timeline, Mapping) or timeline.get("received_at"):
            return False
        data["body"] = {**body, "timeline": {**timeline, "received_at": utc_now_ms()}}
        return True

    def prepare(self, raw: Mapping[str, Any], *, amend: bool = False) -> Prepared:
        """Validate, add hosting jurisdictions, check routing, encode; ValidationFailed if not.

        With ``amend``, a referral the outbox holds with other content becomes its
        next version (one it holds with the same content stays a repeat); one the
        origin never published is refused: there is nothing to amend.
        """
        from pydantic import ValidationError

        data, received_filled = self._complete(raw)
        try:
            model = Referral.model_validate(data)
        except ValidationError as exc:
            problems = problems_of(exc)
            raise ValidationFailed(
                f"invalid referral: {len(problems)} problem(s)", problems
            ) from None
        fingerprint = content_fingerprint(model, received_at_filled=received_filled)
        datum = model.to_avro()
        envelope = datum["envelope"]
        envelope["version"] = self._version(model, fingerprint, amend)
        envelope["jurisdictions"] = add_hosting_jurisdictions(
            envelope["jurisdictions"], datum["body"]["items"]
        )
        try:
            decision = decide(envelope, self.network, self.names)
        except RoutingError as exc:
            raise ValidationFailed(
                "not routable", [f"envelope.jurisdictions: {str(exc).splitlines()[0]}"]
            ) from None
        try:
            self.security.check_onward(envelope)
            value, signed = self.security.encode(self.codec, datum, decision.orgs)
        except SecurityError as exc:
            raise ValidationFailed(
                "refused by the security rules", [f"(record): {str(exc).splitlines()[0]}"]
            ) from None
        except CodecError as exc:
            raise ValidationFailed(
                "cannot encode", [f"(record): {str(exc).splitlines()[0]}"]
            ) from None
        return Prepared(
            referral_id=model.envelope.referral_id,
            case_id=model.envelope.case_id,
            value=value,
            expected=decision.orgs,
            security_headers=tuple(signed),
            fingerprint=fingerprint,
            facts=_facts(model, datum),
        )

    def _version(self, model: Referral, fingerprint: str, amend: bool) -> int:
        """The version to publish: the stored one (new or repeat), or the next (amendment)."""
        stored = self.outbox.stored(model.referral_id)
        if stored is None:
            if amend:
                raise ValidationFailed(
                    "nothing to amend",
                    [
                        f"envelope.referral_id: {self.org.id} has not published referral"
                        f" {model.referral_id} (case {model.envelope.case_id}); publish it"
                        " without --amend first"
                    ],
                )
            return 1  # a first publication is version 1, whatever the input says
        if amend and stored.content_sha256 not in (None, fingerprint):
            return stored.version + 1
        return stored.version

    # -- publishing ----------------------------------------------------------------------------

    def headers(self, referral_id: str, case_id: str) -> list[tuple[str, bytes]]:
        """The headers every published referral carries."""
        return [
            (Headers.REFERRAL_ID, referral_id.encode()),
            (Headers.CASE_ID, case_id.encode()),
            (Headers.ORIGIN, self.org.id.encode()),
        ]

    def publish(
        self,
        rows: Iterable[tuple[str, Mapping[str, Any] | ValidationFailed]],
        *,
        amend: bool = False,
    ) -> BatchResult:
        """Validate and publish ``(label, referral dict)`` rows; a row may be a parse error.

        Every valid new row is stored in the outbox, then sent; the call returns once
        the broker acknowledged (or failed) every send. Invalid rows and (unless
        ``amend``) amendments are reported, never sent; repeats are reported as
        repeats, not sent again. With ``amend`` a changed referral is sent as its
        next version.
        """
        rejected: list[Rejected] = []
        ready: list[tuple[str, Prepared]] = []
        for label, row in rows:
            if isinstance(row, ValidationFailed):
                rejected.append(Rejected(label, tuple(row.problems or [str(row)])))
                continue
            try:
                ready.append((label, self.prepare(row, amend=amend)))
            except ValidationFailed as exc:
                rejected.append(Rejected(label, tuple(exc.problems or [str(exc)])))
        result = self.publish_prepared(ready)
        result.rejected[:0] = rejected
        return result

    def conflicts(self, ready: Sequence[tuple[str, Prepared]]) -> list[Rejected]:
        """The amendments among ``ready``: ids already published (or earlier in ``ready``)
        with other content. Lets a source refuse a batch as a whole before anything is sent.
        """
        first: dict[str, str] = {}
        out = []
        for label, prepared in ready:
            known = first.setdefault(prepared.referral_id, prepared.fingerprint)
            stored = self.outbox.stored(prepared.referral_id)
            if stored is not None and prepared.version > stored.version:
                continue  # asked for: the next version
            if stored is not None and stored.content_sha256 is not None:
                known = stored.content_sha256
            if known != prepared.fingerprint:
                out.append(self._amendment(label, prepared))
        return out

    @staticmethod
    def _amendment(label: str, prepared: Prepared) -> Rejected:
        return Rejected(
            label,
            (
                f"(record): referral {prepared.referral_id} (case {prepared.case_id}) was "
                f"already published with other content; not published: {AMENDMENTS_HINT}",
            ),
            kind="amendment",
        )

    def publish_prepared(self, ready: Iterable[tuple[str, Prepared]]) -> BatchResult:
        """Store and send referrals already prepared by :meth:`prepare`.

        A referral the origin already published is not sent again: a repeat if its
        content is the same, a refused amendment (in ``rejected``) if not.
        """
        result = BatchResult()
        ready = list(ready)
        sends: list[tuple[Published, FutureRecordMetadata | None]] = []
        sent_at_ms: list[int] = []  # PUBLISHED is when each went out, not when the batch was acked
        for label, prepared in ready:
            at_ms = int(time.time() * 1000)
            outcome = self._store_and_send(label, prepared)
            if isinstance(outcome, Rejected):
                result.rejected.append(outcome)
            else:
                sends.append(outcome)
                sent_at_ms.append(at_ms)
        self._await(sends, result, sent_at_ms)
        if self.known is not None:
            self._tell_known(ready, result)
        return result

    def _tell_known(self, ready: Sequence[tuple[str, Prepared]], result: BatchResult) -> None:
        """Hand the new referrals' documents to the known-content hook; its failure is logged."""
        sent = {p.referral_id for p in result.published if p.sent and not p.repeat}
        docs = [
            (p.referral_id, p.facts.document)
            for _, p in ready
            if p.referral_id in sent and p.facts.document is not None
        ]
        if not docs or self.known is None:
            return
        try:
            result.known.update(self.known(docs))
        except (ReferralError, KafkaError) as exc:
            what = type(exc).__name__
            log.warning("known content: %d referrals not tokenised: %s", len(docs), what)

    def _known(self, label: str, prepared: Prepared) -> Published | Rejected | None:
        """A repeat or an amendment if the outbox holds the referral id; None if it is new."""
        stored = self.outbox.stored(prepared.referral_id)
        if stored is None or prepared.version > stored.version:
            return None  # new, or the next version (an amendment asked for)
        if stored.content_sha256 not in (None, prepared.fingerprint):
            return self._amendment(label, prepared)
        return Published(
            label,
            prepared.referral_id,
            prepared.case_id,
            prepared.expected,
            False,
            True,
            stored.version,
        )

    def _store_and_send(
        self, label: str, prepared: Prepared
    ) -> tuple[Published, FutureRecordMetadata | None] | Rejected:
        known = self._known(label, prepared)
        if isinstance(known, Rejected):
            return known
        if known is not None:
            return known, None
        headers = [
            *self.headers(prepared.referral_id, prepared.case_id),
            *prepared.security_headers,
        ]
        # The root span of the referral's trace (the PRODUCER span of its first send);
        # its context is stored with the outbox entry, so a republish continues the trace.
        future: FutureRecordMetadata | None = None
        previous = self.outbox.get(prepared.referral_id) if prepared.version > 1 else None
        with self.tracing.send(
            self.names.intake,
            headers,
            attributes={
                "referral.id": prepared.referral_id,
                "referral.case_id": prepared.case_id,
                "referral.origin": self.org.id,
            },
        ):
            if prepared.version > 1:
                added = self.outbox.amend(
                    prepared.referral_id,
                    prepared.value,
                    headers,
                    prepared.expected,
                    prepared.fingerprint or None,
                    prepared.facts,
                )
            else:
                added = self.outbox.add(
                    prepared.referral_id,
                    prepared.case_id,
                    self.names.intake,
                    prepared.value,
                    headers,
                    prepared.expected,
                    content_sha256=prepared.fingerprint or None,
                    about=prepared.facts,
                )
            if added:
                future = self._send(prepared.referral_id, prepared.value, headers)
        dropped = dropped_recipients(
            previous, self.codec, self.network, self.names, prepared.expected
        )
        if added and previous is not None and dropped:
            self.withdrawer.withdraw(previous, dropped)
        if not added:  # another process stored it meanwhile
            known = self._known(label, prepared)
            if isinstance(known, Rejected):
                return known
            return (
                known
                or Published(
                    label, prepared.referral_id, prepared.case_id, prepared.expected, False, True
                )
            ), None
        pub = Published(
            label,
            prepared.referral_id,
            prepared.case_id,
            prepared.expected,
            False,
            version=prepared.version,
        )
        return pub, future

    def _send(
        self, referral_id: str, value: bytes, headers: list[tuple[str, bytes]]
    ) -> FutureRecordMetadata | None:
        try:
            return self.producer.send(
                self.names.intake, key=referral_id.encode(), value=value, headers=headers
            )
        except KafkaError as exc:
            log.warning(
                "send of %s failed, the outbox will retry: %s", referral_id, type(exc).__name__
            )
            return None

    def _await(
        self,
        sends: list[tuple[Published, FutureRecordMetadata | None]],
        result: BatchResult,
        sent_at_ms: Sequence[int],
    ) -> None:
        if not any(future is not None for _, future in sends):  # nothing sent (repeats)
            result.published.extend(pub for pub, _ in sends)
            return
        try:
            self.producer.flush(self.ack_timeout)
        except KafkaError as exc:
            log.warning("flush failed, the outbox will retry: %s", type(exc).__name__)
        for (pub, future), at_ms in zip(sends, sent_at_ms, strict=True):
            meta = None
            if future is not None and future.is_done and future.succeeded():
                meta = future.value
            sent = meta is not None
            result.published.append(
                Published(
                    pub.label,
                    pub.referral_id,
                    pub.case_id,
                    pub.expected,
                    sent,
                    pub.repeat,
                    pub.version,
                )
            )
            if meta is not None:
                amended = pub.version > 1
                self._emit(
                    HandoverEventType.AMENDED if amended else HandoverEventType.PUBLISHED,
                    pub.referral_id,
                    pub.case_id,
                    meta.partition,
                    meta.offset,
                    ",".join(pub.expected),
                    reason=f"version {pub.version}" if amended else None,
                    at_ms=at_ms,
                )
        try:
            self.producer.flush(self.ack_timeout)
        except KafkaError as exc:
            log.warning("ledger flush failed: %s", type(exc).__name__)

    def _emit(
        self,
        event: HandoverEventType,
        referral_id: str,
        case_id: str,
        partition: int | None,
        offset: int | None,
        to: str,
        *,
        reason: str | None = None,
        at_ms: int | None = None,
    ) -> None:
        try:
            self.ledger.emit(
                handover_event(
                    event,
                    referral_id=referral_id,
                    case_id=case_id,
                    actor=self.org.id,
                    from_party=self.org.id,
                    to_party=to or None,
                    topic=self.names.intake,
                    partition=partition,
                    offset=offset,
                    reason=reason,
                    at_ms=at_ms,
                )
            )
        except (KafkaError, CodecError) as exc:
            log.warning("ledger event for %s not sent: %s", referral_id, type(exc).__name__)

    # -- the outbox's retries --------------------------------------------------------------------

    def republish_due(self, schedule: RepublishSchedule | float) -> list[str]:
        """Send again the outbox entries due under ``schedule``; the ids the broker acknowledged.

        A bare number is ``republish_after`` (see :meth:`Outbox.due`). Only an
        acknowledged send counts as one; the others are tried at the next sweep.
        """
        due = self.outbox.due(schedule)
        if not due:
            return []
        sent_at_ms = int(time.time() * 1000)
        futures: list[tuple[OutboxEntry, FutureRecordMetadata | None]] = [
            (entry, self._send(entry.referral_id, entry.value, entry.headers)) for entry in due
        ]
        try:
            self.producer.flush(self.ack_timeout)
        except KafkaError as exc:
            log.warning("republish flush failed: %s", type(exc).__name__)
        done = []
        now = time.time()
        for entry, future in futures:
            if future is not None and future.is_done and future.succeeded():
                meta = future.value
                self.outbox.mark_sent(entry.referral_id, now)
                self._emit(
                    HandoverEventType.REPUBLISHED,
                    entry.referral_id,
                    entry.case_id,
                    meta.partition,
                    meta.offset,
                    "",
                    at_ms=sent_at_ms,
                )
                done.append(entry.referral_id)
        return done

    # -- re-referrals of moved items -------------------------------------------------------------

    def reroute_due(self) -> list[str]:
        """Publish the queued re-referrals of moved items; the child ids published now.

        Each child is built from the parent as the outbox keeps it (see
        :func:`child_referral`), prepared and published like any referral (signed by
        this origin, routed by its new hosting country) and recorded as REROUTED on
        the parent and on the child. One that cannot be built or is refused is
        given up with a one-line problem (``Outbox.children`` shows it).
        """
        done = []
        for reroute in self.outbox.reroutes_due():
            parent = self.outbox.get(reroute.parent_referral_id)
            try:
                if parent is None or parent.document is None:
                    raise ValidationFailed(
                        "parent not kept",
                        ["(record): the parent referral's plain content is not in the outbox"],
                    )
                child = child_referral(parent.document, reroute, self.network, self.names)
                prepared = self.prepare(child)
            except ValidationFailed as exc:
                problem = (exc.problems or [str(exc)])[0]
                log.warning(
                    "re-referral %s of %s given up: %s",
                    reroute.child_referral_id,
                    reroute.parent_referral_id,
                    problem.split(":")[0],
                )
                self.outbox.finish_reroute(reroute.child_referral_id, problem)
                continue
            result = self.publish_prepared([(f"reroute {reroute.item_id}", prepared)])
            if result.rejected or not any(p.sent or p.repeat for p in result.published):
                continue  # held in the outbox; the REROUTED events follow on the next sweep
            to = ",".join(prepared.expected)
            self._emit(
                HandoverEventType.REROUTED,
                reroute.parent_referral_id,
                prepared.case_id,
                None,
                None,
                to,
                reason=parent_reason(reroute),
            )
            self._emit(
                HandoverEventType.REROUTED,
                reroute.child_referral_id,
                prepared.case_id,
                None,
                None,
                to,
                reason=child_reason(reroute),
            )
            try:
                self.producer.flush(self.ack_timeout)
            except KafkaError as exc:
                log.warning("ledger flush failed: %s", type(exc).__name__)
            self.outbox.finish_reroute(reroute.child_referral_id)
            done.append(reroute.child_referral_id)
        return done


def _facts(model: Referral, datum: Mapping[str, Any]) -> ReferralFacts:
    """What the outbox keeps of a prepared referral (its datum as encoded) beside its bytes."""
    envelope = datum["envelope"]
    items: tuple[ItemRef, ...] = ()
    document = None
    if isinstance(model.body, CaseBody):
        refs = []
        for item in model.body.items:
            hosting = item.hosting
            country = hosting.country if hosting is not None else None
            if country is None and hosting is not None and hosting.ip:
                country = country_of_ip(hosting.ip)
            refs.append(ItemRef(str(item.item_id), country))
        items = tuple(refs)
        document = jsonable(datum)
    countries = tuple(dict.fromkeys(str(j["country"]) for j in envelope["jurisdictions"]))
    return ReferralFacts(
        version=int(envelope.get("version") or 1),
        parent_referral_id=model.envelope.parent_referral_id,
        items=items,
        countries=countries,
        document=document,
    )


def child_referral(
    parent: Mapping[str, Any], reroute: Reroute, network: Network, names: TopicNames
) -> dict[str, Any]:
    """The re-referral of one moved item of ``parent`` (the plain referral as JSON).

    One item (same ``item_id``, hosted where the outcome says, with the
    classification that applied to it), the parent's case id, priority,
    urgency, handling, external references, timeline, prior actions and summary;
    ``parent_referral_id`` set, the new hosting country as its one jurisdiction.
    A TLP RED parent's child names the organisations the new country routes to.
    """
    env, body = parent["envelope"], parent["body"]
    item = next((i for i in body["items"] if i.get("item_id") == reroute.item_id), None)
    if item is None:
        raise ValidationFailed(
            "item not in parent", [f"body.items: no item {reroute.item_id} in the parent"]
        )
    hosting = {"ip": reroute.ip, "asn": None, "provider": None, "country": reroute.country}
    handling = dict(env["handling"])
    envelope: dict[str, Any] = {
        "referral_id": reroute.child_referral_id,
        "case_id": env["case_id"],
        "jurisdictions": [{"country": reroute.country, "basis": "HOSTING", "derived": False}],
        "priority": env["priority"],
        "urgency_reason": env.get("urgency_reason"),
        "handling": handling,
        "external_refs": env.get("external_refs") or [],
        "parent_referral_id": reroute.parent_referral_id,
    }
    if handling.get("tlp") == "RED":
        probe = {
            **envelope,
            "origin_org": env["origin_org"],
            "handling": {**handling, "tlp": "AMBER"},
        }
        try:
            handling["recipients"] = list(decide(probe, network, names).orgs)
        except RoutingError:
            handling["recipients"] = []
    return {
        "envelope": envelope,
        "body": {
            "items": [
                {
                    **item,
                    "hosting": hosting,
                    "classification": item.get("classification") or body["classification"],
                }
            ],
            "classification": body["classification"],
            "timeline": body["timeline"],
            "prior_actions": body["prior_actions"],
            "duplicate_of": None,
            "summary": body.get("summary"),
        },
    }
