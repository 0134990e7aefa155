"""The materialised ledger: the ledger topic in a local, hash-chained SQLite store."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.config import Settings
from broker.errors import CodecError, ConfigError, KafkaBrokerError, LedgerStoreError, SecurityError
from broker.kafka import clients
from broker.kafka.reader import TopicReader
from broker.ledger.batchwriter import event_id
from broker.ledger.checkpoint import NOTE_KINDS, Checkpoint, HeldHead, read_checkpoints
from broker.ledger.events import decode_events
from broker.ledger.views import HandoverRecord
from broker.security.keys import TrustStore
from broker.security.signing import (
    SIGNATURE_HEADERS,
    LedgerContext,
    has_signature,
    signature_key_id,
    verify_signed,
)
from broker.sqlite import Database
from broker.wire.codec import Codec
from broker.wire.topics import Headers, header

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
    event_id TEXT NOT NULL,
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
CREATE INDEX IF NOT EXISTS entries_event ON entries (event_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    ledger_offset INTEGER PRIMARY KEY,
    value BLOB NOT NULL,
    headers TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS heads (value BLOB PRIMARY KEY, headers TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notes (value BLOB PRIMARY KEY, kind TEXT NOT NULL);
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


BreachKind = Literal[
    "altered",
    "missing",
    "reordered",
    "unsigned",
    "forged",
    "pre-empted",
    "conflict",
    "rewritten",
    "truncated",
]
#: Which breach is named first when two fail at the same entry.
_PRECEDENCE = (
    "missing",
    "reordered",
    "altered",
    "unsigned",
    "forged",
    "pre-empted",
    "conflict",
    "rewritten",
    "truncated",
)


@dataclass(frozen=True)
class Breach:
    """The first place the ledger does not hold, and why."""

    index: int
    kind: BreachKind
    detail: str = ""

    def __str__(self) -> str:
        text = f"ledger broken at entry {self.index}: {self.kind}"
        return f"{text} ({self.detail})" if self.detail else text

    def order(self) -> tuple[int, int]:
        """Sort key: the entry, then the more basic kind first."""
        return (self.index, _PRECEDENCE.index(self.kind))


@dataclass(frozen=True)
class Verification:
    """The outcome of :meth:`LedgerStore.verify`."""

    entries: int
    breach: Breach | None
    #: Valid checkpoints the chain was checked against, and who holds them.
    heads: int = 0
    holders: tuple[str, ...] = ()
    #: Entries whose signatures were checked (0: no trust store given).
    signed: int = 0
    #: Checkpoint records that were ignored (unsigned, badly signed, or not by the router).
    ignored_heads: tuple[str, ...] = field(default=())
    #: Every breach found, in chain order (``breach`` is the first of them).
    breaches: tuple[Breach, ...] = field(default=())

    @property
    def intact(self) -> bool:
        """True if every entry, every link and every head holds."""
        return self.breach is None

    def __str__(self) -> str:
        if self.breach:
            return "\n".join(str(b) for b in self.breaches or (self.breach,))
        text = f"ledger intact: {self.entries} entries"
        if self.signed:
            text += f", {self.signed} signed"
        if self.heads:
            text += f", consistent with {self.heads} signed checkpoint(s)"
            text += f" held by {', '.join(self.holders)}"
        return text


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


def _entry_of(row: sqlite3.Row) -> LedgerEntry:
    return LedgerEntry(
        index=row["idx"],
        ledger_offset=row["ledger_offset"],
        record=_record_of(row),
        prev_hash=row["prev_hash"],
        entry_hash=row["entry_hash"],
    )


def _dump_signature(headers: Sequence[tuple[str, bytes | None]] | None) -> str:
    kept = [[k, (v or b"").decode("latin-1")] for k, v in headers or () if k in SIGNATURE_HEADERS]
    return json.dumps(kept)


def _load_signature(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((str(k), str(v).encode("latin-1")) for k, v in json.loads(text))


class LedgerStore:
    """A hash-chained SQLite copy of one ledger topic."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._db = Database(self.path, _SCHEMA)
        except ConfigError as exc:
            raise LedgerStoreError(f"the ledger store: {exc}") from exc
        self._drop_unique_event_ids()

    def _drop_unique_event_ids(self) -> None:
        """Earlier stores kept one entry per event id: rebuilt once so conflicts can be kept."""
        rows = self._db.query("SELECT sql FROM sqlite_master WHERE name = 'entries'")
        if not rows or "UNIQUE" not in str(rows[0][0]):
            return
        with self._db.transaction() as conn:
            conn.execute("ALTER TABLE entries RENAME TO entries_unique")
            conn.execute("DROP INDEX IF EXISTS entries_referral")
            for statement in _SCHEMA.split(";"):
                if "entries" in statement and statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO entries SELECT * FROM entries_unique")
            conn.execute("DROP TABLE entries_unique")

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

    def head(self) -> tuple[int, str]:
        """The store's head: entry count and the hash of the last entry."""
        return self._head()

    def append(
        self,
        events: Iterable[dict[str, Any]],
        ledger_offset: int,
        *,
        value: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> tuple[int, int]:
        """Chain the events of one ledger record; (added, repeated) — repeats are skipped.

        ``value`` and ``headers`` (the record as read, with its signature) are kept
        for :meth:`verify`.
        """
        with self._db.transaction() as conn:
            return self._append(conn, events, ledger_offset, value, headers)

    def _append(
        self,
        conn: sqlite3.Connection,
        events: Iterable[dict[str, Any]],
        ledger_offset: int,
        value: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> tuple[int, int]:
        if value is not None:
            conn.execute(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?)",
                (ledger_offset, value, _dump_signature(headers)),
            )
        count, prev = self._head()
        added = repeated = 0
        signer = signature_key_id(headers)
        for event in events:
            if self._repeats(conn, str(event["event_id"]), signer):
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

    @staticmethod
    def _repeats(conn: sqlite3.Connection, event_id: str, signer: str | None) -> bool:
        """True if an entry with this id came in a record signed by the same key (or, both
        unsigned): a redelivered hop. The same id under another key is kept (a conflict)."""
        stored = conn.execute(
            "SELECT r.headers FROM entries e LEFT JOIN records r"
            " ON r.ledger_offset = e.ledger_offset WHERE e.event_id = ?",
            (event_id,),
        ).fetchall()
        return any(signature_key_id(_load_signature(h[0] or "[]")) == signer for h in stored)

    def sync(
        self,
        settings: Settings,
        codec: Codec,
        *,
        timeout: float = 30.0,
        idle: float = 0.5,
        consumer: KafkaConsumer | None = None,
        checkpoints: bool = True,
    ) -> SyncReport:
        """Read the ledger topic from the last stored offset to its end; idempotent.

        The end is where no more records arrive for ``idle`` seconds after the
        broker's reported end is reached (its ListOffsets may omit the last
        batch), or ``timeout``. With ``checkpoints``, the checkpoint records are
        read too and kept (as they are: :meth:`verify` checks their signatures).
        """
        topic = settings.topic_names().ledger
        known = self._meta("topic")
        if known is not None and known != topic:
            raise LedgerStoreError(f"the ledger store {self.path} holds topic {known}, not {topic}")
        own = consumer is None
        reader = consumer or clients.consumer(settings, group_id=None, role="ledger-sync")
        try:
            report = self._sync(reader, topic, codec, timeout, idle)
            if checkpoints:
                self._sync_heads(settings, reader)
            return report
        except KafkaError as exc:
            raise KafkaBrokerError(f"cannot read the ledger {topic}: {type(exc).__name__}") from exc
        finally:
            if own:
                reader.close()

    def _sync(
        self, reader: KafkaConsumer, topic: str, codec: Codec, timeout: float, idle: float
    ) -> SyncReport:
        topic_reader = TopicReader(
            reader, topic, timeout=timeout, idle=idle, wait_for_topic=min(timeout, 10.0)
        )
        parts = topic_reader.partitions(topic)
        if not parts:
            raise LedgerStoreError(f"the ledger topic {topic} does not exist")
        if parts != [0]:
            raise LedgerStoreError(
                f"the ledger topic {topic} has {len(parts)} partitions; "
                "it needs one for a total order"
            )
        tp = TopicPartition(topic, 0)
        start = self.next_offset
        records = added = repeated = undecodable = 0
        next_offset = start
        for got in topic_reader.batches({tp: start}, partitions=[tp]):
            bad = 0
            # One transaction per batch: the entries and the offset they advance to.
            with self._db.transaction() as conn:
                for rec in got:
                    records += 1
                    value = rec.value or b""
                    try:
                        events = decode_events(codec, value)
                    except CodecError:
                        bad += 1
                        events = []
                    a, r = self._append(conn, events, rec.offset, value, rec.headers)
                    added, repeated = added + a, repeated + r
                    next_offset = rec.offset + 1
                undecodable += bad
                self._set_meta(conn, "topic", topic)
                self._set_meta(conn, "next_offset", next_offset)
                self._set_meta(conn, "undecodable", int(self._meta("undecodable") or 0) + bad)
        if records == 0:
            with self._db.transaction() as conn:
                self._set_meta(conn, "topic", topic)
        return SyncReport(topic, records, added, repeated, undecodable, next_offset)

    def _sync_heads(self, settings: Settings, reader: KafkaConsumer) -> None:
        start = int(self._meta("heads_offset") or 0)
        position = start
        for offset, value, headers in read_checkpoints(
            settings, start=start, consumer=reader, timeout=10, idle=0.2
        ):
            position = offset + 1
            kind = header(headers, Headers.RECORD_KIND)
            with self._db.transaction() as conn:
                if kind in NOTE_KINDS:  # tree heads and cosignatures: kept for the witnessing
                    conn.execute("INSERT OR IGNORE INTO notes VALUES (?, ?)", (value, kind))
                    continue
                conn.execute(
                    "INSERT OR IGNORE INTO heads VALUES (?, ?)", (value, _dump_signature(headers))
                )
        if position != start:
            with self._db.transaction() as conn:
                self._set_meta(conn, "heads_offset", position)

    def notes(self) -> list[tuple[bytes, tuple[tuple[str, bytes], ...]]]:
        """The tree heads and cosignatures read from the checkpoints topic, as records."""
        rows = self._db.query("SELECT value, kind FROM notes ORDER BY rowid")
        return [(bytes(v), ((Headers.RECORD_KIND, str(k).encode()),)) for v, k in rows]

    def held_heads(self) -> list[HeldHead]:
        """The checkpoint records this store has read (its own stored heads)."""
        rows = self._db.query("SELECT value, headers FROM heads")
        return [HeldHead(bytes(v), _load_signature(h), "this store") for v, h in rows]

    @classmethod
    def reference(
        cls, settings: Settings, codec: Codec, timeout: float = 60.0
    ) -> list[tuple[str, int]]:
        """``(entry hash, ledger offset)`` of each entry the ledger topic gives now, chained
        afresh in a scratch store."""
        with tempfile.TemporaryDirectory(prefix="ledger-reference-") as scratch:
            fresh = cls(Path(scratch) / DEFAULT_FILE)
            try:
                fresh.sync(settings, codec, timeout=timeout, checkpoints=False)
                return [(e.entry_hash, e.ledger_offset) for e in fresh.entries()]
            finally:
                fresh.close()

    # -- reading -------------------------------------------------------------------------------
    def _rows(self, referral_id: str | None = None, since: int = 0) -> list[sqlite3.Row]:
        if referral_id is None:
            return self._db.query("SELECT * FROM entries WHERE idx >= ? ORDER BY idx", (since,))
        return self._db.query(
            "SELECT * FROM entries WHERE referral_id = ? ORDER BY idx", (referral_id,)
        )

    def entries(self, referral_id: str | None = None, *, since: int = 0) -> list[LedgerEntry]:
        """Every entry (of one referral, if given; from index ``since`` on), in chain order."""
        return [_entry_of(row) for row in self._rows(referral_id, since)]

    def entry(self, index: int) -> LedgerEntry | None:
        """The entry at ``index`` (None if the store has none there)."""
        rows = self._db.query("SELECT * FROM entries WHERE idx = ?", (index,))
        return _entry_of(rows[0]) if rows else None

    def referral_ids(self) -> list[str]:
        """Every referral id the ledger holds events about (the candidates for a short id)."""
        return [
            str(r["referral_id"])
            for r in self._db.query("SELECT DISTINCT referral_id FROM entries")
        ]

    def records(self, referral_id: str | None = None) -> list[HandoverRecord]:
        """The handover records (of one referral, if given), in chain order; an entry under
        an event id that is not its own (``pre-empted``) is evidence, not a handover."""
        return [
            _record_of(row)
            for row in self._rows(referral_id)
            if derived_event_id(row) == row["event_id"]
        ]

    # -- verifying -----------------------------------------------------------------------------
    def verify(
        self,
        trust: TrustStore | None = None,
        *,
        codec: Codec | None = None,
        allow_plain: bool = True,
        heads: Iterable[HeldHead] = (),
        reference: Sequence[tuple[str, int]] | None = None,
    ) -> Verification:
        """Check the chain, every entry's signature and every head; name the first failure.

        * a gap in the indices, a link to a hash no entry has, or fewer entries
          than the recorded head: ``missing``;
        * an entry whose content no longer gives its hash, or that is not what its
          signed record says: ``altered``;
        * an intact entry linked to another entry than its predecessor: ``reordered``;
        * with ``trust``: a record without a signature where one is required (the
          network does not ``allow_plain``, or its actor has a key on record):
          ``unsigned``; one not signed by its actor's trusted key, or signed by a
          key revoked since and not covered by a checkpoint: ``forged``;
        * every valid checkpoint in ``heads`` (and this store's own) must match the
          chain at its count, and ``reference`` (the entry hashes the ledger topic
          gives, :meth:`reference`) must agree: else ``rewritten``, at the first
          entry that differs from the topic (without a reference: at the first
          entry no consistent checkpoint covers).
        """
        rows = list(self._rows())
        breaches = self._chain_breaches(rows)
        breaches += _identity_breaches(rows)
        held = [*self.held_heads(), *heads]
        valid, ignored = self._valid_heads(held, trust)
        covered = max((c.count for c, _ in valid if c.count <= len(rows)), default=0)
        signed = 0
        if trust is not None:
            codec = codec or _embedded_codec()
            found, signed = self._signature_breaches(rows, codec, trust, allow_plain, covered)
            breaches += found
        breaches += self._head_breaches(rows, valid, reference)
        ordered = _one_per_place(breaches)
        first = ordered[0] if ordered else None
        holders = tuple(sorted({holder for _, hs in valid for holder in hs}))
        return Verification(len(rows), first, len(valid), holders, signed, tuple(ignored), ordered)

    def _chain_breaches(self, rows: list[sqlite3.Row]) -> list[Breach]:
        """Every place the chain does not hold, checked on past each bad entry; a broken
        link right after another (or after a gap) is the same breach, named once."""
        out: list[Breach] = []
        hashes = {row["entry_hash"] for row in rows}
        prev = GENESIS
        expected = 0
        link_broken = False
        for row in rows:
            index = int(row["idx"])
            gap = index != expected
            if gap:
                span = f"entries {expected}-{index - 1}" if index - 1 > expected else ""
                out.append(Breach(expected, "missing", span))
            if entry_hash(row["prev_hash"], _row_fields(row)) != row["entry_hash"]:
                out.append(Breach(index, "altered"))
                link_broken = True  # the next entry's link to it fails because of it
            elif row["prev_hash"] != prev:
                if not (gap or link_broken):
                    kind: Literal["missing", "reordered"] = (
                        "reordered" if row["prev_hash"] in hashes else "missing"
                    )
                    out.append(Breach(index, kind))
                link_broken = True
            else:
                link_broken = False
            prev = row["entry_hash"]
            expected = index + 1
        head_count, head_hash = self._head()
        if head_count > expected and not any(b.kind == "missing" for b in out):
            out.append(Breach(expected, "missing"))
        elif head_count < expected:
            out.append(Breach(head_count, "altered"))
        elif head_count == expected and head_hash != prev and rows:
            out.append(Breach(max(expected - 1, 0), "altered"))
        return out

    @staticmethod
    def _valid_heads(
        held: Iterable[HeldHead], trust: TrustStore | None
    ) -> tuple[list[tuple[Checkpoint, set[str]]], list[str]]:
        """The distinct checkpoints whose signatures hold, with their holders; the ignored."""
        by_value: dict[bytes, tuple[Checkpoint, set[str]]] = {}
        ignored = []
        for h in held:
            try:
                checkpoint = h.checkpoint(trust) if trust is not None else Checkpoint.parse(h.value)
            except SecurityError as exc:
                ignored.append(f"{h.holder}: {str(exc).splitlines()[0]}")
                continue
            by_value.setdefault(h.value, (checkpoint, set()))[1].add(h.holder)
        return sorted(by_value.values(), key=lambda v: v[0].count), ignored

    def record(self, ledger_offset: int) -> tuple[bytes, tuple[tuple[str, bytes], ...]] | None:
        """The stored ledger record at ``ledger_offset``: its value and signature headers."""
        rows = self._db.query(
            "SELECT value, headers FROM records WHERE ledger_offset = ?", (ledger_offset,)
        )
        return (bytes(rows[0][0]), _load_signature(rows[0][1])) if rows else None

    def _records(self) -> dict[int, tuple[bytes, tuple[tuple[str, bytes], ...]]]:
        rows = self._db.query("SELECT ledger_offset, value, headers FROM records")
        return {int(o): (bytes(v), _load_signature(h)) for o, v, h in rows}

    def _signature_breaches(
        self,
        rows: list[sqlite3.Row],
        codec: Codec,
        trust: TrustStore,
        allow_plain: bool,
        covered: int,
    ) -> tuple[list[Breach], int]:
        """Every entry whose signed record does not vouch for it; entries signed."""
        records = self._records()
        checked: dict[int, _RecordCheck] = {}
        out: list[Breach] = []
        signed = 0
        for position, row in enumerate(rows):
            offset = int(row["ledger_offset"])
            if offset not in checked:
                checked[offset] = _check_record(
                    records.get(offset), codec, trust, allow_plain, position
                )
            check = checked[offset]
            if check.failure is not None:
                out.append(Breach(position, check.failure.kind, check.failure.detail))
                continue
            if check.revoked and position >= covered:
                detail = "signed with a key revoked since, after the last checkpoint"
                out.append(Breach(position, "forged", detail))
                continue
            event = check.events.get(row["event_id"])
            if event is None or _fields_of(event, offset) != _row_fields(row):
                out.append(Breach(position, "altered", "not what its signed record says"))
                continue
            signed += check.signed
        return out, signed

    def _head_breaches(
        self,
        rows: list[sqlite3.Row],
        valid: list[tuple[Checkpoint, set[str]]],
        reference: Sequence[tuple[str, int]] | None,
    ) -> list[Breach]:
        """Checkpoints that disagree with the chain, and where it first differs from the topic.

        A checkpoint names only a count and a hash: without the topic the breach is put at
        the first entry no consistent checkpoint covers; with it, at the exact entry.
        """
        out = []
        consistent = 0
        for checkpoint, holders in valid:
            who = f"checkpoint of {checkpoint.count} entries held by {', '.join(sorted(holders))}"
            if checkpoint.count > len(rows):
                if checkpoint.ledger_offset <= self.next_offset:
                    out.append(Breach(consistent, "rewritten", f"fewer entries than the {who}"))
                    break
                # The store is behind a checkpoint it knows of: a cut tail, or not synced.
                detail = (
                    f"entries {len(rows)}-{checkpoint.count - 1} missing: the {who}"
                    " covers them; `referral ledger sync` reads them again"
                )
                out.append(Breach(len(rows), "truncated", detail))
                continue
            if checkpoint.count and rows[checkpoint.count - 1]["entry_hash"] != checkpoint.head:
                out.append(Breach(consistent, "rewritten", f"does not match the {who}"))
                break
            consistent = checkpoint.count
        if reference is not None:
            # Entries of records the store has read past must all be there, as the topic says.
            expected = [h for h, offset in reference if offset < self.next_offset]
            for position, want in enumerate(expected):
                if position >= len(rows) or rows[position]["entry_hash"] != want:
                    detail = "; ".join(["differs from the ledger topic", *(b.detail for b in out)])
                    return [Breach(position, "rewritten", detail)]
        return out


def _one_per_place(breaches: Iterable[Breach]) -> tuple[Breach, ...]:
    """One breach per entry and kind (the most detailed), in chain order."""
    best: dict[tuple[int, str], Breach] = {}
    for b in breaches:
        kept = best.get((b.index, b.kind))
        if kept is None or len(b.detail) > len(kept.detail):
            best[(b.index, b.kind)] = b
    return tuple(sorted(best.values(), key=Breach.order))


def _identity_breaches(rows: Sequence[sqlite3.Row]) -> list[Breach]:
    """Entries whose id is not the one their facts derive (another's event id taken first:
    ``pre-empted``), and honest ids that stand twice with other content (``conflict``).
    An entry whose own hash fails is ``altered``, not judged here."""
    out: list[Breach] = []
    first: dict[str, sqlite3.Row] = {}
    for position, row in enumerate(rows):
        if entry_hash(row["prev_hash"], _row_fields(row)) != row["entry_hash"]:
            continue
        derived = derived_event_id(row)
        if derived != row["event_id"]:
            detail = f"event id {row['event_id'][:8]} sent by {row['actor']} (not its own)"
            out.append(Breach(position, "pre-empted", detail))
            continue
        earlier = first.setdefault(derived, row)
        if earlier is not row:
            detail = (
                f"event id {derived[:8]} also at entry {earlier['idx']}"
                f" ({earlier['actor']} and {row['actor']})"
            )
            out.append(Breach(position, "conflict", detail))
    return out


def derived_event_id(row: Any) -> str:
    """The event id an entry's facts give (what an honest emitter used)."""
    return event_id(
        row["referral_id"],
        row["event"],
        row["actor"],
        row["from_party"],
        row["to_party"],
        row["topic"],
        row["partition"],
        row["offset"],
        row["reason"],
    )


@dataclass(frozen=True)
class _RecordCheck:
    """What one stored ledger record vouches for."""

    events: dict[str, dict[str, Any]]
    failure: Breach | None = None
    signed: bool = False
    revoked: bool = False


def _check_record(
    record: tuple[bytes, tuple[tuple[str, bytes], ...]] | None,
    codec: Codec,
    trust: TrustStore,
    allow_plain: bool,
    position: int,
) -> _RecordCheck:
    """A stored ledger record's events by id, and why it cannot vouch for them (if so)."""
    if record is None:
        return _RecordCheck({}, Breach(position, "altered", "its ledger record is not stored"))
    value, headers = record
    try:
        events = {str(e["event_id"]): e for e in decode_events(codec, value)}
    except CodecError:
        return _RecordCheck({}, Breach(position, "altered", "its ledger record does not decode"))
    actors = {str(e.get("actor")) for e in events.values()}
    if not has_signature(headers):
        keyed = sorted(a for a in actors if trust.has_signing_keys(a))
        if not allow_plain or keyed:
            who = ",".join(keyed or sorted(actors))
            return _RecordCheck(events, Breach(position, "unsigned", f"no signature by {who}"))
        return _RecordCheck(events)
    try:
        context = verify_signed(headers, value, trust, LedgerContext, allow_revoked=True)
    except SecurityError as exc:
        return _RecordCheck(events, Breach(position, "forged", str(exc).splitlines()[0]))
    if actors != {context.actor} or context.events != len(events):
        detail = f"signed by {context.actor} for events of {','.join(sorted(actors))}"
        return _RecordCheck(events, Breach(position, "forged", detail))
    return _RecordCheck(events, signed=True, revoked=signature_key_id(headers) in trust.revoked)


def _embedded_codec() -> Codec:
    from broker.wire.registry import EmbeddedRegistry

    return Codec(EmbeddedRegistry())
