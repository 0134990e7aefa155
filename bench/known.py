"""Known-content benchmark: OPRF cost per item, and token lookups in a 1,000,000-token index.

``python -m bench.known [--tokens 1000000] [--rate 100] [--seconds 20] [--json]``:

1. evaluation cost: N synthetic items (a SHA-256, a SHA-1, an MD5 and a URL each) run
   through ``blind_batch`` → ``Evaluator.evaluate`` → ``unblind`` in batches; CPU µs per
   token for the origin (blind + finalize) and the evaluator (checks + BlindEvaluate);
2. PDQ: 10,000 synthetic pairs (0–31 and 40–128 flipped bits) through ``PdqIndex``
   in indexes of 1,000 originals: recall, false-match rate, share of unconfirmed
   candidates; and the same through ``MatchIndex.near`` (what a member's lookup runs):
   confirmed with both hashes held, and the share of possible near-duplicates where
   only the earlier holder's entries are held (``--pdq-only``: just these);
3. lookups: an index of ``--tokens`` tokens (random 32-byte values: an OPRF output is
   indistinguishable from them, and deriving a million real ones would take minutes of
   CPU) in a Python dict and in SQLite (a file, ``WITHOUT ROWID``, token primary key);
   one lookup is one item's four tokens, at a steady ``--rate`` per second, half of the
   items known; latency from each lookup's scheduled time (open loop), p50/p99/max.

No test asserts on these figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from bench.procstat import percentile
from broker.known import oprf
from broker.known.index import NEAR, POSSIBLE, MatchIndex, OwnPdq
from broker.known.normalise import hash_input, url_input
from broker.known.pdq import MAX_DISTANCE, PdqIndex, chunk_inputs, group_reference
from broker.known.tokens import (
    TOKEN_BYTES,
    Evaluator,
    EvaluatorKey,
    KeyRing,
    RateLimit,
    Token,
    blind_batch,
    unblind,
)
from broker.known.wire import MatchRecord

TOKENS_PER_ITEM = 4
CLASSIFICATIONS = ("BASELINE", "NATIONAL", "NOT_ILLEGAL")
STATUSES = ("REMOVED", "NOTIFIED", "OPEN")


def _item_inputs(rng: random.Random, n: int) -> list[bytes]:
    inputs = []
    for i in range(n):
        seed = rng.randbytes(16)
        inputs += [
            hash_input("sha256", hashlib.sha256(seed).hexdigest()),
            hash_input("sha1", hashlib.sha1(seed).hexdigest()),
            hash_input("md5", hashlib.md5(seed).hexdigest()),
            url_input(f"https://host-{i % 97}.example.org/{seed.hex()}"),
        ]
    return inputs


def evaluation_cost(items: int, batch: int) -> dict[str, float]:
    """CPU µs per token for each side of the OPRF, over ``items`` items of four tokens."""
    inputs = _item_inputs(random.Random(1), items)
    key = EvaluatorKey.derive("bench", os.urandom(32))
    evaluator = Evaluator(
        KeyRing(key),
        RateLimit(len(inputs), 3600.0),
        lambda: 0.0,
    )
    blind_s = evaluate_s = finalize_s = 0.0
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        t0 = time.process_time()
        pending, request = blind_batch("hl-bench", chunk)
        t1 = time.process_time()
        response = evaluator.evaluate(request)
        t2 = time.process_time()
        tokens = unblind(pending, response)
        t3 = time.process_time()
        assert len(tokens) == len(chunk)
        blind_s, evaluate_s, finalize_s = (
            blind_s + t1 - t0,
            evaluate_s + t2 - t1,
            finalize_s + t3 - t2,
        )
    n = len(inputs)
    t0 = time.process_time()
    for item in inputs[:1000]:
        oprf.evaluate(key.secret, item)
    direct_us = (time.process_time() - t0) / min(n, 1000) * 1e6
    return {
        "tokens": n,
        "blind_us": blind_s / n * 1e6,
        "evaluate_us": evaluate_s / n * 1e6,
        "finalize_us": finalize_s / n * 1e6,
        "origin_us": (blind_s + finalize_s) / n * 1e6,
        "total_us": (blind_s + evaluate_s + finalize_s) / n * 1e6,
        "per_item_us": (blind_s + evaluate_s + finalize_s) / n * 1e6 * TOKENS_PER_ITEM,
        "key_holder_evaluate_us": direct_us,
    }


def pdq_figures(pairs: int, group: int = 1000) -> dict[str, float]:
    """Recall and false-match rate of the PDQ multi-index over synthetic pairs."""
    key = EvaluatorKey.derive("bench-pdq", os.urandom(32))
    chunk_token: Callable[[bytes], Token] = cache(key.token)
    rng = random.Random(24)
    near = far = hit_near = hit_far = unrelated = candidates = compared = 0
    t0 = time.process_time()
    for start in range(0, pairs, group):
        index, real, queries = PdqIndex(), {}, []
        for n in range(start, min(start + group, pairs)):
            bits = n % (MAX_DISTANCE + 1) if n % 2 == 0 else rng.randint(40, 128)
            original = rng.randbytes(32)
            mask = sum(1 << p for p in rng.sample(range(256), bits))
            variant = (int.from_bytes(original, "big") ^ mask).to_bytes(32, "big")
            index.add(f"i{n}", [chunk_token(c) for c in chunk_inputs(original)])
            real[f"i{n}"] = original
            queries.append((f"i{n}", variant, bits))
        for item, variant, bits in queries:
            tokens = [chunk_token(c) for c in chunk_inputs(variant)]
            candidates += len(index.candidates(tokens))
            compared += len(queries)
            hits = dict(index.near(variant, tokens, real.get))
            flagged = item in hits
            unrelated += len(hits) - flagged
            if bits <= MAX_DISTANCE:
                near, hit_near = near + 1, hit_near + flagged
            else:
                far, hit_far = far + 1, hit_far + flagged
    return {
        "pairs": pairs,
        "recall": hit_near / near,
        "false_match_rate": hit_far / far,
        "unrelated_matches": unrelated,
        "candidate_share": candidates / compared,
        "cpu_s": time.process_time() - t0,
    }


def pdq_index_figures(pairs: int, group: int = 1000) -> dict[str, float]:
    """The same kind of pairs through the members' ``MatchIndex`` (SQLite), as ``lookup``
    meets them: confirmed where the looker holds both hashes, possible where it holds only
    its own (the earlier holder's entries alone)."""
    key = EvaluatorKey.derive("bench-pdq", os.urandom(32))
    chunk = cache(lambda c: key.token(c).value)
    rng = random.Random(42)
    near = far = confirmed = exact_distance = false = possible_near = possible_far = 0
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pdq-index-") as tmp:
        for start in range(0, pairs, group):
            both = MatchIndex(Path(tmp) / f"both-{start}.sqlite3")  # e.g. the recipient of both
            alone = MatchIndex(Path(tmp) / f"alone-{start}.sqlite3")  # e.g. the later origin
            queries = []
            for n in range(start, min(start + group, pairs)):
                bits = n % (MAX_DISTANCE + 1) if n % 2 == 0 else rng.randint(40, 128)
                original = rng.randbytes(32)
                mask = sum(1 << p for p in rng.sample(range(256), bits))
                variant = (int.from_bytes(original, "big") ^ mask).to_bytes(32, "big")
                tokens = [chunk(c) for c in chunk_inputs(original)]
                ref = group_reference(tokens, f"a{n}", "i")
                entries = [
                    MatchRecord(key.key_id, t.hex(), "hl-a", ref, "pdq", "AMBER", 1, "BASELINE")
                    for t in tokens
                ]
                both.add(entries)
                alone.add(entries)
                both.add_own_pdq([OwnPdq(f"a{n}", "i", key.key_id, ref, original)])
                queries.append((n, variant, bits))
            for n, variant, bits in queries:
                tokens = [chunk(c) for c in chunk_inputs(variant)]
                mine = group_reference(tokens, f"b{n}", "i")
                began = time.perf_counter()
                hit = both.near(key.key_id, tokens, variant, mine, 2)
                latencies.append((time.perf_counter() - began) * 1000)
                maybe = alone.near(key.key_id, tokens, variant, mine, 2)
                is_possible = maybe is not None and maybe.kind == POSSIBLE
                if bits <= MAX_DISTANCE:
                    near += 1
                    confirmed += hit is not None and hit.kind == NEAR
                    exact_distance += hit is not None and hit.distance == bits
                    possible_near += is_possible
                else:
                    far += 1
                    false += hit is not None
                    possible_far += is_possible
            both.close()
            alone.close()
    return {
        "pairs": pairs,
        "recall": confirmed / near,
        "right_distance": exact_distance / near,
        "false_match_rate": false / far,
        "possible_near": possible_near / near,
        "possible_far": possible_far / far,
        "lookup_p50_ms": percentile(latencies, 50),
        "lookup_p99_ms": percentile(latencies, 99),
    }


def _lookups(
    lookup: Callable[[Sequence[bytes]], list[Any]],
    known: list[bytes],
    rate: float,
    seconds: float,
) -> dict[str, float]:
    rng = random.Random(7)
    count = int(rate * seconds)
    latencies, service, hits = [], [], 0
    start = time.perf_counter()
    for i in range(count):
        if i % 2 == 0:  # a known item: four tokens of which one is indexed
            tokens = [known[rng.randrange(len(known))]] + [rng.randbytes(32) for _ in range(3)]
        else:
            tokens = [rng.randbytes(32) for _ in range(TOKENS_PER_ITEM)]
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        began = time.perf_counter()
        hits += bool(lookup(tokens))
        done = time.perf_counter()
        latencies.append((done - scheduled) * 1000)
        service.append((done - began) * 1000)
    return {
        "lookups": count,
        "hit_share": hits / count,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "service_p50_ms": percentile(service, 50),
        "service_p99_ms": percentile(service, 99),
    }


def index_figures(tokens: int, rate: float, seconds: float) -> dict[str, Any]:
    """Build a dict and an SQLite index of ``tokens`` tokens; lookup latency at ``rate``/s."""
    rng = random.Random(3)
    values = [rng.randbytes(TOKEN_BYTES) for _ in range(tokens)]
    rows = [
        (v, "k1", f"hl-{i % 3}", CLASSIFICATIONS[i % 3], STATUSES[i % 3], "2026-11-02")
        for i, v in enumerate(values)
    ]
    known = values[:: max(1, tokens // 100_000)]
    out: dict[str, Any] = {"tokens": tokens, "rate": rate}

    t0 = time.perf_counter()
    memory = {row[0]: row[1:] for row in rows}
    out["dict_build_s"] = time.perf_counter() - t0
    out["dict"] = _lookups(lambda ts: [memory[t] for t in ts if t in memory], known, rate, seconds)
    memory.clear()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "match-index.sqlite"
        db = sqlite3.connect(path)
        db.execute(
            "CREATE TABLE match_token (token BLOB PRIMARY KEY, key_id TEXT, holder TEXT,"
            " classification TEXT, case_status TEXT, assessed_on TEXT) WITHOUT ROWID"
        )
        t0 = time.perf_counter()
        with db:
            db.executemany("INSERT INTO match_token VALUES (?,?,?,?,?,?)", rows)
        out["sqlite_build_s"] = time.perf_counter() - t0
        out["sqlite_mb"] = path.stat().st_size / 1e6
        db.close()
        db = sqlite3.connect(path)  # a fresh connection: its page cache starts empty
        query = (
            "SELECT holder, classification, case_status, assessed_on FROM match_token"
            " WHERE key_id = 'k1' AND token IN (?,?,?,?)"
        )
        out["sqlite"] = _lookups(lambda ts: db.execute(query, ts).fetchall(), known, rate, seconds)
        db.close()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Run the three measurements and print them (as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.known")
    parser.add_argument("--items", type=int, default=1000, help="items for the OPRF cost")
    parser.add_argument("--batch", type=int, default=100, help="tokens per evaluation batch")
    parser.add_argument("--pairs", type=int, default=10_000, help="PDQ pairs")
    parser.add_argument("--tokens", type=int, default=1_000_000, help="tokens in the index")
    parser.add_argument("--rate", type=float, default=100.0, help="lookups per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of lookups")
    parser.add_argument("--pdq-only", action="store_true", help="Only the PDQ figures.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "load_before": os.getloadavg()[0],
    }
    if not args.pdq_only:
        result["evaluation"] = evaluation_cost(args.items, args.batch)
    result["pdq"] = pdq_figures(args.pairs)
    result["pdq_index"] = pdq_index_figures(args.pairs)
    if not args.pdq_only:
        result["index"] = index_figures(args.tokens, args.rate, args.seconds)
    result["load_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"machine {result['machine']}, load {result['load_before']:.2f}→{result['load_after']:.2f}"
    )
    _print_pdq(result["pdq"], result["pdq_index"])
    if not args.pdq_only:
        _print_rest(result["evaluation"], result["index"])


def _print_pdq(pdq: dict[str, Any], px: dict[str, Any]) -> None:
    print(
        f"PDQ {pdq['pairs']:,} pairs: recall {pdq['recall']:.4f}, false-match rate"
        f" {pdq['false_match_rate']:.4f}, unrelated matches {pdq['unrelated_matches']},"
        f" unconfirmed candidates {pdq['candidate_share']:.1%} of the index"
    )
    print(
        f"PDQ through MatchIndex, {px['pairs']:,} pairs: recall {px['recall']:.4f} (right"
        f" distance {px['right_distance']:.4f}), false-match rate {px['false_match_rate']:.4f};"
        f" without the earlier hash: possible {px['possible_near']:.4f} of near,"
        f" {px['possible_far']:.4f} of far pairs; near() p50 {px['lookup_p50_ms']:.2f} ms,"
        f" p99 {px['lookup_p99_ms']:.2f} ms"
    )


def _print_rest(ev: dict[str, Any], ix: dict[str, Any]) -> None:
    print(
        f"OPRF per token (CPU µs, {ev['tokens']:,} tokens): blind {ev['blind_us']:.0f},"
        f" evaluate {ev['evaluate_us']:.0f}, finalize {ev['finalize_us']:.0f};"
        f" origin {ev['origin_us']:.0f}, total {ev['total_us']:.0f};"
        f" per item of {TOKENS_PER_ITEM} tokens {ev['per_item_us']:.0f};"
        f" key holder's Evaluate {ev['key_holder_evaluate_us']:.0f}"
    )
    for name in ("dict", "sqlite"):
        lk = ix[name]
        print(
            f"{name} index of {ix['tokens']:,} tokens at {ix['rate']:g}/s ({lk['lookups']:,}"
            f" lookups of {TOKENS_PER_ITEM} tokens, {lk['hit_share']:.0%} hits):"
            f" p50 {lk['p50_ms']:.3f} ms, p99 {lk['p99_ms']:.3f} ms, max {lk['max_ms']:.2f} ms;"
            f" the query alone p50 {lk['service_p50_ms']:.3f}, p99 {lk['service_p99_ms']:.3f} ms"
        )
    print(
        f"build: dict {ix['dict_build_s']:.1f} s, SQLite {ix['sqlite_build_s']:.1f} s"
        f" ({ix['sqlite_mb']:.0f} MB)"
    )


if __name__ == "__main__":
    main()
