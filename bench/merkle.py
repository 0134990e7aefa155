"""The ledger's Merkle tree: append rate, proof size at 10 M entries, proof time.

``python -m bench.merkle [--leaves N] [--proofs K]``: appends N leaves (each a
synthetic ledger-entry leaf of ~400 bytes, the size of a real one) to a
:class:`~broker.ledger.merkle.MerkleTree`, timing the appends; then makes and
verifies K inclusion proofs and K consistency proofs at random indices and sizes.
The proof size at 10 M entries is computed (a proof has ⌈log₂ n⌉ hashes at most),
and so is the receipt size it gives (``schemas/README.md``). With ``--store M`` it
also chains M handover events into a real :class:`~broker.ledger.store.LedgerStore`
(records of 50 events, as the router's batches) and builds the tree over it, as
``referral receipt`` does. One JSON line out.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from broker.ledger.events import handover_event
from broker.ledger.merkle import MerkleTree, verify_consistency, verify_inclusion
from broker.ledger.receipt import LedgerTree
from broker.ledger.store import LedgerStore

#: A receipt without its record, less its 24-hash proof's 1,024 base64 characters (measured:
#: 1,897 bytes in tests/broker/ledger/test_receipt.py).
RECEIPT_REST_BYTES = 1897 - 1024


def _us(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 1),
    }


def store_figures(events: int, per_record: int = 50) -> dict[str, Any]:
    """Chain ``events`` synthetic handovers into a fresh store; the append and tree rates."""
    with tempfile.TemporaryDirectory() as tmp, LedgerStore(Path(tmp) / "ledger.sqlite3") as store:
        records = [
            [
                handover_event(
                    "ROUTED",
                    referral_id=str(uuid.uuid4()),
                    case_id="case-bench",
                    actor="router",
                    from_party="hl-a",
                    to_party="police-nl",
                    topic="referrals.to.NL",
                    partition=0,
                    offset=r * per_record + i,
                )
                for i in range(per_record)
            ]
            for r in range(events // per_record)
        ]
        start, cpu = time.perf_counter(), time.process_time()
        for offset, batch in enumerate(records):
            store.append(batch, offset, value=b"x" * 900, headers=[])
        append_s, append_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        tree = LedgerTree.of(store)
        tree_s, tree_cpu = time.perf_counter() - start, time.process_time() - cpu
        n = len(tree.tree)
    return {
        "store_entries": n,
        "store_append_per_s": round(n / append_s),
        "store_append_per_cpu_s": round(n / append_cpu),
        "store_tree_build_s": round(tree_s, 2),
        "store_tree_build_cpu_s": round(tree_cpu, 2),
    }


def main() -> None:
    """Run the benchmark; print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2_000)
    parser.add_argument("--store", type=int, default=0, help="Events chained into a store.")
    args = parser.parse_args()
    rng = random.Random(21)
    template = bytes(rng.getrandbits(8) for _ in range(400))
    leaves = [i.to_bytes(8, "big") + template for i in range(args.leaves)]
    tree = MerkleTree()
    start = time.perf_counter()
    for leaf in leaves:
        tree.append(leaf)
    append_s = time.perf_counter() - start
    n = len(tree)
    make, check, cmake, ccheck = [], [], [], []
    root = tree.root()
    for _ in range(args.proofs):
        index = rng.randrange(n)
        t0 = time.perf_counter()
        proof = tree.inclusion_proof(index)
        t1 = time.perf_counter()
        verify_inclusion(index, n, tree.leaf(index), proof, root)
        t2 = time.perf_counter()
        make.append(t1 - t0)
        check.append(t2 - t1)
        first = rng.randrange(1, n)
        old = tree.root(first)
        t0 = time.perf_counter()
        cproof = tree.consistency_proof(first)
        t1 = time.perf_counter()
        verify_consistency(first, n, old, root, cproof)
        t2 = time.perf_counter()
        cmake.append(t1 - t0)
        ccheck.append(t2 - t1)
    at_10m = (10_000_000 - 1).bit_length()
    print(
        json.dumps(
            {
                "leaves": n,
                "append_per_s": round(n / append_s),
                "proof_hashes_at_n": len(tree.inclusion_proof(0)),
                "proof_hashes_at_10m": at_10m,
                "proof_bytes_at_10m": at_10m * 32,
                "receipt_bytes_at_10m_without_record": RECEIPT_REST_BYTES
                + 4 * ((at_10m * 32 + 2) // 3),
                "inclusion_make": _us(make),
                "inclusion_verify": _us(check),
                "consistency_make": _us(cmake),
                "consistency_verify": _us(ccheck),
                **(store_figures(args.store) if args.store else {}),
            }
        )
    )


if __name__ == "__main__":
    main()
