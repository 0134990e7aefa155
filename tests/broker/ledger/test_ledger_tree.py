"""The Merkle tree over a ledger store, extended as the store grows (checkpointer, witness)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from broker.errors import LedgerStoreError
from broker.ledger.events import handover_event
from broker.ledger.merkle import leaf_hash
from broker.ledger.receipt import LedgerTree, canonical, leaf_of
from broker.ledger.store import LedgerStore


def _record(n: int, offset: int) -> list[dict[str, object]]:
    return [
        handover_event(
            "ROUTED", referral_id=str(uuid.uuid4()), case_id="case-t", actor="router",
            from_party="hl-a", to_party="police-nl", topic="referrals.to.NL", partition=0,
            offset=offset * 10 + i,
        )
        for i in range(n)
    ]  # fmt: skip


def test_an_extended_tree_equals_one_built_afresh_and_a_shorter_store_rebuilds_it(
    tmp_path: Path,
) -> None:
    with LedgerStore(tmp_path / "a.sqlite3") as store:
        for offset in range(3):
            store.append(_record(4, offset), offset, value=f"r{offset}".encode(), headers=[])
        kept = LedgerTree.of(store)
        first_root = kept.tree.root()
        for offset in range(3, 7):
            store.append(_record(3, offset), offset, value=f"r{offset}".encode(), headers=[])
        assert kept.extend(store) is kept
        fresh = LedgerTree.of(store)
        assert len(kept.tree) == len(fresh.tree) == 24
        assert kept.tree.root() == fresh.tree.root()
        assert kept.tree.root(12) == first_root
        entry, leaf = leaf_of(store, 13)
        assert entry.index == 13
        assert kept.tree.leaf(13) == fresh.tree.leaf(13)
        assert leaf["ledger_offset"] == entry.ledger_offset
        assert kept.tree.leaf(13) == leaf_hash(canonical(leaf))  # the leaf of entry 13
        with pytest.raises(LedgerStoreError, match="no entry 24"):
            leaf_of(store, 24)
    with LedgerStore(tmp_path / "b.sqlite3") as shorter:
        shorter.append(_record(2, 0), 0, value=b"r0", headers=[])
        kept.extend(shorter)
        assert len(kept.tree) == 2
        assert kept.tree.root() == LedgerTree.of(shorter).tree.root()
