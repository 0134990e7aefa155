"""Real referrals onto the takedown desk: a status sink of the origin's status feed.

The hotline refers an item hosted at home to its national police, then (after
their clearance) notifies the hosting provider. So, for each verified status of
one of the hotline's own referrals (:class:`~broker.origin.status_feed.StatusFeed`
hands it on after its checks):

* from a **police** recipient: ``RECEIVED``, ``ACCEPTED`` or ``REFERRED_TO_LE`` —
  police informed; ``ACCEPTED`` or ``REFERRED_TO_LE`` — law enforcement's clearance
  (the item is due then with ``Cadence(clearance_required=True)``);
* from any other recipient: ``REFERRED_TO_LE`` — police informed (by it);
* every verified item outcome becomes a trail step at its ``observed_at``:
  ``REMOVED`` and ``NOT_FOUND`` → REMOVED, ``STILL_ONLINE`` → STILL_ONLINE (the cadence
  resumes) or MOVED (with new hosting), ``NOT_ILLEGAL`` → NOT_ILLEGAL.

An item enters the desk with the first such status: its URL and hosting provider
come from the referral the outbox kept (``hosting.provider`` matched to an id or a
name in the provider directory, its country from the hosting evidence, else the
provider's); an item whose provider is not in the directory is counted, not opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.contracts import StatusDelivery, StatusSink
from broker.errors import ConfigError
from broker.origin.outbox import OutboxEntry
from broker.takedown.desk import TakedownDesk
from broker.takedown.providers import ProviderDirectory
from broker.takedown.trail import TakedownStep, TrailItem

__all__ = ["IntakeCounts", "TakedownIntake", "hosting_provider"]

log = logging.getLogger("referral.takedown.intake")

_INFORMED = {"RECEIVED", "ACCEPTED", "REFERRED_TO_LE"}
_CLEARED = {"ACCEPTED", "REFERRED_TO_LE"}


def hosting_provider(directory: ProviderDirectory, hosting: Mapping[str, Any] | None) -> str | None:
    """The directory id of an item's hosting provider (by id, else by name; None: unknown)."""
    name = (hosting or {}).get("provider")
    if not isinstance(name, str) or not name.strip():
        return None
    wanted = name.strip().lower()
    for provider in directory.all():
        if wanted in (provider.id, provider.name.lower()):
            return provider.id
    return None


def _ms(value: Any) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    return None


@dataclass
class IntakeCounts:
    """What the intake did in this run (ids never kept)."""

    opened: int = 0
    unknown_provider: int = 0
    without_document: int = 0
    outcomes: int = 0


class TakedownIntake(StatusSink):
    """Opens the items of cleared referrals on the desk and records their verified outcomes."""

    def __init__(
        self,
        desk: TakedownDesk,
        lookup: Callable[[str], OutboxEntry | None],
        role_of: Callable[[str], str | None],
        *,
        fallback: str | None = None,
    ) -> None:
        self.desk = desk
        self._lookup = lookup
        self._role_of = role_of
        self.fallback = fallback
        self.counts = IntakeCounts()

    def deliver_status(self, status: StatusDelivery) -> None:
        """Act on one verified status of the hotline's own referral."""
        doc = status.document
        at = _ms(doc.get("emitted_at")) or self.desk.trail.clock()
        police = self._role_of(status.emitted_by) == "police"
        informed = status.status in _INFORMED if police else status.status == "REFERRED_TO_LE"
        outcomes = [o for o in doc.get("item_outcomes") or [] if isinstance(o, Mapping)]
        if not informed and not outcomes:
            return
        if informed:
            self._open(status, at)
        for item_id in self._item_ids(status.referral_id):
            if not self.desk.has(item_id):
                continue
            if informed:
                self.desk.police_informed(item_id, status.emitted_by, at_ms=at)
            if police and status.status in _CLEARED:
                self.desk.clear(item_id, status.emitted_by, at_ms=at)
        for outcome in outcomes:
            self._outcome(outcome, status.emitted_by, at)

    def _item_ids(self, referral_id: str) -> list[str]:
        entry = self._lookup(referral_id)
        return [i.item_id for i in entry.items] if entry is not None else []

    def _open(self, status: StatusDelivery, at: int) -> None:
        entry = self._lookup(status.referral_id)
        if entry is None or entry.document is None:
            self.counts.without_document += 1
            return
        body = entry.document.get("body") or {}
        timeline = body.get("timeline") or {}
        opened = _ms(timeline.get("assessed_at")) or int(entry.published_at * 1000)
        route = "fallback" if status.emitted_by == self.fallback else "network"
        for raw in body.get("items") or []:
            item_id = raw.get("item_id")
            if not isinstance(item_id, str) or self.desk.has(item_id):
                continue
            hosting = raw.get("hosting") or {}
            provider_id = hosting_provider(self.desk.directory, hosting)
            if provider_id is None:
                self.counts.unknown_provider += 1
                continue
            country = hosting.get("country") or self.desk.directory.get(provider_id).country
            try:
                item = TrailItem(
                    status.referral_id, entry.case_id, item_id, provider_id, country, route
                )
            except ConfigError as exc:
                log.warning("an item of referral %s not opened: %s", status.referral_id, exc)
                continue
            self.desk.open(item, str(raw["url"]), at_ms=min(opened, at))
            self.counts.opened += 1

    def _outcome(self, outcome: Mapping[str, Any], by: str, at: int) -> None:
        item_id = outcome.get("item_id")
        if not isinstance(item_id, str) or not self.desk.has(item_id):
            return
        kind = outcome.get("outcome")
        if kind in ("REMOVED", "NOT_FOUND"):
            step = TakedownStep.REMOVED
        elif kind == "STILL_ONLINE":
            step = TakedownStep.MOVED if outcome.get("hosting") else TakedownStep.STILL_ONLINE
        elif kind == "NOT_ILLEGAL":
            step = TakedownStep.NOT_ILLEGAL
        else:
            return
        when = _ms(outcome.get("observed_at")) or at
        self.desk.observed(item_id, step, by=by, at_ms=when)
        self.counts.outcomes += 1
