"""Blind match tokens: normalisation, the origin's blind/unblind and the evaluator's rate limit."""

from __future__ import annotations

import hashlib
import os
from dataclasses import fields

import pytest

from broker.known import oprf
from broker.known.errors import BadMatchInput, EvaluationRefused, OprfError
from broker.known.normalise import hash_input, normalise_hash, normalise_url, url_input
from broker.known.tokens import (
    EvaluationRecord,
    EvaluationRequest,
    EvaluationResponse,
    Evaluator,
    EvaluatorKey,
    KeyRing,
    RateLimit,
    Token,
    blind_batch,
    unblind,
)


class SimClock:
    """A simulated clock in seconds."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class RecordingEvaluator(Evaluator):
    """An evaluator that keeps every request it received."""

    def __init__(self, key: EvaluatorKey, limit: RateLimit, clock: SimClock) -> None:
        super().__init__(KeyRing(key), limit, clock)
        self.key = key
        self.received: list[EvaluationRequest] = []

    def evaluate(self, request: EvaluationRequest) -> EvaluationResponse:
        self.received.append(request)
        return super().evaluate(request)


def _evaluator(
    clock: SimClock, items: int = 10_000, seed: bytes | None = None, key_id: str = "k1"
) -> RecordingEvaluator:
    key = EvaluatorKey.derive(key_id, seed or os.urandom(32))
    return RecordingEvaluator(key, RateLimit(items, 3600.0), clock)


def _tokenise(evaluator: Evaluator, org: str, inputs: list[bytes]) -> list[Token]:
    pending, request = blind_batch(org, inputs)
    return unblind(pending, evaluator.evaluate(request))


def _items(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        digest = os.urandom(32).hex()
        out.append(hash_input("sha256", digest))
        out.append(url_input(f"https://host-{i}.example.org/path/{digest[:12]}"))
    return out


# -- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("md5", hashlib.md5(b"x").hexdigest()),
        ("SHA-1", hashlib.sha1(b"x").hexdigest().upper()),
        ("sha_256", " " + hashlib.sha256(b"x").hexdigest() + "\n"),
    ],
)
def test_hashes_normalise_to_prefixed_lower_hex(kind: str, value: str) -> None:
    prefix = kind.lower().replace("-", "").replace("_", "")
    assert normalise_hash(kind, value) == f"{prefix}:{value.strip().lower()}"


@pytest.mark.parametrize(
    ("kind", "value"),
    [("sha256", "ab" * 31), ("md5", "zz" * 16), ("sha3", "ab" * 32), ("sha1", "")],
)
def test_bad_hashes_are_refused_without_quoting_them(kind: str, value: str) -> None:
    with pytest.raises(BadMatchInput) as info:
        normalise_hash(kind, value)
    assert value not in str(info.value) or not value
    assert "\n" not in str(info.value)


def test_one_hash_kind_never_tokenises_like_another() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert hash_input("sha256", digest) != url_input(f"https://example.org/{digest}")


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTP://Example.ORG:80/a/./b/../c?x=1#top", "http://example.org/a/c?x=1"),
        ("https://example.org", "https://example.org/"),
        ("https://example.org:443/?", "https://example.org/"),
        ("https://example.org:8443/x", "https://example.org:8443/x"),
        ("https://example.org/%7euser/%2f%e2%82%ac", "https://example.org/~user/%2F%E2%82%AC"),
        ("https://example.org/%41%62", "https://example.org/Ab"),
        ("https://example.org/p q/ä", "https://example.org/p%20q/%C3%A4"),
        ("https://example.org/a%zz", "https://example.org/a%25zz"),
        ("https://bücher.example.org./", "https://xn--bcher-kva.example.org/"),
        ("http://u@[2001:DB8::1]:80/", "http://u@[2001:db8::1]/"),
        ("https://example.org/?b=2&a=1+1", "https://example.org/?b=2&a=1+1"),
    ],
)
def test_urls_normalise_by_the_documented_rule(url: str, canonical: str) -> None:
    assert normalise_url(url) == canonical
    assert normalise_url(canonical) == canonical  # idempotent


@pytest.mark.parametrize(
    "url",
    [
        "example.org/x",
        "mailto:someone@example.org",
        "http://:80/",
        "http://host.example.org:99999/",
    ],
)
def test_bad_urls_are_refused_in_one_line(url: str) -> None:
    with pytest.raises(BadMatchInput) as info:
        normalise_url(url)
    assert url not in str(info.value)


# -- tokens --------------------------------------------------------------------------------


def test_equal_content_at_two_organisations_gives_equal_tokens() -> None:
    evaluator = _evaluator(SimClock())
    digest = os.urandom(20).hex()
    at_de = _tokenise(
        evaluator, "hl-de", [hash_input("sha1", digest), url_input("HTTPS://A.example.org:443/x#f")]
    )
    at_nl = _tokenise(
        evaluator,
        "hl-nl",
        [hash_input("SHA-1", digest.upper()), url_input("https://a.example.org/./x")],
    )
    assert at_de == at_nl
    assert at_de[0] != at_de[1]
    assert at_de[0] == evaluator.key.token(hash_input("sha1", digest))


def test_different_keys_give_different_tokens() -> None:
    inputs = _items(20)
    first = _tokenise(_evaluator(SimClock()), "hl-de", inputs)
    second = _tokenise(_evaluator(SimClock()), "hl-de", inputs)
    assert not {t.value for t in first} & {t.value for t in second}


def test_the_evaluator_receives_only_group_elements() -> None:
    evaluator = _evaluator(SimClock())
    inputs = _items(25)
    _tokenise(evaluator, "hl-de", inputs)
    (request,) = evaluator.received
    assert {f.name for f in fields(request)} == {"organisation", "blinded", "key_id"}
    unblinded = {oprf.hash_to_group(item) for item in inputs}
    seen = repr(request).encode() + b"".join(request.blinded)
    for element in request.blinded:
        assert oprf.deserialize_element(element) == element  # a valid, non-identity element
        assert element not in unblinded  # not HashToGroup(input): blinded
    for item in inputs:
        assert item not in seen
        assert item.split(b":", 1)[1] not in seen


def test_blinding_twice_gives_unlinkable_requests_but_equal_tokens() -> None:
    evaluator = _evaluator(SimClock())
    inputs = _items(5)
    assert _tokenise(evaluator, "hl-de", inputs) == _tokenise(evaluator, "hl-de", inputs)
    first, second = evaluator.received
    assert not set(first.blinded) & set(second.blinded)


def test_over_the_rate_is_refused_and_the_rate_refills_on_the_clock() -> None:
    clock = SimClock()
    evaluator = _evaluator(clock, items=100)
    _tokenise(evaluator, "hl-de", [os.urandom(8) for _ in range(60)])
    with pytest.raises(EvaluationRefused) as info:
        _tokenise(evaluator, "hl-de", [os.urandom(8) for _ in range(41)])
    assert str(info.value) == (
        "evaluation refused for hl-de: 41 items over its rate of 100 per 3600 s"
    )
    assert evaluator.allowance("hl-de") == 40  # a refused batch costs nothing
    assert len(_tokenise(evaluator, "hl-nl", [os.urandom(8) for _ in range(100)])) == 100
    clock.now += 1800  # half the window refills half the rate
    assert evaluator.allowance("hl-de") == 90
    assert len(_tokenise(evaluator, "hl-de", [os.urandom(8) for _ in range(90)])) == 90
    with pytest.raises(EvaluationRefused):
        _tokenise(evaluator, "hl-de", [os.urandom(8)])
    clock.now += 10 * 3600
    assert evaluator.allowance("hl-de") == 100  # capped at one window's worth


def test_a_bad_element_refuses_the_batch_before_it_costs_rate() -> None:
    evaluator = _evaluator(SimClock(), items=10)
    _, request = blind_batch("hl-de", [b"a", b"b"])
    bad = EvaluationRequest("hl-de", (*request.blinded, bytes(32)))
    with pytest.raises(OprfError):
        evaluator.evaluate(bad)
    assert evaluator.allowance("hl-de") == 10


def test_rotation_changes_tokens_and_retired_keys_are_refused() -> None:
    clock = SimClock()
    ring = KeyRing(EvaluatorKey.derive("2026-11", os.urandom(32)))
    evaluator = Evaluator(ring, RateLimit(1000, 3600.0), clock)
    inputs = _items(3)
    old = _tokenise(evaluator, "hl-de", inputs)
    ring.rotate(EvaluatorKey.derive("2026-12", os.urandom(32)))
    new = _tokenise(evaluator, "hl-de", inputs)
    assert {t.key_id for t in old} == {"2026-11"}
    assert {t.key_id for t in new} == {"2026-12"}
    assert not {t.value for t in old} & {t.value for t in new}
    pending, request = blind_batch("hl-de", inputs, key_id="2026-11")
    assert unblind(pending, evaluator.evaluate(request)) == old  # still held until retired
    ring.retire("2026-11")
    with pytest.raises(EvaluationRefused, match="unknown or retired"):
        evaluator.evaluate(request)
    with pytest.raises(EvaluationRefused):
        ring.rotate(EvaluatorKey.derive("2026-12", os.urandom(32)))


def test_a_short_answer_is_refused() -> None:
    pending, _ = blind_batch("hl-de", [b"a", b"b"])
    with pytest.raises(OprfError):
        unblind(pending, EvaluationResponse("k1", (oprf.hash_to_group(b"x"),)))


def test_reprs_never_show_inputs_blinds_or_keys() -> None:
    key = EvaluatorKey.derive("k1", os.urandom(32))
    pending, _ = blind_batch("hl-de", [b"sha256:" + b"a" * 64])
    assert key.secret.hex() not in repr(key)
    assert "aaaa" not in repr(pending)
    assert pending.blinds[0].hex() not in repr(pending)


def test_every_evaluation_and_refusal_is_recorded_without_content() -> None:
    clock = SimClock()
    records: list[EvaluationRecord] = []
    key = EvaluatorKey.derive("k1", os.urandom(32))
    evaluator = Evaluator(KeyRing(key), RateLimit(10, 60.0), clock, records.append)
    _tokenise(evaluator, "hl-de", [b"sha1:" + b"0" * 40] * 8)
    clock.now += 1
    with pytest.raises(EvaluationRefused):
        _tokenise(evaluator, "hl-de", [b"x"] * 5)
    with pytest.raises(EvaluationRefused):
        evaluator.evaluate(EvaluationRequest("hl-nl", (), key_id="gone"))
    assert records[0] == EvaluationRecord("hl-de", 8, "k1", clock.now - 1)
    assert (records[1].organisation, records[1].items) == ("hl-de", 5)
    assert (
        records[1].refused == "evaluation refused for hl-de: 5 items over its rate of 10 per 60 s"
    )
    assert records[2].refused == "key gone is unknown or retired"
    assert b"0" * 40 not in repr(records).encode()


def test_an_attacker_without_the_key_confirms_no_guessed_hash() -> None:
    # The attacker holds every token on the topic and the 1,000 true hashes as guesses,
    # but not the evaluator's key: its own key, plain hashes and HashToGroup all miss.
    evaluator = _evaluator(SimClock())
    digests = [os.urandom(32).hex() for _ in range(1000)]
    inputs = [hash_input("sha256", d) for d in digests]
    published = {t.value for t in _tokenise(evaluator, "hl-de", inputs)}
    attacker_key = EvaluatorKey.derive("k1", os.urandom(32))  # same key id, other secret
    guesses: set[bytes] = set()
    for item in inputs:
        guesses.add(attacker_key.token(item).value)
        guesses.add(hashlib.sha256(item).digest())
        guesses.add(hashlib.sha512(item).digest()[:32])
        guesses.add(oprf.hash_to_group(item))
    assert not published & guesses
    assert len(published) == 1000
