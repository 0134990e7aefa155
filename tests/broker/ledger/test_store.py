"""The materialised, hash-chained ledger: sync from the real broker, verify, tamper."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.kafka import clients
from broker.ledger.events import LedgerEmitter, handover_event
from broker.ledger.store import GENESIS, LedgerStore, entry_hash
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from tests.support.kafka import publish

ORIGIN = "hl-nl"


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(EmbeddedRegistry())


def hop(referral_id: str, event: str, n: int, **kw: Any) -> dict[str, Any]:
    """A handover event datum at a fixed, increasing time."""
    return handover_event(
        event,
        referral_id=referral_id,
        case_id="case-1",
        actor=kw.pop("actor", ORIGIN),
        from_party=ORIGIN,
        offset=n,
        partition=0,
        at_ms=1_700_000_000_000 + n * 1000,
        **kw,
    )


def emit(settings: Settings, codec: Codec, single: list[dict[str, Any]], batch: list[Any]) -> None:
    producer = clients.producer(settings, role="test-ledger")
    try:
        ledger = settings.topic_names().ledger
        one = LedgerEmitter(producer, codec, ledger)
        futures = [one.emit(e) for e in single]
        if batch:
            many = LedgerEmitter(producer, codec, ledger, batch=True, actor="router")
            for e in batch:
                many.emit(e)
            futures.append(many.flush_batch())
        producer.flush()
        for f in futures:
            assert f is not None
            f.get(timeout=10)
    finally:
        producer.close()


def filled_store(path: Path, n: int = 6) -> LedgerStore:
    """A store with ``n`` chained entries, filled without a broker."""
    store = LedgerStore(path)
    rid = str(uuid.uuid4())
    for i in range(n):
        store.append([hop(rid, "ROUTED", i, topic="referrals.to.DE")], ledger_offset=i)
    return store


def test_sync_is_idempotent_skips_repeats_and_resumes(
    provisioned: Settings, codec: Codec, tmp_path: Path
) -> None:
    rid_a, rid_b = str(uuid.uuid4()), str(uuid.uuid4())
    published = hop(rid_a, "PUBLISHED", 0, topic="referrals.intake")
    routed = [
        hop(rid_a, "ROUTED", 1, actor="router", topic="referrals.to.DE", reason="DE:HOSTING"),
        hop(rid_b, "ROUTED", 2, actor="router", topic="referrals.unassigned", reason="US:HOSTING"),
    ]
    # The same PUBLISHED twice (a redelivered hop repeats its event id), then a batch.
    emit(provisioned, codec, [published, published], routed)
    # An undecodable record on the ledger is counted, never fatal.
    publish(provisioned, provisioned.topic_names().ledger, [(b"x", b"not avro")])

    store = LedgerStore.for_settings(provisioned)
    first = store.sync(provisioned, codec, timeout=20)
    assert (first.records, first.added, first.repeated, first.undecodable) == (4, 3, 1, 1)
    assert first.next_offset == 4
    assert [e.record.event for e in store.entries()] == ["PUBLISHED", "ROUTED", "ROUTED"]
    assert [e.index for e in store.entries()] == [0, 1, 2]
    assert [e.ledger_offset for e in store.entries()] == [0, 2, 2]
    assert store.entries()[0].prev_hash == GENESIS
    assert str(store.verify()) == "ledger intact: 3 entries"

    again = store.sync(provisioned, codec, timeout=20)
    assert (again.records, again.added) == (0, 0)
    assert len(store) == 3

    # A repeat of an event already stored, plus one new event: only the new one is chained.
    emit(provisioned, codec, [routed[0], hop(rid_a, "DELIVERED", 3, actor="police-de")], [])
    third = store.sync(provisioned, codec, timeout=20)
    assert (third.records, third.added, third.repeated, third.next_offset) == (2, 1, 1, 6)
    assert [r.event for r in store.records(rid_a)] == ["PUBLISHED", "ROUTED", "DELIVERED"]
    assert store.verify().intact
    store.close()

    # The store survives a reopen, and the chain is exactly what entry_hash says.
    reopened = LedgerStore(tmp_path / "state" / "ledger.sqlite3")
    entries = reopened.entries()
    assert len(entries) == 4
    assert entries[1].prev_hash == entries[0].entry_hash
    assert reopened.sync(provisioned, codec, timeout=20).added == 0
    assert str(reopened.verify()) == "ledger intact: 4 entries"
    reopened.close()


def test_tampering_after_sync_is_named_by_index(provisioned: Settings, codec: Codec) -> None:
    rid = str(uuid.uuid4())
    emit(provisioned, codec, [hop(rid, "PUBLISHED", i, topic="t") for i in range(5)], [])
    store = LedgerStore.for_settings(provisioned)
    assert store.sync(provisioned, codec, timeout=20).added == 5
    db = sqlite3.connect(store.path)
    db.execute("UPDATE entries SET to_party = 'police-fr' WHERE idx = 3")
    db.commit()
    db.close()
    result = store.verify()
    assert not result.intact
    assert str(result) == "ledger broken at entry 3: altered"
    store.close()


def _swap(db: sqlite3.Connection, i: int, j: int) -> None:
    cols = [r[1] for r in db.execute("PRAGMA table_info(entries)") if r[1] != "idx"]
    quoted = ", ".join(f'"{c}"' for c in cols)
    a = db.execute(f"SELECT {quoted} FROM entries WHERE idx = ?", (i,)).fetchone()
    b = db.execute(f"SELECT {quoted} FROM entries WHERE idx = ?", (j,)).fetchone()
    db.execute("DELETE FROM entries WHERE idx IN (?, ?)", (i, j))
    marks = ", ".join("?" * (len(cols) + 1))
    db.execute(f"INSERT INTO entries (idx, {quoted}) VALUES ({marks})", (i, *b))
    db.execute(f"INSERT INTO entries (idx, {quoted}) VALUES ({marks})", (j, *a))


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("UPDATE entries SET reason = 'edited' WHERE idx = 2", "ledger broken at entry 2: altered"),
        ("UPDATE entries SET at_ms = at_ms + 1 WHERE idx = 0", "ledger broken at entry 0: altered"),
        (
            "UPDATE entries SET entry_hash = prev_hash WHERE idx = 4",
            "ledger broken at entry 4: altered",
        ),
        ("DELETE FROM entries WHERE idx = 3", "ledger broken at entry 3: missing"),
        ("DELETE FROM entries WHERE idx = 5", "ledger broken at entry 5: missing"),
        # Removed and renumbered to hide the gap: the link to a vanished hash gives it away.
        (
            "DELETE FROM entries WHERE idx = 1; UPDATE entries SET idx = idx - 1 WHERE idx > 1",
            "ledger broken at entry 1: missing",
        ),
        # Every breach is named: both displaced entries.
        (
            "swap 1 4",
            "ledger broken at entry 1: reordered\nledger broken at entry 4: reordered",
        ),
        ("swap 2 3", "ledger broken at entry 2: reordered"),
    ],
)
def test_verify_names_the_first_tampered_entry(tmp_path: Path, tamper: str, expected: str) -> None:
    store = filled_store(tmp_path / "ledger.sqlite3")
    assert str(store.verify()) == "ledger intact: 6 entries"
    db = sqlite3.connect(store.path)
    if tamper.startswith("swap"):
        _, i, j = tamper.split()
        _swap(db, int(i), int(j))
    else:
        db.executescript(tamper)
    db.commit()
    db.close()
    assert str(store.verify()) == expected
    store.close()


def test_entry_hash_is_over_previous_hash_and_canonical_fields() -> None:
    fields = {"b": 2, "a": "x", "n": None}
    same_in_other_order = {"n": None, "a": "x", "b": 2}
    assert entry_hash(GENESIS, fields) == entry_hash(GENESIS, same_in_other_order)
    assert entry_hash(GENESIS, fields) != entry_hash("1" * 64, fields)
    assert entry_hash(GENESIS, fields) != entry_hash(GENESIS, {**fields, "b": 3})
