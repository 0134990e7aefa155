"""PDQ multi-index tokens: 0–31 flipped bits are near-duplicates, 40 or more are not."""

from __future__ import annotations

import random
from functools import cache

import pytest

from broker.known.errors import BadMatchInput
from broker.known.pdq import (
    CHUNKS,
    MAX_DISTANCE,
    PdqIndex,
    chunk_inputs,
    confirm,
    hamming,
    parse_pdq,
)
from broker.known.tokens import EvaluatorKey, Token

KEY = EvaluatorKey.derive("pdq-test", bytes(range(32)))


@cache
def _chunk_token(chunk_input: bytes) -> Token:
    # Only 32 × 256 chunk inputs exist: the real OPRF, computed once per distinct input.
    return KEY.token(chunk_input)


def _tokens(pdq: bytes) -> list[Token]:
    return [_chunk_token(i) for i in chunk_inputs(pdq)]


def _flip(rng: random.Random, pdq: bytes, bits: int) -> bytes:
    mask = 0
    for position in rng.sample(range(256), bits):
        mask |= 1 << position
    return (int.from_bytes(pdq, "big") ^ mask).to_bytes(32, "big")


def _pairs(rng: random.Random, n: int) -> list[tuple[bytes, bytes, int]]:
    out = []
    for i in range(n):
        bits = i % (MAX_DISTANCE + 1) if i % 2 == 0 else rng.randint(40, 128)
        original = rng.randbytes(32)
        out.append((original, _flip(rng, original, bits), bits))
    return out


def test_ten_thousand_pairs_recall_and_false_matches() -> None:
    rng = random.Random(24)
    pairs = _pairs(rng, 10_000)
    flagged_near = flagged_far = near = far = unrelated_hits = 0
    candidates_seen = 0
    for start in range(0, len(pairs), 1000):  # indexes of 1,000 originals each
        group = pairs[start : start + 1000]
        index = PdqIndex()
        real = {}
        for n, (original, _, _) in enumerate(group):
            index.add(f"item-{n}", _tokens(original))
            real[f"item-{n}"] = original
        for n, (_, variant, bits) in enumerate(group):
            tokens = _tokens(variant)
            candidates_seen += len(index.candidates(tokens))
            hits = dict(index.near(variant, tokens, real.get))
            flagged = f"item-{n}" in hits
            assert not flagged or hits[f"item-{n}"] == bits
            unrelated_hits += len(hits) - flagged
            if bits <= MAX_DISTANCE:
                near, flagged_near = near + 1, flagged_near + flagged
            else:
                far, flagged_far = far + 1, flagged_far + flagged
    recall, false_match_rate = flagged_near / near, flagged_far / far
    assert (near, far) == (5000, 5000)
    assert recall == 1.0
    assert false_match_rate == 0.0
    assert unrelated_hits == 0
    # Unconfirmed, about 1 - (255/256)^32 ≈ 11.8 % of unrelated items share a chunk.
    assert 0.09 < candidates_seen / (len(pairs) * 1000) < 0.15


@pytest.mark.parametrize("bits", [0, 1, 16, 31])
def test_every_distance_up_to_31_shares_a_chunk_token(bits: int) -> None:
    rng = random.Random(bits)
    for _ in range(200):
        original = rng.randbytes(32)
        variant = _flip(rng, original, bits)
        assert set(_tokens(original)) & set(_tokens(variant))


def test_chunks_are_tokenised_with_their_index() -> None:
    same_bytes = bytes([0xAB]) * 32
    tokens = _tokens(same_bytes)
    assert len(set(tokens)) == CHUNKS  # the same byte at two positions gives two tokens
    assert chunk_inputs(same_bytes)[3] == b"pdq8:03:ab"


def test_confirm_keeps_only_real_near_duplicates_nearest_first() -> None:
    rng = random.Random(1)
    query = rng.randbytes(32)
    near5, near31 = _flip(rng, query, 5), _flip(rng, query, 31)
    far = _flip(rng, query, 32)
    assert hamming(query, near31) == 31
    assert confirm(query, [("c", far), ("b", near31), ("a", near5)]) == [("a", 5), ("b", 31)]


def test_unknown_real_hashes_are_not_confirmed() -> None:
    rng = random.Random(2)
    original = rng.randbytes(32)
    index = PdqIndex()
    index.add("item", _tokens(original))
    assert index.near(original, _tokens(original), lambda _: None) == []
    assert index.near(original, _tokens(original), {"item": original}.get) == [("item", 0)]


@pytest.mark.parametrize("value", ["ab" * 31, "zz" * 32, ""])
def test_bad_pdq_hashes_are_refused(value: str) -> None:
    with pytest.raises(BadMatchInput, match="64 hex digits"):
        parse_pdq(value)


def test_parse_pdq_round_trips() -> None:
    raw = random.Random(3).randbytes(32)
    assert parse_pdq(raw.hex().upper()) == raw
