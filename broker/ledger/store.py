"""The materialised ledger: the ledger topic in a local, hash-chained SQLite store.

Every handover event read from the ledger topic (one partition, so the order
is total) becomes one entry; each entry carries the hash of the one before it::

    entry_hash = SHA-256(prev_hash || canonical JSON of the entry's fields)

where the fields are the event's own (ids, parties, topic, position, reason,
time) plus the ledger offset it was read from, and ``index`` is the entry's
position in the chain. The store's head (entry count and last hash) is kept
beside the entries, so removing the last entry shows too. :meth:`LedgerStore.verify`
recomputes the chain and names the first entry that was altered, removed or
reordered — the record of who saw and passed on what, when, that
law-enforcement data protection (EU Directive 2016/680, Art. 25) asks for.

Events are deterministic (a redelivered hop repeats its event id), so an event
id already in the store is skipped. :meth:`LedgerStore.sync` resumes from the
last ledger offset stored and is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.config import Settings
from broker.errors import BrokerError, CodecError, ConfigError, LedgerStoreError
from broker.kafka import clients
from broker.ledger.events import decode_events
from broker.ledger.views import HandoverRecord
from broker.sqlite import Database
from broker.wire.codec import Codec

__all__ = [
    "DEFAULT_FILE",
    "GENESIS",
    "Breach",
    "LedgerEntry",
    "LedgerStore",
    "LedgerStoreError",
    "SyncReport",
    "Verification",
    "entry_hash",
]

#: The store's file name under the state directory.
DEFAULT_FILE = "ledger.sqlite3"
#: The "previous hash" of the first entry.
GENESIS = "0" * 64

#: The event fields hashed into each entry, in this order (plus ``ledger_offset``).
_FIELDS = (
    "event_id",
    "referral_id",
    "case_id",
    "event",
    "actor",
    "from_party",
    "to_party",
    "topic",
    "partition",
    "offset",
    "reason",
    "trace_id",
    "span_id",
    "at_ms",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    referral_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    from_party TEXT,
    to_party TEXT,
    topic TEXT,
    partition INTEGER,
    "offset" INTEGER,
    reason TEXT,
    trace_id TEXT,
    span_id TEXT,
    at_ms INTEGER NOT NULL,
    ledger_offset INTEGER NOT NULL,
    prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_referral ON entries (referral_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = ", ".join(f'"{c}"' for c in (*_FIELDS, "ledger_offset", "prev_hash", "entry_hash"))


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical encoding of ``fields`` (hex)."""
    return hashlib.sha256(prev_hash.encode("ascii") + _canonical(fields)).hexdigest()


def _at_ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def _fields_of(event: dict[str, Any], ledger_offset: int) -> dict[str, Any]:
    out: dict[str, Any] = {name: event.get(name) for name in _FIELDS if name != "at_ms"}
    out["at_ms"] = _at_ms(event["at"])
    out["ledger_offset"] = ledger_offset
    return out


@dataclass(frozen=True)
class LedgerEntry:
    """One entry of the chain: the handover record and where it was read from."""

    index: int
    ledger_offset: int
    record: HandoverRecord
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class Breach:
    """The first place the chain does not hold."""

    index: int
    kind: Literal["altered", "missing", "reordered"]

    def __str__(self) -> str:
        return f"ledger broken at entry {self.index}: {self.kind}"


@dataclass(frozen=True)
class Verification:
    """The outcome of :meth:`LedgerStore.verify`."""

    entries: int
    breach: Breach | None

    @property
    def intact(self) -> bool:
        """True if every entry and every link holds."""
        return self.breach is None

    def __str__(self) -> str:
        return str(self.breach) if self.breach else f"ledger intact: {self.entries} entries"


@dataclass(frozen=True)
class SyncReport:
    """What one :meth:`LedgerStore.sync` did."""

    topic: str
    records: int
    added: int
    repeated: int
    undecodable: int
    next_offset: int


def _row_fields(row: sqlite3.Row) -> dict[str, Any]:
    out = {name: row[name] for name in _FIELDS}
    out["ledger_offset"] = row["ledger_offset"]
    return out


def _record_of(row: sqlite3.Row) -> HandoverRecord:
    return HandoverRecord(
        event_id=row["event_id"],
        referral_id=row["referral_id"],
        case_id=row["case_id"],
        event=row["event"],
        actor=row["actor"],
        at=datetime.fromtimestamp(row["at_ms"] / 1000, UTC),
        from_party=row["from_party"],
        to_party=row["to_party"],
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        reason=row["reason"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        index=row["idx"],
    )


class LedgerStore:
    """A hash-chained SQLite copy of one ledger topic."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._db = Database(self.path, _SCHEMA)
        except ConfigError as exc:
            raise LedgerStoreError(f"the ledger store: {exc}") from exc

    @classmethod
    def for_settings(cls, settings: Settings) -> LedgerStore:
        """The store of a deployment: ``<state_dir>/ledger.sqlite3``."""
        return cls(Path(settings.state_dir) / DEFAULT_FILE)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ----------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self._db.query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    @property
    def next_offset(self) -> int:
        """The ledger offset the next sync starts from."""
        return int(self._meta("next_offset") or 0)

    def __len__(self) -> int:
        return int(self._db.query("SELECT COUNT(*) FROM entries")[0][0])

    # -- writing -------------------------------------------------------------------------------
    def _head(self) -> tuple[int, str]:
        count = int(self._meta("head_count") or 0)
        return count, self._meta("head_hash") or GENESIS

    def append(self, events: Iterable[dict[str, Any]], ledger_offset: int) -> tuple[int, int]:
        """Chain the events of one ledger record; (added, repeated) — repeats are skipped."""
        with self._db.transaction() as conn:
            return self._append(conn, events, ledger_offset)

    def _append(
        self, conn: sqlite3.Connection, events: Iterable[dict[str, Any]], ledger_offset: int
    ) -> tuple[int, int]:
        count, prev = self._head()
        added = repeated = 0
        for event in events:
            exists = conn.execute(
                "SELECT 1 FROM entries WHERE event_id = ?", (event["event_id"],)
            ).fetchone()
            if exists:
                repeated += 1
                continue
            fields = _fields_of(event, ledger_offset)
            digest = entry_hash(prev, fields)
            values = [fields[name] for name in _FIELDS]
            conn.execute(
                f"INSERT INTO entries (idx, {_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                (count, *values, ledger_offset, prev, digest),
            )
            count, prev = count + 1, digest
            added += 1
        self._set_meta(conn, "head_count", count)
        self._set_meta(conn, "head_hash", prev)
        return added, repeated

    def sync(
        self,
        settings: Settings,
        codec: Codec,
        *,
        timeout: float = 30.0,
        idle: float = 0.5,
        consumer: KafkaConsumer | None = None,
    ) -> SyncReport:
        """Read the ledger topic from the last stored offset to its end; idempotent.

        The end is where no more records arrive for ``idle`` seconds after the
        broker's reported end is reached (its ListOffsets may omit the last
        batch), or ``timeout``.
        """
        topic = settings.topic_names().ledger
        known = self._meta("topic")
        if known is not None and known != topic:
            raise LedgerStoreError(f"the ledger store {self.path} holds topic {known}, not {topic}")
        own = consumer is None
        reader = consumer or clients.consumer(settings, group_id=None, role="ledger-sync")
        try:
            return self._sync(reader, topic, codec, timeout, idle)
        except KafkaError as exc:
            raise BrokerError(f"cannot read the ledger {topic}: {type(exc).__name__}") from exc
        finally:
            if own:
                reader.close()

    def _sync(
        self, reader: KafkaConsumer, topic: str, codec: Codec, timeout: float, idle: float
    ) -> SyncReport:
        deadline = time.monotonic() + timeout
        parts = reader.partitions_for_topic(topic)
        while parts is None and time.monotonic() < deadline:
            time.sleep(0.1)
            parts = reader.partitions_for_topic(topic)
        if not parts:
            raise LedgerStoreError(f"the ledger topic {topic} does not exist")
        if parts != {0}:
            raise LedgerStoreError(
                f"the ledger topic {topic} has {len(parts)} partitions; "
                "it needs one for a total order"
            )
        tp = TopicPartition(topic, 0)
        reader.assign([tp])
        start = self.next_offset
        reader.seek(tp, start)
        listed_end = int(reader.end_offsets([tp]).get(tp, 0))
        records = added = repeated = undecodable = 0
        next_offset = start
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = reader.poll(timeout_ms=100, max_records=2000)
            got = batch.get(tp, [])
            if not got:
                if next_offset >= listed_end and time.monotonic() - last_new >= idle:
                    break
                continue
            bad = 0
            # One transaction per batch: the entries and the offset they advance to.
            with self._db.transaction() as conn:
                for rec in got:
                    records += 1
                    try:
                        events = decode_events(codec, rec.value or b"")
                    except CodecError:
                        bad += 1
                        events = []
                    a, r = self._append(conn, events, rec.offset)
                    added, repeated = added + a, repeated + r
                    next_offset = rec.offset + 1
                undecodable += bad
                self._set_meta(conn, "topic", topic)
                self._set_meta(conn, "next_offset", next_offset)
                self._set_meta(conn, "undecodable", int(self._meta("undecodable") or 0) + bad)
            last_new = time.monotonic()
        if records == 0:
            with self._db.transaction() as conn:
                self._set_meta(conn, "topic", topic)
        return SyncReport(topic, records, added, repeated, undecodable, next_offset)

    # -- reading -------------------------------------------------------------------------------
    def _rows(self, referral_id: str | None = None) -> list[sqlite3.Row]:
        if referral_id is None:
            return self._db.query("SELECT * FROM entries ORDER BY idx")
        return self._db.query(
            "SELECT * FROM entries WHERE referral_id = ? ORDER BY idx", (referral_id,)
        )

    def entries(self, referral_id: str | None = None) -> list[LedgerEntry]:
        """Every entry (of one referral, if given), in chain order."""
        return [
            LedgerEntry(
                index=row["idx"],
                ledger_offset=row["ledger_offset"],
                record=_record_of(row),
                prev_hash=row["prev_hash"],
                entry_hash=row["entry_hash"],
            )
            for row in self._rows(referral_id)
        ]

    def records(self, referral_id: str | None = None) -> list[HandoverRecord]:
        """The handover records (of one referral, if given), in chain order."""
        return [_record_of(row) for row in self._rows(referral_id)]

    # -- verifying -----------------------------------------------------------------------------
    def verify(self) -> Verification:
        """Recompute the chain; name the first entry altered, missing or reordered.

        * a gap in the indices, a link to a hash no entry has, or fewer entries
          than the recorded head: ``missing``;
        * an entry whose content no longer gives its hash: ``altered``;
        * an intact entry linked to another entry than its predecessor: ``reordered``.
        """
        rows = list(self._rows())
        hashes = {row["entry_hash"] for row in rows}
        prev = GENESIS
        for position, row in enumerate(rows):
            if row["idx"] != position:
                return Verification(len(rows), Breach(position, "missing"))
            if entry_hash(row["prev_hash"], _row_fields(row)) != row["entry_hash"]:
                return Verification(len(rows), Breach(position, "altered"))
            if row["prev_hash"] != prev:
                kind: Literal["missing", "reordered"] = (
                    "reordered" if row["prev_hash"] in hashes else "missing"
                )
                return Verification(len(rows), Breach(position, kind))
            prev = row["entry_hash"]
        head_count, head_hash = self._head()
        if head_count > len(rows):
            return Verification(len(rows), Breach(len(rows), "missing"))
        if head_count < len(rows):
            return Verification(len(rows), Breach(head_count, "altered"))
        if head_hash != prev:
            return Verification(len(rows), Breach(max(len(rows) - 1, 0), "altered"))
        return Verification(len(rows), None)
