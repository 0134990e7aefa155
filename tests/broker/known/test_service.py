"""The evaluation service on the real broker: tokens over Kafka, signed, rate-limited, recorded."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from broker.config import Settings
from broker.kafka import clients
from broker.known.client import EvaluationClient
from broker.known.errors import EvaluationRefused
from broker.known.keystore import OprfKeys, oprf_dir
from broker.known.normalise import hash_input
from broker.known.wire import Request, encode_request
from broker.ledger.events import decode_events
from broker.ledger.store import LedgerStore
from broker.security.keys import load_trust
from broker.wire.codec import Codec
from tests.support.kafka import publish, read_topic
from tests.support.known import known_network, running_evaluator


def _inputs(n: int) -> list[bytes]:
    return [hash_input("sha256", hashlib.sha256(os.urandom(16)).hexdigest()) for _ in range(n)]


def _events(settings: Settings, at_least: int) -> list[dict[str, object]]:
    codec = Codec.from_settings(settings)
    records = read_topic(settings, settings.topic_names().ledger, at_least=at_least)
    return [e for r in records for e in decode_events(codec, r.value)]


def test_tokens_through_the_evaluator_equal_the_key_holders_prf(settings: Settings) -> None:
    settings, network = known_network(settings, rate=50)
    producer = clients.producer(settings, role="test")
    inputs = _inputs(40)
    with running_evaluator(settings, network) as service:
        client = EvaluationClient(settings, network, "hl-a", producer, timeout=30)
        tokens = client.tokens(inputs)
        key = service.ring.current
        assert [t.value for t in tokens] == [key.token(i).value for i in inputs]
        assert {t.key_id for t in tokens} == {key.key_id}
        # hl-b asks for more than its rate: refused, and hl-a's allowance is its own.
        other = EvaluationClient(settings, network, "hl-b", producer, timeout=30)
        with pytest.raises(EvaluationRefused, match="over its rate"):
            other.tokens(_inputs(60))
        assert len(other.tokens(_inputs(10))) == 10
        client.close()
        other.close()
    producer.close()
    events = _events(settings, 3)
    said = [(e["event"], e["from_party"], e["reason"]) for e in events]
    assert ("EVALUATED", "hl-a", f"40 elements, key {key.key_id}") in said
    assert ("EVALUATED", "hl-b", f"10 elements, key {key.key_id}") in said
    refused = [s for s in said if s[0] == "EVALUATION_REFUSED"]
    assert [s[1] for s in refused] == ["hl-b"]
    assert "60 items over its rate of 50 per 3600 s" in str(refused[0][2])
    # The evaluator's ledger records verify like everyone's: signed by the secretariat's key.
    codec = Codec.from_settings(settings)
    with LedgerStore.for_settings(settings) as store:
        store.sync(settings, codec)
        trust = load_trust(network, settings.network_file)
        assert store.verify(trust, codec=codec, allow_plain=False).intact


def test_an_unsigned_or_forged_request_is_refused_and_recorded(settings: Settings) -> None:
    settings, network = known_network(settings)
    names = settings.topic_names()
    value = encode_request(Request("7d8a0c7e-8b44-4a53-9d61-0a3b2c1d4e5f", "hl-c", None, ()))
    with running_evaluator(settings, network):
        publish(settings, names.evaluate, [(b"hl-c", value)])
        answers = read_topic(settings, names.evaluated, at_least=1)
    assert b"refused" in answers[0].value
    assert b"unsigned request from hl-c" in answers[0].value
    events = _events(settings, 1)
    assert [(e["event"], e["from_party"]) for e in events] == [("EVALUATION_REFUSED", "hl-c")]


def test_the_key_rotates_on_schedule_and_the_old_one_is_retired(settings: Settings) -> None:
    keys = OprfKeys(oprf_dir(settings, "secretariat"))
    start = time.time()
    first = keys.create(start)
    ring = keys.ring()
    assert keys.rotate_if_due(ring, 90, start + 89 * 86400) is None
    second = keys.rotate_if_due(ring, 90, start + 91 * 86400)
    assert second is not None
    assert ring.current.key_id == second
    assert set(ring.key_ids()) == {first, second}
    third = keys.rotate_if_due(ring, 90, start + 182 * 86400)
    assert set(ring.key_ids()) == {second, third}
    assert keys.ring().current.key_id == third  # the file says so too
    data = b"sha256:" + b"0" * 64
    assert keys.ring().current.token(data) != keys.ring().get(second).token(data)


def test_a_key_rotated_by_hand_is_taken_on_by_the_ring(settings: Settings) -> None:
    keys = OprfKeys(oprf_dir(settings, "secretariat"))
    first = keys.create()
    ring = keys.ring()
    second = keys.create()  # referral keys init secretariat --rotate
    assert keys.rotate_if_due(ring, 90, time.time()) == second
    assert set(ring.key_ids()) == {first, second}
