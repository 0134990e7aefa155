"""A seeded takedown ledger: items with known times, their trail events, and the truth.

The truth (:class:`SeedItem`) is what the seed decided; the trail events are
written from it. Tests count figures from the truth with their own arithmetic,
never through :mod:`broker.takedown.figures`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from broker.config import Settings
from broker.kafka import clients
from broker.ledger.events import LedgerEmitter
from broker.security.keys import LiveKeys, key_dir
from broker.security.signing import ledger_signer
from broker.takedown.trail import TakedownStep, TrailItem, TrailWriter
from broker.wire.codec import Codec
from tests.support.takedown import DAY, HOUR, MINUTE, T0, synthetic_id

S = TakedownStep
COUNTRIES = ("NL", "DE", "FR", "US", "GB")
PROVIDERS = {f"host-{i:02d}": COUNTRIES[i % 5] for i in range(20)}
HOTLINES = ("hl-a", "hl-b")


@dataclass
class SeedItem:
    """One seeded item: its attributes, its true times and the steps written for it."""

    item: TrailItem
    hotline: str
    opened: int
    police: int | None
    removed: int | None
    outcome: str
    notices: int
    escalated: bool
    steps: list[tuple[TakedownStep, int, str | None, int]] = field(default_factory=list)


def _cadence(it: SeedItem, first: int, until: int, provider: str) -> None:
    """Repeats at +k days before ``until``; the third step is the escalation."""
    for k in range(1, 5):
        at = first + k * DAY
        if at >= until:
            break
        if k == 3:
            it.steps.append((S.ESCALATED, 0, "police-nl", at))
            it.escalated = True
        else:
            it.steps.append((S.NOTICE_REPEATED, k, provider, at))
            it.notices += 1


def _fate(rng: random.Random, it: SeedItem, notice: int, provider: str) -> None:
    fate = rng.random()
    if fate < 0.65:  # the provider removes it and says so (a little later)
        removed = notice + rng.randrange(10 * DAY)
        _cadence(it, notice, removed, provider)
        it.steps.append((S.PROVIDER_ANSWERED, 0, provider, removed + rng.randrange(2 * HOUR)))
        it.steps.append((S.REMOVED, 0, provider, removed))
        it.removed, it.outcome = removed, "REMOVED"
    elif fate < 0.72:  # claimed removed, found back online at the re-check
        claimed = notice + rng.randrange(2 * DAY)
        it.steps.append((S.REMOVED, 0, provider, claimed))
        it.steps.append((S.RECHECKED, 1, None, claimed + DAY))
        it.steps.append((S.STILL_ONLINE, 1, None, claimed + DAY))
        it.outcome = "STILL_ONLINE"
        if rng.random() < 0.5:
            gone = claimed + DAY + rng.randrange(HOUR, 5 * DAY)
            it.steps.append((S.RECHECKED, 2, None, gone))
            it.steps.append((S.REMOVED, 2, None, gone))
            it.removed, it.outcome = gone, "REMOVED"
    elif fate < 0.85:  # not illegal where it is hosted, or moved elsewhere
        step = S.NOT_ILLEGAL if fate < 0.80 else S.MOVED
        at = notice + rng.randrange(2 * DAY)
        _cadence(it, notice, at, provider)
        it.steps.append((step, 0, provider, at))
        it.outcome = step.value
    else:  # silent
        it.outcome = ""
        _cadence(it, notice, notice + 5 * DAY, provider)


def seed_items(count: int, seed: int = 25) -> list[SeedItem]:
    """``count`` items with known times and the trail steps written for them."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        provider = f"host-{rng.randrange(20):02d}"
        route = "fallback" if rng.random() < 0.1 else "network"
        item = TrailItem(
            synthetic_id(f"ref-{seed}-{k // 4}"),
            f"case-{k // 4}",
            synthetic_id(f"item-{seed}-{k}"),
            provider,
            PROVIDERS[provider],
            route,
        )
        hotline = HOTLINES[0] if rng.random() < 0.6 else HOTLINES[1]
        opened = T0 + rng.randrange(30 * DAY)
        police = opened + rng.randrange(5 * DAY) if rng.random() < 0.9 else None
        notice = (police or opened) + rng.randrange(MINUTE)
        it = SeedItem(item, hotline, opened, police, None, "", 1, False)
        it.steps.append((S.OPENED, 0, None, opened))
        if police is not None:
            it.steps.append((S.POLICE_INFORMED, 0, "police-nl", police))
        it.steps.append((S.NOTICE_SENT, 0, provider, notice))
        _fate(rng, it, notice, provider)
        out.append(it)
    return out


def write_trail(settings: Settings, items: list[SeedItem]) -> None:
    """Write the items' steps to the ledger topic, each hotline's signed with its keys,
    a thousand events per record."""
    codec = Codec.from_settings(settings)
    producer = clients.producer(settings, role="test")
    topic = settings.topic_names().ledger
    try:
        for hotline in HOTLINES:
            keys = LiveKeys(key_dir(settings, hotline), hotline)
            emitter = LedgerEmitter(
                producer,
                codec,
                topic,
                batch=True,
                actor=hotline,
                signer=ledger_signer(keys, hotline),
            )
            writer = TrailWriter(emitter.emit, hotline, lambda: 0)
            held = 0
            for it in items:
                if it.hotline != hotline:
                    continue
                for step, n, to_party, at in it.steps:
                    writer.record(step, it.item, n=n, to_party=to_party, at_ms=at)
                    held += 1
                if held >= 1000:
                    emitter.flush_batch()
                    held = 0
            emitter.flush_batch()
        producer.flush(60)
    finally:
        producer.close(5)
