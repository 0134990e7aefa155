"""A portable receipt: one ledger entry, proved included in a signed Merkle tree head."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import LedgerStoreError
from broker.ledger.merkle import MerkleTree
from broker.ledger.store import LedgerEntry, LedgerStore
from broker.ledger.treehead import NoteSignature, SignedNote, TreeHead, sign_tree_head
from broker.security.keys import TrustStore
from broker.security.signing import CONTEXT_HEADER, KEY_HEADER, SIGNATURE_HEADER

__all__ = [
    "RECEIPT_FORMAT",
    "LedgerTree",
    "canonical",
    "entry_leaf",
    "leaf_of",
    "ledger_origin",
    "receipt",
]

#: The ``format`` of a receipt document.
RECEIPT_FORMAT = "referral-broker/receipt/v1"

_FIELDS = (
    "event_id", "referral_id", "case_id", "event", "actor", "from_party", "to_party",
    "topic", "partition", "offset", "reason", "trace_id", "span_id",
)  # fmt: skip


def canonical(data: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, ASCII only."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def ledger_origin(ledger_topic: str) -> str:
    """The checkpoint origin line of the log over ``ledger_topic``."""
    return f"referral-broker/ledger/{ledger_topic}"


def entry_leaf(entry: LedgerEntry, record_value: bytes) -> dict[str, Any]:
    """The leaf object of one entry (its canonical JSON is the leaf's bytes)."""
    r = entry.record
    out: dict[str, Any] = {name: getattr(r, name) for name in _FIELDS}
    out["at_ms"] = round(r.at.timestamp() * 1000)
    out["ledger_offset"] = entry.ledger_offset
    out["record_sha256"] = hashlib.sha256(record_value).hexdigest()
    return out


@dataclass
class LedgerTree:
    """The Merkle tree over a store's entries, in index order; extended as the store grows."""

    tree: MerkleTree

    @classmethod
    def of(cls, store: LedgerStore) -> LedgerTree:
        """The tree over every entry of ``store``."""
        return cls(MerkleTree()).extend(store)

    def extend(self, store: LedgerStore) -> LedgerTree:
        """Append the entries ``store`` holds past this tree (rebuilt if the store is shorter)."""
        if len(store) < len(self.tree):
            self.tree = MerkleTree()
        records: dict[int, bytes] = {}
        for entry in store.entries(since=len(self.tree)):
            if entry.index != len(self.tree):
                raise LedgerStoreError(f"the ledger store has no entry {len(self.tree)}")
            if entry.ledger_offset not in records:
                records.clear()  # entries of one record are adjacent: keep only its value
                record = store.record(entry.ledger_offset)
                records[entry.ledger_offset] = record[0] if record else b""
            self.tree.append(canonical(entry_leaf(entry, records[entry.ledger_offset])))
        return self


def leaf_of(store: LedgerStore, index: int) -> tuple[LedgerEntry, dict[str, Any]]:
    """Entry ``index`` of ``store`` and its leaf object."""
    entry = store.entry(index)
    if entry is None:
        raise LedgerStoreError(f"the ledger store has no entry {index}")
    record = store.record(entry.ledger_offset)
    return entry, entry_leaf(entry, record[0] if record else b"")


def _raw(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def receipt(
    store: LedgerStore,
    index: int,
    *,
    origin: str,
    log_name: str,
    log_key: Ed25519PrivateKey,
    trust: TrustStore,
    cosignatures: tuple[tuple[str, bytes, NoteSignature], ...] = (),
    with_record: bool = True,
    published: tuple[SignedNote, int, dict[str, bytes]] | None = None,
) -> dict[str, Any]:
    """The receipt of entry ``index``: the tree head over the whole store, signed by ``log_key``.

    ``cosignatures`` are witnesses' cosignatures of that very head. ``published`` is instead
    a head the router published and members cosigned: (the note, its size, raw public keys of
    its signers). Without ``with_record`` the record is left out (``null``).
    """
    tree = LedgerTree.of(store).tree
    entry, leaf = leaf_of(store, index)
    size = len(tree)
    if published is not None:
        note, size, signers = published
        keys = {name: base64.b64encode(raw).decode() for name, raw in signers.items()}
        if tree.root(size) != TreeHead.parse(note.body).root:
            raise LedgerStoreError(f"the published head of {size} entries is not this store's")
    else:
        note = sign_tree_head(TreeHead(origin, size, tree.root()), log_name, log_key)
        keys = {log_name: _raw(log_key)}
    for name, raw, line in cosignatures:  # (witness, its raw public key, its cosignature)
        note = note.with_signature(line)
        keys[name] = base64.b64encode(raw).decode()
    stored = store.record(entry.ledger_offset)
    if stored is None:
        raise LedgerStoreError(f"entry {index}: its ledger record is not stored")
    value, headers = stored
    head = dict(headers)
    record: dict[str, Any] = {"value": base64.b64encode(value).decode()}
    if SIGNATURE_HEADER in head:
        record.update(
            sig=head[SIGNATURE_HEADER].decode("ascii"),
            key=head[KEY_HEADER].decode("ascii"),
            ctx=head[CONTEXT_HEADER].decode("ascii"),
        )
        actor = entry.record.actor
        for k in trust.keys_of(actor):
            if k.id == record["key"] and k.use == "sign":
                keys[actor] = base64.b64encode(k.raw).decode()
    proof = b"".join(tree.inclusion_proof(index, size))
    if not with_record:
        keys = {k: v for k, v in keys.items() if k != entry.record.actor or k == log_name}
    return {
        "format": RECEIPT_FORMAT,
        "entry": leaf,
        "index": index,
        "size": size,
        "proof": base64.b64encode(proof).decode(),
        "log": log_name,
        "checkpoint": note.encode().decode(),
        "record": record if with_record else None,
        "keys": keys,
    }
