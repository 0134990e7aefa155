"""Signed checkpoints of the ledger: entry count + chain head, like Certificate Transparency's
signed tree heads.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from broker.config import Settings
from broker.errors import (
    CodecError,
    KafkaBrokerError,
    ReferralError,
    SecurityError,
    SignatureInvalid,
)
from broker.kafka import clients
from broker.kafka.reader import TopicReader
from broker.security.keys import ROUTER, LiveKeys, LiveTrust, OrgKeys, TrustStore
from broker.security.signing import (
    SIGNATURE_HEADERS,
    CheckpointContext,
    has_signature,
    sign,
    verify_signed,
)
from broker.security.window import now_ms
from broker.wire.codec import Codec

if TYPE_CHECKING:
    from broker.ledger.witness import WitnessParts
from broker.wire.topics import Headers, header

__all__ = [
    "CHECKPOINT_KIND",
    "Checkpoint",
    "Checkpointer",
    "HeadStore",
    "HeadWatcher",
    "HeldHead",
    "publish_checkpoint",
    "read_checkpoints",
]

log = logging.getLogger("referral.ledger.checkpoint")

#: The ``referral.kind`` header of a checkpoint record.
CHECKPOINT_KIND = b"checkpoint"
_FIELDS = frozenset({"count", "head", "offset", "by", "at"})


@dataclass(frozen=True)
class Checkpoint:
    """One signed head of the ledger chain."""

    #: Entries in the chain.
    count: int
    #: The entry hash of the last entry (the genesis hash for none).
    head: str
    #: The ledger offset the chain was read to (exclusive).
    ledger_offset: int
    #: Who signed it (the router).
    by: str
    at_ms: int

    def encode(self) -> bytes:
        """The canonical ASCII text of the checkpoint (the record value)."""
        return (
            f"checkpoint-v1;count={self.count};head={self.head};offset={self.ledger_offset};"
            f"by={self.by};at={self.at_ms}"
        ).encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> Checkpoint:
        """Parse a checkpoint record value; SignatureInvalid if it is not one."""
        try:
            version, *parts = data.decode("ascii").split(";")
            fields = dict(p.split("=", 1) for p in parts)
            if version != "checkpoint-v1" or set(fields) != _FIELDS or len(fields) != len(parts):
                raise ValueError("fields")
            head = fields["head"]
            if len(head) != 64 or any(c not in "0123456789abcdef" for c in head):
                raise ValueError("head")
            return cls(
                int(fields["count"]), head, int(fields["offset"]), fields["by"], int(fields["at"])
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise SignatureInvalid("not a checkpoint record") from exc

    def signed(self, keys: OrgKeys) -> list[tuple[str, bytes]]:
        """The signature headers of this checkpoint with ``keys`` (the router's)."""
        context = CheckpointContext(self.by, self.at_ms)
        return sign(keys.signing, keys.signing_id, context, self.encode())

    @classmethod
    def verified(
        cls, value: bytes, headers: Sequence[tuple[str, bytes | None]] | None, trust: TrustStore
    ) -> Checkpoint:
        """The checkpoint in a record if its signature holds (not revoked); SignatureInvalid."""
        if not has_signature(headers):
            raise SignatureInvalid("unsigned checkpoint")
        context = verify_signed(headers, value, trust, CheckpointContext)
        checkpoint = cls.parse(value)
        if checkpoint.by != context.by or checkpoint.by != ROUTER:
            raise SignatureInvalid(f"checkpoint by {checkpoint.by} signed as {context.by}")
        return checkpoint


@dataclass(frozen=True)
class HeldHead:
    """A checkpoint record as someone holds it: its bytes, its signature, and who holds it."""

    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    holder: str

    def checkpoint(self, trust: TrustStore) -> Checkpoint:
        """The checkpoint, if its signature holds; SignatureInvalid otherwise."""
        return Checkpoint.verified(self.value, self.headers, trust)


def _signature_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> list[Any]:
    return [[k, (v or b"").decode("latin-1")] for k, v in headers or () if k in SIGNATURE_HEADERS]


def _load_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((str(k), str(v).encode("latin-1")) for k, v in json.loads(text))


class HeadStore:
    """The checkpoints one holder has seen (SQLite), with their signatures, for later checks."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = Path(path)
        self.holder = holder
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS heads (value BLOB PRIMARY KEY, headers TEXT NOT NULL,"
                " count INTEGER NOT NULL, at_ms INTEGER NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )

    @classmethod
    def for_org(cls, settings: Settings, org_id: str) -> HeadStore:
        """``<state_dir>/orgs/<org>/heads.sqlite3``."""
        return cls(settings.org_dir(org_id) / "heads.sqlite3", org_id)

    def add(self, checkpoint: Checkpoint, value: bytes, headers: Any) -> bool:
        """Keep a (verified) checkpoint record; False if it was already held."""
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO heads VALUES (?, ?, ?, ?)",
                (
                    value,
                    json.dumps(_signature_headers(headers)),
                    checkpoint.count,
                    checkpoint.at_ms,
                ),
            )
            return cur.rowcount == 1

    def heads(self) -> list[HeldHead]:
        """Every checkpoint record held, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT value, headers FROM heads ORDER BY count, at_ms")
            return [HeldHead(bytes(v), _load_headers(h), self.holder) for v, h in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM heads").fetchone()[0])

    @property
    def next_offset(self) -> int:
        """Where the holder's reading of the checkpoints topic resumes."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'next_offset'").fetchone()
        return int(row[0]) if row else 0

    def set_next_offset(self, offset: int) -> None:
        """Remember where to resume reading the checkpoints topic."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO meta VALUES ('next_offset', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(offset),),
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def publish_checkpoint(
    producer: KafkaProducer, topic: str, checkpoint: Checkpoint, keys: OrgKeys
) -> FutureRecordMetadata:
    """Send one signed checkpoint to the checkpoints topic."""
    headers = [(Headers.RECORD_KIND, CHECKPOINT_KIND), *checkpoint.signed(keys)]
    return producer.send(
        topic, key=checkpoint.by.encode(), value=checkpoint.encode(), headers=headers
    )


def read_checkpoints(
    settings: Settings,
    *,
    start: int = 0,
    consumer: KafkaConsumer | None = None,
    timeout: float = 10.0,
    idle: float = 0.5,
) -> Iterator[tuple[int, bytes, tuple[tuple[str, bytes], ...]]]:
    """``(offset, value, headers)`` of every checkpoint record from ``start`` to the end."""
    topic = settings.topic_names().checkpoints
    own = consumer is None
    reader = consumer or clients.consumer(settings, group_id=None, role="checkpoints")
    try:
        topic_reader = TopicReader(
            reader, topic, timeout=timeout, idle=idle, wait_for_topic=timeout
        )
        if not topic_reader.partitions(topic):
            return
        tp = TopicPartition(topic, 0)
        for batch in topic_reader.batches({tp: start}, partitions=[tp]):
            for rec in batch:
                yield rec.offset, bytes(rec.value or b""), tuple(rec.headers or ())
    except KafkaError as exc:
        raise KafkaBrokerError(
            f"cannot read the checkpoints {topic}: {type(exc).__name__}"
        ) from exc
    finally:
        if own:
            reader.close()


class Checkpointer:
    """The router's checkpoints: materialise the ledger, sign its head, publish it.

    Runs in a thread of its own beside the router's loop (never on its hot
    path): every ``interval`` seconds it brings its ledger store up to date and,
    if the chain grew, publishes a signed checkpoint; :meth:`publish_now` does
    it on demand. Without the router's keys it does nothing.
    """

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        keys: LiveKeys,
        producer: KafkaProducer,
        *,
        interval: float = 30.0,
        store_path: Path | None = None,
    ) -> None:
        from broker.ledger.store import LedgerStore

        self.settings = settings
        self.codec = codec
        self.keys = keys
        self.producer = producer
        self.interval = interval
        self.topic = settings.topic_names().checkpoints
        path = store_path or settings.org_dir(ROUTER) / "ledger.sqlite3"
        self._store_path = path
        self._store_cls = LedgerStore
        self._lock = threading.Lock()
        self._last: Checkpoint | None = None
        self._tree: Any = None  # the LedgerTree over the store, extended at each head
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        #: Checkpoints published by this checkpointer (and the signed tree head of each).
        self.published: list[Checkpoint] = []
        self.tree_heads: list[Any] = []

    def publish_now(self, *, force: bool = False) -> Checkpoint | None:
        """Sync the store and publish a signed head and tree head (if it grew, or ``force``)."""
        from broker.ledger.receipt import LedgerTree
        from broker.ledger.witness import TREEHEAD_KIND, send_note, tree_head_note

        keys = self.keys.current()
        if keys is None:
            return None
        with self._lock:
            store = self._store_cls(self._store_path)
            try:
                store.sync(self.settings, self.codec, timeout=30, idle=0.3, checkpoints=False)
                count, head = store.head()
                offset = store.next_offset
                grew = force or self._last is None or self._last.count != count
                if grew:
                    self._tree = LedgerTree.of(store) if self._tree is None else self._tree
                    tree = self._tree.extend(store)
                else:
                    tree = None
            finally:
                store.close()
            if tree is None:
                return None
            checkpoint = Checkpoint(count, head, offset, ROUTER, now_ms())
            future = publish_checkpoint(self.producer, self.topic, checkpoint, keys)
            note = tree_head_note(tree, self.settings.topic_names().ledger, keys)
            self.tree_heads.append(note)
            send_note(self.producer, self.topic, TREEHEAD_KIND, ROUTER, note)
            self.producer.flush(30)
            if future.failed():
                raise KafkaBrokerError(
                    f"checkpoint not published: {type(future.exception).__name__}"
                )
            self._last = checkpoint
            self.published.append(checkpoint)
            log.info("checkpoint published: %d entries", checkpoint.count)
            return checkpoint

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish_now()
            except (ReferralError, KafkaError, OSError, sqlite3.Error) as exc:
                log.warning("checkpoint failed, retrying later: %s", type(exc).__name__)

    def start(self) -> Checkpointer:
        """Publish periodically in a thread until :meth:`stop`."""
        if self._thread is None and self.keys.current() is not None:
            self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)
            self._thread.start()
        return self

    def stop(self, *, final: bool = True) -> None:
        """Stop the thread; with ``final``, publish the head once more on the way out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            self._thread = None
            if final:
                try:
                    self.publish_now()
                except (ReferralError, KafkaError, OSError, sqlite3.Error) as exc:
                    log.warning("final checkpoint failed: %s", type(exc).__name__)


#: ``referral.kind`` of the router's signed tree heads and the members' cosignatures of them.
TREEHEAD = "treehead"
NOTE_KINDS = (TREEHEAD, "cosignature")


class HeadWatcher:
    """An organisation's connector keeps every valid checkpoint it sees (:class:`HeadStore`).

    Polls the checkpoints topic every ``interval`` seconds in a thread; a
    checkpoint whose signature does not hold is counted and not kept.
    """

    def __init__(
        self,
        settings: Settings,
        org_id: str,
        trust: LiveTrust,
        *,
        interval: float = 2.0,
        witness: WitnessParts | None = None,
    ) -> None:
        self.settings = settings
        self.org_id = org_id
        self.trust = trust
        self.interval = interval
        self.store = HeadStore.for_org(settings, org_id)
        self.refused = 0
        #: With ``witness``, the organisation cosigns the router's tree heads it can check.
        self.witness = witness
        self._waiting: list[bytes] = []
        self._consumer: KafkaConsumer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> int:
        """Read new checkpoint records; how many were kept."""
        if self._consumer is None:
            self._consumer = clients.consumer(
                self.settings, group_id=None, role=f"heads-{self.org_id}"
            )
        kept = refused = 0
        first_reason = ""
        position = self.store.next_offset
        for offset, value, headers in read_checkpoints(
            self.settings, start=position, consumer=self._consumer, timeout=5, idle=0.2
        ):
            position = offset + 1
            kind = header(headers, Headers.RECORD_KIND)
            if kind in NOTE_KINDS:
                if kind == TREEHEAD and self.witness is not None and len(self._waiting) < 100:
                    self._waiting.append(value)
                continue
            try:
                checkpoint = Checkpoint.verified(value, headers, self.trust.current())
            except (SecurityError, CodecError) as exc:
                refused += 1
                first_reason = first_reason or (str(exc).splitlines() or [""])[0][:200]
                continue
            kept += self.store.add(checkpoint, value, headers)
        self.store.set_next_offset(position)
        if self._waiting and self.witness is not None:
            self._waiting = self.witness.witness(self.org_id, self._waiting, self.trust.current())
        if refused:
            # One line per poll, however many forgeries a writer to the topic sent.
            self.refused += refused
            log.warning(
                "%s refused %d checkpoint(s) (up to offset %d); the first: %s",
                self.org_id,
                refused,
                position - 1,
                first_reason,
            )
        return kept

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except (ReferralError, KafkaError, OSError, sqlite3.Error) as exc:
                log.warning("%s could not read checkpoints: %s", self.org_id, type(exc).__name__)

    def start(self) -> HeadWatcher:
        """Watch in a thread until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"{self.org_id}-heads", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching and close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self.store.close()
        if self.witness is not None:
            self.witness.book.close()
