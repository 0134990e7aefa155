"""PDQ near-duplicates in the match index: confirmed with both hashes held, else only possible."""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import pytest

from broker.known.index import NEAR, POSSIBLE, MatchIndex, OwnPdq, OwnToken
from broker.known.pdq import chunk_inputs, chunk_kind, group_reference
from broker.known.tokens import EvaluatorKey, Token
from broker.known.wire import MatchRecord

KEY = EvaluatorKey.derive("pdq-index", bytes(range(32)))


@cache
def _token(chunk: bytes) -> Token:
    return KEY.token(chunk)


def _chunks(pdq: bytes) -> list[bytes]:
    return [_token(c).value for c in chunk_inputs(pdq)]


def _flip(rng: random.Random, pdq: bytes, bits: int) -> bytes:
    mask = sum(1 << p for p in rng.sample(range(256), bits))
    return (int.from_bytes(pdq, "big") ^ mask).to_bytes(32, "big")


def _hold(index: MatchIndex, rid: str, pdq: bytes, at_ms: int, *, keep_hash: bool = True) -> str:
    """Remember an item as one of the organisation's own; its chunk entries' reference."""
    tokens = _chunks(pdq)
    index.add_own(
        [OwnToken(rid, "i1", chunk_kind(n), KEY.key_id, t, at_ms) for n, t in enumerate(tokens)]
    )
    ref = group_reference(tokens, rid, "i1")
    if keep_hash:
        index.add_own_pdq([OwnPdq(rid, "i1", KEY.key_id, ref, pdq)])
    return ref


def _publish(index: MatchIndex, holder: str, rid: str, pdq: bytes, at_ms: int, tlp: str) -> None:
    tokens = _chunks(pdq)
    ref = group_reference(tokens, rid, "i1")
    index.add(
        MatchRecord(KEY.key_id, t.hex(), holder, ref, "pdq", tlp, at_ms, "BASELINE", "REMOVED")
        for t in tokens
    )


@pytest.mark.parametrize("bits", [0, 1, 7, 16, 24, 31])
def test_a_copy_within_31_bits_is_a_confirmed_near_duplicate(tmp_path: Path, bits: int) -> None:
    rng = random.Random(bits)
    original = rng.randbytes(32)
    index = MatchIndex(tmp_path / "known.sqlite3")
    _publish(index, "hl-a", "ref-a", original, 1000, "AMBER")
    _hold(index, "ref-a", original, 1000)  # the recipient received hl-a's referral too
    _hold(index, "ref-b", _flip(rng, original, bits), 2000)
    hit = index.lookup("ref-b", "i1")
    assert hit is not None
    assert (hit.kind, hit.distance, hit.holder, hit.classification) == (
        NEAR,
        bits,
        "hl-a",
        "BASELINE",
    )
    assert hit.to_json()["kind"] == "near-duplicate"
    assert hit.to_json()["distance"] == bits
    assert hit.line().startswith(f"near-duplicate (distance {bits} of 256) of an item previously")
    assert index.lookup("ref-a", "i1") is None  # the earlier item is not marked by the later


def test_a_copy_forty_bits_away_is_not_marked_where_both_are_held(tmp_path: Path) -> None:
    rng = random.Random(40)
    index = MatchIndex(tmp_path / "known.sqlite3")
    for n, bits in enumerate([40, 41, 48, 64, 100, 128]):
        original = rng.randbytes(32)
        _publish(index, "hl-a", f"a{n}", original, 1000, "CLEAR")
        _hold(index, f"a{n}", original, 1000)
        _hold(index, f"b{n}", _flip(rng, original, bits), 2000)
        assert index.lookup(f"b{n}", "i1") is None, bits


def test_without_the_earlier_hash_a_candidate_is_only_possible(tmp_path: Path) -> None:
    rng = random.Random(5)
    original = rng.randbytes(32)
    index = MatchIndex(tmp_path / "known.sqlite3")
    _publish(index, "hl-a", "ref-a", original, 1000, "AMBER")  # held by hl-a only
    _hold(index, "ref-b", _flip(rng, original, 10), 2000)
    hit = index.lookup("ref-b", "i1")
    assert hit is not None
    assert hit.kind == POSSIBLE
    assert not hit.assessed
    assert hit.line() == "possible near-duplicate held by hl-a \u2014 ask them"
    assert "previously assessed" not in hit.line()
    shown = hit.to_json()
    assert shown["kind"] == "possible-near-duplicate"
    assert "classification" not in shown
    assert isinstance(shown["shared_chunks"], int)
    assert shown["shared_chunks"] >= 6
    # An unrelated hash shares (almost) nothing: no candidate at all.
    _hold(index, "ref-c", rng.randbytes(32), 3000)
    assert index.lookup("ref-c", "i1") is None


def test_tlp_red_near_duplicate_names_only_whom_to_ask(tmp_path: Path) -> None:
    rng = random.Random(9)
    original = rng.randbytes(32)
    index = MatchIndex(tmp_path / "known.sqlite3")
    tokens = _chunks(original)
    ref = group_reference(tokens, "ref-a", "i1")
    index.add(MatchRecord(KEY.key_id, t.hex(), "hl-a", ref, "pdq", "RED", 1000) for t in tokens)
    _hold(index, "ref-a", original, 1000)
    _hold(index, "ref-b", _flip(rng, original, 3), 2000)
    hit = index.lookup("ref-b", "i1")
    assert hit is not None
    assert hit.kind == NEAR
    assert hit.restricted
    assert (
        hit.line()
        == "near-duplicate (distance 3 of 256) of an item known to hl-a (TLP:RED): ask hl-a"
    )
    assert "classification" not in hit.to_json()


def test_erasing_a_referral_forgets_its_pdq_hash(tmp_path: Path) -> None:
    index = MatchIndex(tmp_path / "known.sqlite3")
    _hold(index, "ref-a", bytes(32), 1000)
    assert index.forget_own("ref-a") == 32
    assert index._db.query("SELECT COUNT(*) AS n FROM own_pdq")[0]["n"] == 0
