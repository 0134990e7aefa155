"""The takedown desk: notices on a cadence, answers and re-checks, every step on the trail.

An item is *due* once it is cleared (``LEA_CLEARED`` where the cadence wants
clearance, else ``POLICE_INFORMED``). :meth:`TakedownDesk.tick` — run at least
once a minute — sends every due item's first notice, grouped per provider (one
notice for a provider's items); an unanswered item's notice is repeated at each
``repeat_every`` step after the first (+24 h, +48 h, …) and escalated instead at
step ``escalate_at_step`` (+72 h), at most one notice per item per step. Every
time comes from the injectable clock; nothing sleeps.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from broker.errors import ConfigError, DeliveryError
from broker.takedown.desk_store import DeskItem, DeskStore
from broker.takedown.notices import Answer, Notice, NoticeItem, NoticeSender, read_token
from broker.takedown.providers import ProviderDirectory
from broker.takedown.trail import OUTCOMES, TakedownStep, TrailItem, TrailWriter

__all__ = ["DAY_MS", "Cadence", "TakedownDesk"]

log = logging.getLogger(__name__)

#: One day in milliseconds.
DAY_MS = 24 * 3600 * 1000
#: How far a provider's stated time may lie ahead of our clock.
_SKEW_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class Cadence:
    """When notices go out: repeats every ``repeat_every_ms``, escalation at one step."""

    repeat_every_ms: int = DAY_MS
    escalate_at_step: int = 3
    clearance_required: bool = False


_OUTCOME = {
    Answer.REMOVED: TakedownStep.REMOVED,
    Answer.NOT_ILLEGAL: TakedownStep.NOT_ILLEGAL,
    Answer.MOVED: TakedownStep.MOVED,
}


class TakedownDesk:
    """One hotline's notices to hosting providers and the trail of each item."""

    def __init__(
        self,
        trail: TrailWriter,
        directory: ProviderDirectory,
        sender: NoticeSender,
        *,
        secret: bytes,
        sender_address: str,
        notifier: str,
        cadence: Cadence | None = None,
        store: DeskStore | None = None,
    ) -> None:
        self.trail = trail
        self.directory = directory
        self.sender = sender
        self.cadence = cadence or Cadence()
        self._secret = secret
        self.sender_address = sender_address
        self.notifier = notifier
        self.store = store
        self._items: dict[str, DeskItem] = {}
        if store is not None:
            self._items = {s.item.item_id: s for s in store.load()}

    def _save(self, states: Iterable[DeskItem]) -> None:
        if self.store is not None:
            self.store.save(states)

    def items(self) -> list[DeskItem]:
        """Every item on the desk, in the order opened."""
        return list(self._items.values())

    def _get(self, item_id: str) -> DeskItem:
        try:
            return self._items[item_id]
        except KeyError:
            raise ConfigError(f"no takedown item {item_id}") from None

    # -- the hotline's own steps ---------------------------------------------------------------
    def open(self, item: TrailItem, url: str, *, at_ms: int | None = None) -> None:
        """Start an item's trail (confirmed illegal at ``at_ms``, else now)."""
        if item.item_id in self._items:
            return
        self.directory.get(item.provider)  # ConfigError for an unknown provider
        event = self.trail.record(TakedownStep.OPENED, item, at_ms=at_ms)
        state = self._items[item.item_id] = DeskItem(item, url, opened_ms=int(event["at"]))
        self._save([state])

    def police_informed(self, item_id: str, police: str, *, at_ms: int | None = None) -> None:
        """Record that ``police`` was informed; without required clearance the item is due."""
        state = self._get(item_id)
        if state.police_ms is not None:
            return
        event = self.trail.record(
            TakedownStep.POLICE_INFORMED, state.item, to_party=police, at_ms=at_ms
        )
        state.police_ms = int(event["at"])
        if not self.cadence.clearance_required and state.due_ms is None:
            state.due_ms = state.police_ms
        self._save([state])

    def clear(self, item_id: str, police: str, *, at_ms: int | None = None) -> None:
        """Record law enforcement's clearance of the notice: the item is due."""
        state = self._get(item_id)
        if state.cleared_ms is not None:
            return
        step = TakedownStep.LEA_CLEARED
        event = self.trail.record(step, state.item, to_party=police, at_ms=at_ms)
        state.cleared_ms = int(event["at"])
        if state.due_ms is None:
            state.due_ms = state.cleared_ms
        self._save([state])

    # -- the cadence ---------------------------------------------------------------------------
    def tick(self) -> list[Notice]:
        """Send what is due now: first notices, repeats and escalations; the notices sent."""
        now = self.trail.clock()
        first: dict[str, list[DeskItem]] = defaultdict(list)
        repeats: dict[tuple[str, int], list[DeskItem]] = defaultdict(list)
        escalations: dict[str, list[DeskItem]] = defaultdict(list)
        for state in self._items.values():
            if state.answered:
                continue
            if state.first_notice_ms is None:
                if state.due_ms is not None and state.due_ms <= now:
                    first[state.item.provider].append(state)
                continue
            step = (now - state.first_notice_ms) // self.cadence.repeat_every_ms
            if step <= state.step:
                continue
            if step >= self.cadence.escalate_at_step and not state.escalated:
                escalations[state.item.provider].append(state)
            else:
                repeats[(state.item.provider, int(step))].append(state)
        sent: list[Notice] = []
        for provider, states in sorted(first.items()):
            sent += self._notify(provider, states, now, 0)
        for (provider, step), states in sorted(repeats.items()):
            sent += self._notify(provider, states, now, step)
        for provider, states in sorted(escalations.items()):
            sent += self._escalate(provider, states, now)
        return sent

    def _send(self, notice: Notice) -> bool:
        try:
            self.sender.send(notice)
        except DeliveryError as exc:
            log.warning("%s; retried at the next tick", exc)
            return False
        return True

    def _notify(
        self, provider_id: str, states: list[DeskItem], now: int, step: int
    ) -> list[Notice]:
        provider = self.directory.get(provider_id)
        notice = Notice(
            notice_id=str(uuid.uuid4()),
            provider_id=provider_id,
            to=provider.abuse_email,
            sender=self.sender_address,
            notifier=self.notifier,
            items=tuple(NoticeItem(s.item.item_id, s.url) for s in states),
            repeat=step,
        )
        if not self._send(notice):
            return []
        kind = TakedownStep.NOTICE_REPEATED if step else TakedownStep.NOTICE_SENT
        for state in states:
            if step == 0:
                state.first_notice_ms = now
            state.step, state.last_notice_ms = step, now
        self._save(states)  # at once after the send: a restart does not send it again
        for state in states:
            self.trail.record(kind, state.item, n=step, to_party=provider_id, at_ms=now)
        return [notice]

    def _escalate(self, provider_id: str, states: list[DeskItem], now: int) -> list[Notice]:
        provider = self.directory.get(provider_id)
        target = provider.escalate_to or "fallback"
        notices: list[Notice] = []
        if provider.escalate_email:
            notice = Notice(
                notice_id=str(uuid.uuid4()),
                provider_id=provider_id,
                to=provider.escalate_email,
                sender=self.sender_address,
                notifier=self.notifier,
                items=tuple(NoticeItem(s.item.item_id, s.url) for s in states),
                kind="escalation",
            )
            if not self._send(notice):
                return []
            notices.append(notice)
        for state in states:
            assert state.first_notice_ms is not None
            step = (now - state.first_notice_ms) // self.cadence.repeat_every_ms
            state.escalated, state.step, state.last_notice_ms = True, int(step), now
        self._save(states)
        for state in states:
            self.trail.record(TakedownStep.ESCALATED, state.item, to_party=target, at_ms=now)
        return notices

    # -- answers and re-checks -----------------------------------------------------------------
    def answer(self, item_id: str, answer: Answer, *, at_ms: int | None = None) -> None:
        """Record a provider's answer (received now; the outcome at the provider's ``at_ms``)."""
        state = self._get(item_id)
        now = self.trail.clock()
        if at_ms is not None and at_ms > now + _SKEW_MS:
            raise ConfigError("the provider's answer is dated in the future")
        provider = state.item.provider
        answered = TakedownStep.PROVIDER_ANSWERED
        self.trail.record(answered, state.item, n=state.answers, to_party=provider, at_ms=now)
        self.trail.record(
            _OUTCOME[answer], state.item, n=state.answers, to_party=provider, at_ms=at_ms or now
        )
        state.answers += 1
        state.answered = True
        self._save([state])

    def answer_link(self, token: str, *, at_ms: int | None = None) -> tuple[str, Answer]:
        """Record the answer of a signed one-click link; (item id, answer)."""
        item_id, answer = read_token(self._secret, token)
        self.answer(item_id, answer, at_ms=at_ms)
        return item_id, answer

    def recheck(self, item_id: str, *, online: bool) -> None:
        """Record a re-check of the item; still online: STILL_ONLINE and the cadence resumes."""
        state = self._get(item_id)
        state.rechecks += 1
        self.trail.record(TakedownStep.RECHECKED, state.item, n=state.rechecks)
        if online:
            self.trail.record(TakedownStep.STILL_ONLINE, state.item, n=state.rechecks)
            state.answered = False
        elif not state.answered:
            self.trail.record(TakedownStep.REMOVED, state.item, n=state.answers)
            state.answered = True
        self._save([state])

    def observed(self, item_id: str, step: TakedownStep, *, by: str, at_ms: int) -> None:
        """Record an outcome a recipient verified (REMOVED, STILL_ONLINE, MOVED, NOT_ILLEGAL).

        STILL_ONLINE resumes the cadence; the others end it.
        """
        if step not in OUTCOMES:
            raise ConfigError(f"{step.value} is not an item outcome")
        state = self._get(item_id)
        self.trail.record(step, state.item, n=state.answers, to_party=by, at_ms=at_ms)
        state.answers += 1
        state.answered = step is not TakedownStep.STILL_ONLINE
        self._save([state])

    def get(self, item_id: str) -> DeskItem:
        """The item's place on the desk (ConfigError if it is not on it)."""
        return self._get(item_id)

    def has(self, item_id: str) -> bool:
        """True if the item is on the desk."""
        return item_id in self._items

    def pending(self) -> int:
        """Items not yet answered."""
        return sum(1 for s in self._items.values() if not s.answered)
