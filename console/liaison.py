"""The liaison's desk: one organisation's inbox, referrals, reveals and status updates."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from broker.config import Settings
from broker.errors import ConfigError, KafkaBrokerError, ValidationFailed
from broker.ids import resolve_id
from broker.kafka import clients
from broker.kafka.reader import TopicReader
from broker.ledger.events import HandoverEventType
from broker.ledger.views import HandoverRecord
from broker.lifecycle import LifecycleError, allowed_next
from broker.network import Network
from broker.operator.access import AccessRecorder
from broker.operator.consultation import CONSOLE_PAGE, CONSOLE_REVEAL, consultation_reason
from broker.operator.tail import RESTRICTED_TLP
from broker.origin.outbox import Outbox, PendingReferral
from broker.origin.sent_view import SentItems, item_report
from broker.origin.status_log import StatusLog
from broker.outcomes import parse_item_specs, parse_reroute
from broker.receiver.inbox import Inbox, InboxRecord
from broker.receiver.inbox_view import InboxEntry, entries, select
from broker.receiver.statuses import current_status, new_status_update, send_status_update
from broker.security.keys import LiveKeys, LiveTrust, key_dir
from broker.security.rules import ReceiverSecurity
from broker.security.signing import ledger_signer
from broker.security.window import SignatureWindow
from broker.wire.codec import Codec
from broker.wire.models import (
    ItemOutcome,
    ItemOutcomeKind,
    ReferralStatus,
    StatusUpdate,
    utc_now_ms,
)
from connectors.versions import KeptVersion, kept_versions
from console import ledger

__all__ = [
    "ITEM_OUTCOMES",
    "RESTRICTED_TLP",
    "Child",
    "ItemView",
    "LiaisonDesk",
    "Linked",
    "ReferralView",
    "items_reportable",
    "status_for_items",
]

#: Outcomes that end an item's story at this organisation.
_SETTLED = frozenset(
    {ItemOutcomeKind.REMOVED, ItemOutcomeKind.NOT_FOUND, ItemOutcomeKind.NOT_ILLEGAL}
)
#: The item outcomes a liaison may report.
ITEM_OUTCOMES = tuple(ItemOutcomeKind)


def status_for_items(
    current: ReferralStatus | None, outcomes: Mapping[str, ItemOutcomeKind], items: Sequence[str]
) -> ReferralStatus:
    """The referral-level status of an update reporting item outcomes.

    Every item settled (removed, not found, not illegal) → ``REMOVED``; otherwise
    ``STILL_ONLINE`` (something is still to be taken down). Either must be an allowed
    next step after ``current`` (item outcomes follow a takedown notice: NTD_SENT,
    STILL_ONLINE, or REFERRED_TO_LE once all are settled); else LifecycleError.
    """
    settled = bool(items) and all(outcomes.get(i) in _SETTLED for i in items)
    wanted = ReferralStatus.REMOVED if settled else ReferralStatus.STILL_ONLINE
    if wanted not in allowed_next(current):
        raise LifecycleError(current, wanted)
    return wanted


def items_reportable(current: ReferralStatus | None) -> bool:
    """True once item outcomes may be reported (after a takedown notice or a referral to LE)."""
    nxt = allowed_next(current)
    return ReferralStatus.STILL_ONLINE in nxt or ReferralStatus.REMOVED in nxt


@dataclass(frozen=True)
class ItemView:
    """One reported item as the liaison sees it before a reveal: identity and classification."""

    item_id: str
    media_type: str
    legal_status: str
    incident_type: str
    victim_age_group: str
    annotations: tuple[str, ...]
    hosting_country: str
    outcome: str | None
    #: Where a STILL_ONLINE item moved (country code or IP), as reported.
    moved_to: str | None = None
    #: Filled only by a reveal.
    url: str | None = None
    hashes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Linked:
    """Another referral named on a referral page; ``here`` if this organisation received it."""

    referral_id: str
    here: bool
    #: Whose referral it is (the same origin as the page's).
    origin_org: str = ""


@dataclass(frozen=True)
class Child(Linked):
    """A child referral of a moved item (from the parent's REROUTED event)."""

    item_id: str = ""
    country: str = ""


@dataclass(frozen=True)
class ReferralView:
    """A referral in the liaison's inbox: envelope, items, where it stands, what may follow."""

    record: InboxRecord
    envelope: dict[str, Any]
    items: tuple[ItemView, ...]
    current: ReferralStatus | None
    allowed: tuple[ReferralStatus, ...]
    items_reportable: bool
    history: tuple[HandoverRecord, ...]
    restricted: bool
    summary: str | None = None
    revealed: bool = False
    problems: tuple[str, ...] = field(default_factory=tuple)
    #: The current version (above 1: amended by its origin).
    version: int = 1
    #: The earlier versions the organisation's sinks keep (metadata only).
    earlier: tuple[KeptVersion, ...] = ()
    #: The referral this one re-refers a moved item of (``parent_referral_id``), if any.
    parent: Linked | None = None
    #: The child referrals the origin re-referred moved items of this one in (REROUTED).
    children: tuple[Child, ...] = ()

    @property
    def tlp(self) -> str:
        """The referral's TLP label."""
        return str((self.envelope.get("handling") or {}).get("tlp") or "")


def _enum(value: Any) -> str:
    return "" if value is None else str(value)


def _classification(item: Mapping[str, Any], default: Mapping[str, Any]) -> Mapping[str, Any]:
    return item.get("classification") or default or {}


class LiaisonDesk:
    """Everything the console's organisation pages do, for one organisation."""

    def __init__(
        self,
        settings: Settings,
        network: Network,
        org: str,
        codec: Codec,
        kafka: clients.Clients | None = None,
    ) -> None:
        network.organisation(org)  # ConfigError for an unknown organisation
        self.settings = settings
        self.kafka = kafka or clients.Clients(settings, f"console-{org}")
        self.network = network
        self.org = org
        self.codec = codec
        self.names = settings.topic_names()
        self._lock = threading.Lock()
        self._producer: Any = None

    # -- reading ---------------------------------------------------------------------------------

    def _inbox(self) -> Inbox:
        return Inbox.for_org(self.settings, self.org)

    def inbox(
        self,
        *,
        search: str | None = None,
        since: datetime | None = None,
        unacknowledged: bool = False,
        overdue: bool = False,
    ) -> list[InboxEntry]:
        """The inbox view of ``referral inbox``: urgent first, then overdue, then newest."""
        path = self.settings.org_dir(self.org) / "inbox.sqlite3"
        if not path.exists():
            return []
        inbox = Inbox(path)
        try:
            received = inbox.received()
        finally:
            inbox.close()
        now = datetime.now(UTC)
        return select(
            entries(received, self.network.deadlines, now),
            since=since,
            search=search or None,
            unacknowledged=unacknowledged,
            overdue=overdue,
        )

    def sent(self) -> list[tuple[PendingReferral, SentItems]]:
        """The referrals this organisation sent (newest first), each with what its recipients
        reported of its items (verified, from the status log) and its re-referrals."""
        if not (self.settings.org_dir(self.org) / "outbox.sqlite3").exists():
            return []
        box = Outbox.for_org(self.settings, self.org)
        status_log = StatusLog.for_org(self.settings, self.org)
        try:
            listed = sorted(box.all(), key=lambda p: p.published_at, reverse=True)
            return [(p, item_report(box, status_log, p.referral_id)) for p in listed]
        finally:
            box.close()
            status_log.close()

    def origins(self, given: str) -> tuple[str, list[str]]:
        """The referral id ``given`` names (id or prefix) and the origins it came from here
        (oldest first; several when another member published under the same id)."""
        inbox = self._inbox()
        try:
            rid = resolve_id(given, inbox.referral_ids())
            return rid, inbox.origins_of(rid)
        finally:
            inbox.close()

    def _lookup(
        self, given: str, origin: str | None = None
    ) -> tuple[InboxRecord, ReferralStatus | None]:
        """The delivery of ``origin``'s referral ``given``: a referral is (origin, id), and
        without ``origin`` an id several origins used is refused (ConfigError naming them)."""
        if origin is not None:
            self.network.organisation(origin)  # UnknownName for an organisation not in it
        inbox = self._inbox()
        try:
            rid = resolve_id(given, inbox.referral_ids())
            origins = inbox.origins_of(rid)
            if origin is None and len(origins) > 1:
                raise ConfigError(
                    f"referral id {rid} came from {len(origins)} origins "
                    f"({', '.join(origins)}); open it from the inbox"
                )
            record = inbox.lookup(rid, origin)
            if record is None:
                came = f" from {origin}" if origin is not None else ""
                raise ConfigError(f"{self.org} has not received referral {rid}{came}")
            return record, current_status(inbox, record.origin_org, record.referral_id)
        finally:
            inbox.close()

    def _fetch(self, record: InboxRecord) -> Any:
        """The Kafka record the sink delivered (at its topic, partition and offset)."""
        consumer = self.kafka.reader()
        try:
            rec = TopicReader(consumer, record.topic, timeout=10).fetch(
                record.topic, record.partition, record.offset
            )
            if rec is None:
                raise KafkaBrokerError(
                    f"referral {record.referral_id} is no longer on {record.topic} (retention?)"
                )
            return rec
        finally:
            consumer.close()

    def _open(self, rec: Any) -> dict[str, Any]:
        """The referral datum with its body opened with this organisation's keys.

        The sink checked the signature's freshness when it delivered; a later read
        checks signature, route and seal again but not the window.
        """
        security = ReceiverSecurity(
            self.network,
            self.org,
            self.names,
            LiveKeys(key_dir(self.settings, self.org), self.org),
            LiveTrust(self.network, self.settings.network_file),
        )
        security.window = SignatureWindow(max_age_days=36500, skew_seconds=86400)
        return security.receive(self.codec, rec.topic, rec.value or b"", rec.headers)

    def _reported(self, record: InboxRecord) -> dict[str, tuple[ItemOutcomeKind, str | None]]:
        """Item id → (the outcome this organisation reported last, where it moved)."""
        inbox = self._inbox()
        try:
            sent = inbox.sent_outcomes(record.origin_org, record.referral_id)
        finally:
            inbox.close()
        return {
            item_id: (o.outcome, (o.hosting.country or o.hosting.ip) if o.hosting else None)
            for item_id, o in sent.items()
        }

    def history(self, referral_id: str, origin: str) -> list[HandoverRecord]:
        """The ledger's handover events of ``origin``'s referral this organisation took part in."""
        return self._history(ledger.records(self.settings, self.codec, referral_id), origin)

    def _history(self, records: Sequence[HandoverRecord], origin: str) -> list[HandoverRecord]:
        # Only the hops this organisation took part in (and the origin's publication to it),
        # of this origin's referral: another member's events under the same id are not its.
        return [
            r
            for r in records
            if (self.org in (r.actor, r.from_party) or self.org in r.to_orgs)
            and (origin in (r.actor, r.from_party) or origin in r.to_orgs)
        ]

    def _received(self) -> set[tuple[str, str]]:
        inbox = self._inbox()
        try:
            return {(e.origin_org, e.referral_id) for e in inbox.received()}
        finally:
            inbox.close()

    def _family(
        self, record: InboxRecord, envelope: Mapping[str, Any], records: Sequence[HandoverRecord]
    ) -> tuple[Linked | None, tuple[Child, ...]]:
        """The parent (``parent_referral_id``) and the children (the ledger's REROUTED)."""
        here = self._received()
        origin = record.origin_org
        parent_id = envelope.get("parent_referral_id")
        parent = (
            Linked(str(parent_id), (origin, str(parent_id)) in here, origin) if parent_id else None
        )
        children: dict[str, Child] = {}
        for r in records:
            if r.event != HandoverEventType.REROUTED or r.referral_id != record.referral_id:
                continue
            if r.actor != origin:  # only the origin re-refers its referral's items
                continue
            moved = parse_reroute(r.referral_id, r.reason)
            if moved is not None and moved.parent_referral_id == record.referral_id:
                cid = moved.child_referral_id
                here_too = (origin, cid) in here
                children[cid] = Child(cid, here_too, origin, moved.item_id, moved.country)
        return parent, tuple(children.values())

    def _earlier(self, record: InboxRecord, version: int) -> tuple[KeptVersion, ...]:
        kept = kept_versions(
            self.settings,
            self.network.organisation(self.org),
            record.origin_org,
            record.referral_id,
        )
        return tuple(v for v in kept if v.version < version)

    def referral(
        self,
        given: str,
        *,
        origin: str | None = None,
        path: str = CONSOLE_PAGE,
        why: str = "referral page",
    ) -> ReferralView:
        """``origin``'s referral ``given`` names (id or prefix), without its content.

        The body is opened, so the opening goes on the consultation log as ``path`` for
        ``why``. Without ``origin``, an id several origins used is refused (ConfigError).
        """
        record, current = self._lookup(given, origin)
        datum = self._opened(record)
        self._consulted(record, path, why)
        return self._view(record, current, datum, reveal=False)

    def _opened(self, record: InboxRecord) -> dict[str, Any]:
        """The delivered record of ``record`` with its body opened (the origin checked)."""
        datum = self._open(self._fetch(record))
        if datum["envelope"].get("origin_org") != record.origin_org:
            raise ConfigError(
                f"the record of referral {record.referral_id} is not {record.origin_org}'s"
            )
        return datum

    def _view(
        self,
        record: InboxRecord,
        current: ReferralStatus | None,
        datum: dict[str, Any],
        *,
        reveal: bool,
    ) -> ReferralView:
        """The page of an opened referral; its content only with ``reveal``."""
        envelope = datum["envelope"]
        body = datum["body"]
        reported = self._reported(record)
        default = body.get("classification") or {}
        items = []
        for item in body.get("items") or ():
            c = _classification(item, default)
            hosting = item.get("hosting") or {}
            items.append(
                ItemView(
                    item_id=str(item.get("item_id")),
                    media_type=_enum(item.get("media_type")),
                    legal_status=_enum(c.get("legal_status")),
                    incident_type=_enum(c.get("incident_type")),
                    victim_age_group=_enum(c.get("victim_age_group")),
                    annotations=tuple(str(a) for a in c.get("annotations") or ()),
                    hosting_country=_enum(hosting.get("country")),
                    outcome=reported[str(item.get("item_id"))][0].value
                    if str(item.get("item_id")) in reported
                    else None,
                    moved_to=reported[str(item.get("item_id"))][1]
                    if str(item.get("item_id")) in reported
                    else None,
                    url=str(item.get("url")) if reveal else None,
                    hashes=tuple(
                        f"{h.get('algorithm')}:{h.get('value')}" for h in item.get("hashes") or ()
                    )
                    if reveal
                    else (),
                )
            )
        tlp = str((envelope.get("handling") or {}).get("tlp") or "")
        records = ledger.records(self.settings, self.codec, record.referral_id)
        version = int(envelope.get("version") or record.version or 1)
        parent, children = self._family(record, envelope, records)
        return ReferralView(
            record=record,
            envelope=envelope,
            items=tuple(items),
            current=current,
            allowed=tuple(s for s in allowed_next(current) if s is not ReferralStatus.RECEIVED),
            items_reportable=items_reportable(current),
            history=tuple(self._history(records, record.origin_org)),
            restricted=tlp in RESTRICTED_TLP,
            summary=str(body.get("summary") or "") if reveal else None,
            revealed=reveal,
            version=version,
            earlier=self._earlier(record, version),
            parent=parent,
            children=children,
        )

    def reveal(self, given: str, reason: str, *, origin: str | None = None) -> ReferralView:
        """``origin``'s referral with its content; a restricted one needs ``reason`` (recorded)."""
        reason = " ".join(reason.split())
        record, current = self._lookup(given, origin)
        datum = self._opened(record)
        tlp = str((datum["envelope"].get("handling") or {}).get("tlp") or "")
        if tlp in RESTRICTED_TLP and not reason:
            raise ValidationFailed(
                "a reason is required to show TLP RED / AMBER+STRICT content",
                ["reason: required (it is recorded in the ledger)"],
            )
        self._consulted(record, CONSOLE_REVEAL, reason or "reveal")
        return self._view(record, current, datum, reveal=True)

    # -- writing ---------------------------------------------------------------------------------

    def _ledger_producer(self) -> Any:
        with self._lock:
            if self._producer is None:
                self._producer = self.kafka.producer()
            return self._producer

    def _consulted(self, record: InboxRecord, path: str, why: str) -> None:
        """Record one opening of ``record``'s body (acknowledged before it is shown)."""
        keys = LiveKeys(key_dir(self.settings, self.org), self.org)
        recorder = AccessRecorder(
            self.codec,
            self.names.ledger,
            self.org,
            self._ledger_producer,
            signer=lambda: ledger_signer(keys, self.org),
        )
        recorder.accessed(
            referral_id=record.referral_id,
            case_id=record.case_id,
            at=(record.topic, record.partition, record.offset),
            reason=consultation_reason(path, why),
            wait=True,
        )

    def send_status(
        self,
        given: str,
        status: ReferralStatus | None,
        *,
        note: str | None = None,
        reason_code: str | None = None,
        destination: str | None = None,
        item_id: str | None = None,
        outcome: ItemOutcomeKind | None = None,
        moved_to: str | None = None,
        origin: str | None = None,
    ) -> StatusUpdate:
        """Send a signed status update to ``origin``, as ``referral status`` does; with
        ``item_id`` and ``outcome``, one item's outcome (the referral-level status then
        follows the items).

        ``moved_to`` (STILL_ONLINE only): where the item is hosted now, a country code or an IP.
        """
        record, current = self._lookup(given, origin)
        inbox = self._inbox()
        try:
            outcomes: list[ItemOutcome] = []
            if item_id is not None:
                if outcome is None:
                    raise ValidationFailed("an item needs an outcome", ["outcome: required"])
                ids = inbox.item_ids(record.origin_org, record.referral_id)
                if item_id not in ids:
                    raise ConfigError(f"referral {record.referral_id} has no item {item_id}")
                country, ip = _moved_to(moved_to) if moved_to else (None, None)
                # The shape of ``referral status --item ID=KIND --new-country CC``.
                outcomes = parse_item_specs(
                    [f"{item_id}={outcome.value}"],
                    ids,
                    utc_now_ms(),
                    new_ip=ip,
                    new_country=country,
                    assessed_under=self.network.organisation(self.org).country
                    if outcome is ItemOutcomeKind.NOT_ILLEGAL
                    else None,
                )
                sent = inbox.sent_outcomes(record.origin_org, record.referral_id)
                after = {**{k: o.outcome for k, o in sent.items()}, item_id: outcome}
                status = status_for_items(current, after, ids)
            if status is None:
                raise ValidationFailed("a status is required", ["status: required"])
            update = new_status_update(
                inbox,
                self.org,
                record,
                status,
                outcomes,
                note=note,
                reason_code=reason_code,
                destination=destination,
            )
        finally:
            inbox.close()
        send_status_update(self.settings, self.network, self.codec, self._ledger_producer(), update)
        return update

    def close(self) -> None:
        """Close the producer."""
        with self._lock:
            if self._producer is not None:
                self._producer.close(10)
                self._producer = None


def _moved_to(text: str) -> tuple[str | None, str | None]:
    """(country, ip) of a moved item's new host: a two-letter country code, else an IP.

    ValidationFailed for text that is neither (it would not be an ``--item`` value).
    """
    text = text.strip()
    if len(text) == 2 and text.isalpha():
        return text.upper(), None
    try:
        return None, str(ipaddress.ip_address(text))
    except ValueError:
        raise ValidationFailed(
            "moved to: a two-letter country code or an IP address, e.g. FR or 203.0.113.7",
            ["moved_to: a two-letter country code or an IP address, e.g. FR or 203.0.113.7"],
        ) from None
