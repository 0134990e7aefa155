"""Signed tree heads on the checkpoints topic, and the members who witness them."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from kafka import KafkaProducer

from broker.ledger.receipt import LedgerTree, ledger_origin
from broker.ledger.treehead import (
    NoteError,
    NoteSignature,
    SignedNote,
    TreeHead,
    WitnessState,
    sign_tree_head,
    verify_cosignature,
    verify_tree_head,
    witness_cosign,
)
from broker.security.keys import ROUTER, OrgKeys, TrustStore
from broker.wire.topics import Headers, header

__all__ = [
    "COSIGNATURE_KIND",
    "TREEHEAD_KIND",
    "HeadReport",
    "Witness",
    "WitnessBook",
    "WitnessParts",
    "Witnessing",
    "cosigned_note",
    "member_key",
    "router_keys",
    "send_note",
    "tree_head_note",
    "witnessing",
]

log = logging.getLogger("referral.ledger.witness")

#: The ``referral.kind`` header of a signed tree head (the router's) on the checkpoints topic.
TREEHEAD_KIND = b"treehead"
#: ... of a member's cosignature of one (the note text and that one signature line).
COSIGNATURE_KIND = b"cosignature"


def router_keys(trust: TrustStore) -> list[Ed25519PublicKey]:
    """The router's signing keys the trust store holds (not revoked)."""
    return [
        Ed25519PublicKey.from_public_bytes(k.raw) for k in trust.keys_of(ROUTER) if k.use == "sign"
    ]


def member_key(trust: TrustStore, org: str) -> list[Ed25519PublicKey]:
    """An organisation's signing keys (not revoked)."""
    return [
        Ed25519PublicKey.from_public_bytes(k.raw) for k in trust.keys_of(org) if k.use == "sign"
    ]


def tree_head_note(tree: LedgerTree, ledger_topic: str, keys: OrgKeys) -> SignedNote:
    """The router's signed tree head over every entry of ``tree``."""
    head = TreeHead(ledger_origin(ledger_topic), len(tree.tree), tree.tree.root())
    return sign_tree_head(head, ROUTER, keys.signing)


def verified_head(note: SignedNote, trust: TrustStore) -> TreeHead:
    """The tree head if the router signed it with a key of the trust store; NoteError if not."""
    for key in router_keys(trust):
        try:
            return verify_tree_head(note, ROUTER, key)
        except NoteError:
            continue
    raise NoteError("the tree head carries no valid signature of the router")


def send_note(producer: KafkaProducer, topic: str, kind: bytes, by: str, note: SignedNote) -> Any:
    """Publish a tree head or a cosignature on the checkpoints topic (not awaited)."""
    return producer.send(
        topic, key=by.encode(), value=note.encode(), headers=[(Headers.RECORD_KIND, kind)]
    )


class WitnessBook:
    """What one member has cosigned and refused (in its ``heads.sqlite3``)."""

    def __init__(self, path: Path, org: str) -> None:
        self.org = org
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS witnessed (origin TEXT PRIMARY KEY,"
                " size INTEGER NOT NULL, root BLOB NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS refused_heads (note BLOB PRIMARY KEY,"
                " reason TEXT NOT NULL, at REAL NOT NULL)"
            )

    def state(self, origin: str) -> WitnessState | None:
        """The last head cosigned for ``origin``."""
        with self._lock:
            row = self._db.execute(
                "SELECT size, root FROM witnessed WHERE origin = ?", (origin,)
            ).fetchone()
        return WitnessState(origin, int(row[0]), bytes(row[1])) if row else None

    def cosigned(self, state: WitnessState) -> None:
        """Remember the head just cosigned."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO witnessed VALUES (?, ?, ?) ON CONFLICT(origin) DO UPDATE SET"
                " size = excluded.size, root = excluded.root",
                (state.origin, state.size, state.root),
            )

    def refused(self, note: bytes, reason: str) -> bool:
        """Keep a head refused as evidence; False if it was kept before."""
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO refused_heads VALUES (?, ?, ?)",
                (note, reason[:300], time.time()),
            )
            return cur.rowcount == 1

    def evidence(self) -> list[tuple[bytes, str]]:
        """Every head refused, with why."""
        with self._lock:
            rows = self._db.execute("SELECT note, reason FROM refused_heads ORDER BY at").fetchall()
        return [(bytes(n), str(r)) for n, r in rows]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class Witness:
    """One member's witness: cosigns a router tree head only if its own copy of the ledger
    gives the same root at that size and it extends the last head it cosigned."""

    def __init__(self, org: str, book: WitnessBook, ledger_topic: str) -> None:
        self.org = org
        self.book = book
        self.origin = ledger_origin(ledger_topic)
        self.cosigned = 0
        self.refused = 0

    def consider(
        self, note_bytes: bytes, own: LedgerTree, trust: TrustStore, keys: OrgKeys
    ) -> SignedNote | None:
        """The cosignature note for ``note_bytes``, or None (not yet comparable, or refused)."""
        try:
            note = SignedNote.parse(note_bytes)
            head = verified_head(note, trust)
        except NoteError:
            return None  # not the router's: anyone may write to the topic; nothing to witness
        if head.origin != self.origin:
            return None
        if head.size > len(own.tree):
            return None  # its copy is behind: considered again once synced
        state = self.book.state(self.origin)
        if state is not None and head.size <= state.size and head.root == own.tree.root(head.size):
            return None  # an older true head again: nothing new to cosign
        if own.tree.root(head.size) != head.root:
            self._refuse(note_bytes, f"root at {head.size} entries is not the ledger's")
            return None
        proof = own.tree.consistency_proof(state.size, head.size) if state else []
        try:
            cosig, new = witness_cosign(
                state, note, ROUTER, _signer_key(note, trust), proof, self.org, keys.signing,
                int(time.time()),
            )  # fmt: skip
        except NoteError as exc:
            self._refuse(note_bytes, str(exc))
            return None
        self.book.cosigned(new)
        self.cosigned += 1
        return SignedNote(note.body, (cosig.signature,))

    def _refuse(self, note_bytes: bytes, reason: str) -> None:
        self.refused += 1
        if self.book.refused(note_bytes, reason):
            log.warning("%s refused to cosign a router tree head: %s", self.org, reason)


def _signer_key(note: SignedNote, trust: TrustStore) -> Ed25519PublicKey:
    for key in router_keys(trust):
        try:
            verify_tree_head(note, ROUTER, key)
            return key
        except NoteError:
            continue
    raise NoteError("the tree head carries no valid signature of the router")


@dataclass
class HeadReport:
    """One router tree head as the checkpoints topic and the members' evidence show it."""

    size: int
    root: bytes
    note: bytes
    cosigners: set[str] = field(default_factory=set)
    refused_by: set[str] = field(default_factory=set)


@dataclass
class Witnessing:
    """Every router tree head seen, who cosigned each, and the sizes with two roots."""

    heads: list[HeadReport]
    splits: dict[int, list[HeadReport]]

    def __str__(self) -> str:
        lines = []
        for size, two in sorted(self.splits.items()):
            roots = ", ".join(r.root.hex()[:12] for r in two)
            refusers = sorted(set().union(*(r.refused_by for r in two)))
            lines.append(
                f"split view at {size} entries: the router signed {len(two)} roots ({roots})"
                + (f"; refused by {', '.join(refusers)}" if refusers else "")
            )
        if self.heads:
            last = max(self.heads, key=lambda h: (h.size, len(h.cosigners)))
            lines.append(
                f"{len(self.heads)} tree head(s); the latest ({last.size} entries) cosigned by "
                f"{len(last.cosigners)}"
                + (f" ({', '.join(sorted(last.cosigners))})" if last.cosigners else "")
            )
        return "\n".join(lines)


def witnessing(
    records: Iterable[tuple[bytes, tuple[tuple[str, bytes], ...]]],
    trust: TrustStore,
    evidence: Iterable[tuple[str, bytes, str]] = (),
) -> Witnessing:
    """Tree heads and valid cosignatures of the checkpoints topic, with the members' evidence."""
    heads: dict[bytes, HeadReport] = {}
    cosigs: list[SignedNote] = []
    notes = [(value, header(headers, Headers.RECORD_KIND)) for value, headers in records]
    notes += [(note, "evidence:" + org) for org, note, _ in evidence]
    for value, kind in notes:
        try:
            note = SignedNote.parse(value)
        except NoteError:
            continue
        if kind == COSIGNATURE_KIND.decode():
            cosigs.append(note)
            continue
        try:
            head = verified_head(note, trust)
        except NoteError:
            continue
        report = heads.setdefault(note.body, HeadReport(head.size, head.root, value))
        if kind and kind.startswith("evidence:"):
            report.refused_by.add(kind.split(":", 1)[1])
    for note in cosigs:
        found = heads.get(note.body)
        for line in note.signatures if found is not None else ():
            for key in member_key(trust, line.name):
                try:
                    verify_cosignature(SignedNote(note.body, (line,)), line.name, key)
                except NoteError:
                    continue
                found.cosigners.add(line.name)  # type: ignore[union-attr]
    by_size: dict[int, list[HeadReport]] = {}
    for r in heads.values():
        by_size.setdefault(r.size, []).append(r)
    splits = {s: rs for s, rs in by_size.items() if len({r.root for r in rs}) > 1}
    return Witnessing(sorted(heads.values(), key=lambda r: r.size), splits)


def cosigned_note(
    report: HeadReport, records: Iterable[tuple[bytes, Any]], trust: TrustStore
) -> SignedNote:
    """The router's head with every valid cosignature line of it gathered from ``records``."""
    note = SignedNote.parse(report.note)
    lines: list[NoteSignature] = list(note.signatures)
    have = {s.name for s in lines}
    for value, headers in records:
        if header(headers, Headers.RECORD_KIND) != COSIGNATURE_KIND.decode():
            continue
        try:
            cos = SignedNote.parse(value)
        except NoteError:
            continue
        if cos.body != note.body:
            continue
        for line in cos.signatures:
            if line.name in have:
                continue
            for key in member_key(trust, line.name):
                try:
                    verify_cosignature(SignedNote(note.body, (line,)), line.name, key)
                except NoteError:
                    continue
                lines.append(line)
                have.add(line.name)
                break
    return SignedNote(note.body, tuple(lines))


class WitnessParts:
    """What a connector's head watcher needs to witness: its keys, a producer, a codec and
    its own copy of the ledger (``<state_dir>/orgs/<org>/ledger.sqlite3``)."""

    def __init__(
        self, settings: Any, keys: Any, producer: KafkaProducer, codec: Any, book: WitnessBook
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.producer = producer
        self.codec = codec
        self.book = book
        self._witness = Witness(book.org, book, settings.topic_names().ledger)
        self._tree: LedgerTree | None = None  # over the member's store, extended per poll

    @property
    def cosigned(self) -> int:
        """Heads cosigned so far."""
        return self._witness.cosigned

    @property
    def refused(self) -> int:
        """Heads refused so far."""
        return self._witness.refused

    def witness(self, org: str, notes: list[bytes], trust: TrustStore) -> list[bytes]:
        """Consider each tree head; cosign what holds; the ones to consider again later."""
        from broker.ledger.store import LedgerStore

        keys = self.keys.current()
        if keys is None:
            return []
        with LedgerStore(self.settings.org_dir(org) / "ledger.sqlite3") as store:
            store.sync(self.settings, self.codec, timeout=10, idle=0.3, checkpoints=False)
            own = LedgerTree.of(store) if self._tree is None else self._tree.extend(store)
            self._tree = own
        topic = self.settings.topic_names().checkpoints
        later = []
        for value in notes:
            cos = self._witness.consider(value, own, trust, keys)
            if cos is not None:
                send_note(self.producer, topic, COSIGNATURE_KIND, org, cos)
            elif _ahead(value, own, trust):
                later.append(value)
        self.producer.flush(30)
        return later


def _ahead(value: bytes, own: LedgerTree, trust: TrustStore) -> bool:
    try:
        return verified_head(SignedNote.parse(value), trust).size > len(own.tree)
    except NoteError:
        return False
