"""The removal figures of a materialised ledger, and their verification against the signatures.

:func:`read_facts` reads the ``TAKEDOWN`` entries of a :class:`LedgerStore`
(its SQLite file, read-only and in one pass: a million events in seconds);
:func:`verify_figures` checks the store (chain and every record's signature),
recomputes every figure from the signed records alone and names each trail
event that was altered and each figure that it changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.errors import CodecError, LedgerStoreError
from broker.ledger.events import decode_events
from broker.ledger.store import LedgerStore
from broker.security.keys import TrustStore
from broker.takedown.figures import summarise
from broker.takedown.trail import REASON, STEPS, TrailFact, fact_of
from broker.wire.codec import Codec

__all__ = [
    "AlteredEvent",
    "StatsVerification",
    "flatten",
    "read_facts",
    "store_figures",
    "verify_figures",
]

_QUERY = (
    "SELECT idx, event_id, referral_id, actor, to_party, reason, at_ms, ledger_offset"
    " FROM entries WHERE event = 'TAKEDOWN' ORDER BY idx"
)


def _rows(path: Path, query: str = _QUERY) -> Iterator[tuple[Any, ...]]:
    if not Path(path).exists():
        raise LedgerStoreError(f"no ledger store at {path} (run `referral ledger sync`)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise LedgerStoreError(f"cannot open the ledger store {path}: {exc}") from None
    try:
        yield from conn.execute(query)
    except sqlite3.Error as exc:
        raise LedgerStoreError(f"cannot read the ledger store {path}: {exc}") from None
    finally:
        conn.close()


_LIGHT = (
    "SELECT referral_id, actor, to_party, reason, at_ms FROM entries WHERE event = 'TAKEDOWN'"
    " ORDER BY idx"
)


def read_facts(path: Path) -> Iterator[TrailFact]:
    """Every trail fact the store at ``path`` holds, in chain order (without event ids: the
    figures need none; :func:`verify_figures` reads those)."""
    match, steps = REASON.fullmatch, STEPS
    for referral_id, actor, to_party, reason, at_ms in _rows(path, _LIGHT):
        m = match(reason or "")
        if m is None:
            continue
        name, item_id, provider, country, route, n = m.groups()
        step = steps.get(name)
        if step is not None:
            yield TrailFact(
                "",
                referral_id,
                actor,
                step,
                item_id,
                provider,
                country,
                route,
                int(n),
                at_ms,
                to_party,
            )


def store_figures(path: Path, since_ms: int | None = None) -> dict[str, Any]:
    """The figures of the store at ``path`` (items opened at or after ``since_ms``)."""
    return summarise(read_facts(path), since_ms)


def flatten(figures: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"by_provider": {"p": {"items": 3}}}`` → ``{"by_provider.p.items": 3}``."""
    out: dict[str, Any] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class AlteredEvent:
    """A trail event of the store that its signed record does not vouch for."""

    index: int
    event_id: str
    referral_id: str
    kind: str
    detail: str = ""

    def __str__(self) -> str:
        text = (
            f"event {self.event_id} (entry {self.index}, referral {self.referral_id}): {self.kind}"
        )
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class StatsVerification:
    """What :func:`verify_figures` found."""

    entries: int
    events: int
    altered: tuple[AlteredEvent, ...] = ()
    #: (figure, what the store gives, what the signed events give)
    changed: tuple[tuple[str, Any, Any], ...] = ()
    other_breaches: int = 0
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        """True if every trail event holds and every figure is what the signed events give."""
        return not self.altered and not self.changed and not self.other_breaches

    def lines(self) -> list[str]:
        """The report, one line each: the altered events, then the figures they changed."""
        if self.intact:
            return [
                f"figures verified: {self.events} trail events of {self.entries} entries signed"
            ]
        out = [f"altered {a}" for a in self.altered]
        out += [
            f"figure {n}: the store gives {s}, the signed events {g}" for n, s, g in self.changed
        ]
        if self.other_breaches:
            out.append(
                f"{self.other_breaches} other ledger breach(es): see `referral ledger verify`"
            )
        return out


def _signed_facts(store: LedgerStore, codec: Codec, offsets: list[int]) -> Iterator[TrailFact]:
    """The trail facts of every stored record whose signature holds, as signed."""
    for offset in offsets:
        record = store.record(offset)
        if record is None:
            continue
        value = record[0]
        try:
            events = decode_events(codec, value)
        except CodecError:
            continue
        for e in events:
            if e["event"] != "TAKEDOWN":
                continue
            at = e["at"]
            at_ms = int(at.timestamp() * 1000) if hasattr(at, "timestamp") else int(at)
            fact = fact_of(
                e["event_id"], e["referral_id"], e["actor"], e.get("to_party"), e["reason"], at_ms
            )
            if fact is not None:
                yield fact


def verify_figures(
    store: LedgerStore, trust: TrustStore, *, codec: Codec, allow_plain: bool = False
) -> StatsVerification:
    """Check the store's trail events against their signed records and recompute the figures."""
    result = store.verify(trust, codec=codec, allow_plain=allow_plain)
    breaches = {b.index: b for b in result.breaches}
    rows = list(_rows(store.path))
    altered = tuple(
        AlteredEvent(idx, event_id, referral_id, breaches[idx].kind, breaches[idx].detail)
        for idx, event_id, referral_id, *_ in rows
        if idx in breaches
    )
    takedown_idx = {row[0] for row in rows}
    distrusted = {
        int(row[7])
        for row in rows
        if row[0] in breaches and breaches[row[0]].kind in ("unsigned", "forged")
    }
    stored = flatten(summarise(read_facts(store.path)))
    offsets = sorted({int(row[7]) for row in rows} - distrusted)
    signed = summarise(_signed_facts(store, codec, offsets))
    flat_signed = flatten(signed)
    changed = tuple(
        (name, stored.get(name), flat_signed.get(name))
        for name in sorted(set(stored) | set(flat_signed))
        if stored.get(name) != flat_signed.get(name)
    )
    other = sum(1 for idx in breaches if idx not in takedown_idx)
    return StatsVerification(result.entries, len(rows), altered, changed, other, signed)
