"""Referrals left untokenised while the evaluator is down are retried later (persisted queue)."""

from __future__ import annotations

import random
import uuid
from typing import Any

from bench.known_net import _document, plan
from broker.config import Settings
from broker.contracts import Delivery
from broker.kafka import clients
from broker.known.client import EvaluationClient
from broker.known.errors import EvaluationRefused
from broker.known.index import MatchIndex
from broker.known.pending import Untokenised
from broker.known.publish import KnownPublisher, KnownSink
from broker.network import Network
from broker.security.keys import LiveKeys, key_dir
from tests.support.known import known_network, running_evaluator


class SimClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _doc(org: str, n: int) -> dict[str, Any]:
    doc = _document(org, list(enumerate(plan(n, 0, random.Random()))), "BASELINE", False)
    for item in doc["body"]["items"]:
        item["item_id"] = str(uuid.uuid4())
    return doc


def _delivery(doc: dict[str, Any]) -> Delivery:
    rid = str(uuid.uuid4())
    env = doc["envelope"]
    return Delivery(rid, env["case_id"], env["origin_org"], b"", doc, "t", 0, 0)


def _sink(
    settings: Settings, network: Network, clock: SimClock
) -> tuple[KnownSink, Untokenised, EvaluationClient]:
    producer = clients.producer(settings, role="test-sink")
    client = EvaluationClient(settings, network, "police-fr", producer, timeout=30)
    queue = Untokenised.for_org(settings, "police-fr")
    index = MatchIndex.for_org(settings, "police-fr")
    return KnownSink(client, index, queue, retry_s=30, clock=clock), queue, client


def test_a_received_batch_is_tokenised_once_the_evaluator_is_back(settings: Settings) -> None:
    settings, network = known_network(settings)
    clock = SimClock()
    with running_evaluator(settings, network):
        sink, queue, client = _sink(settings, network, clock)
        first = _delivery(_doc("hl-a", 3))
        sink.deliver(first)
        sink.flush()
        assert queue.count() == 0
    # The evaluator stopped: the batch waits on disk, untokenised.
    client.timeout = 2
    second = _delivery(_doc("hl-b", 4))
    sink.deliver(second)
    sink.flush()
    index = MatchIndex.for_org(settings, "police-fr")
    assert index.has_own(first.referral_id)
    assert not index.has_own(second.referral_id)
    assert queue.count("received") == 1
    sink.close()
    queue.close()
    # The receiver restarts too; the evaluator is back.
    with running_evaluator(settings, network):
        sink, queue, _ = _sink(settings, network, clock)
        assert [rid for rid, _ in queue.waiting("received")] == [second.referral_id]
        assert sink.retry() == 1
        assert index.has_own(second.referral_id)
        assert len(index.own_tokens([second.referral_id])) == 12  # 4 items: SHA-256, MD5, URL
        assert queue.count() == 0
        assert sink.retry() == 0
        sink.close()
        queue.close()
    index.close()


def test_retries_wait_retry_s_after_a_failure(settings: Settings) -> None:
    settings, network = known_network(settings)
    clock = SimClock()
    sink, queue, client = _sink(settings, network, clock)
    client.timeout = 2
    sink.deliver(_delivery(_doc("hl-a", 2)))
    sink.flush()  # no evaluator: kept
    assert queue.count("received") == 1
    with running_evaluator(settings, network):
        assert sink.retry() == 0  # within retry_s of the failure: not tried
        assert queue.count("received") == 1
        client.timeout = 30
        clock.now += 31
        assert sink.retry() == 1
    assert queue.count() == 0
    sink.close()
    queue.close()


def test_a_publish_the_evaluator_missed_is_published_on_retry(settings: Settings) -> None:
    settings, network = known_network(settings)
    producer = clients.producer(settings, role="test")
    client = EvaluationClient(settings, network, "hl-a", producer, timeout=2)
    index = MatchIndex.for_org(settings, "hl-a")
    queue = Untokenised.for_org(settings, "hl-a")
    keys = LiveKeys(key_dir(settings, "hl-a"), "hl-a")
    known = KnownPublisher(client, index, producer, keys, queue=queue)
    rid = str(uuid.uuid4())
    try:
        known.publish_or_keep([(rid, _doc("hl-a", 2))])
        raise AssertionError("published without an evaluator")
    except EvaluationRefused:
        pass
    assert queue.count("sent") == 1
    assert len(index) == 0
    client.timeout = 30
    with running_evaluator(settings, network):
        assert known.retry(force=True) == 1
    assert queue.count() == 0
    assert len(index) == 6  # its own entries, as sent on match.tokens
    assert index.has_own(rid)
    client.close()
    producer.close()
    index.close()
    queue.close()


def test_erasing_a_queued_referral_removes_its_document(settings: Settings) -> None:
    settings, network = known_network(settings)
    sink, queue, client = _sink(settings, network, SimClock())
    client.timeout = 2
    doc = _doc("hl-a", 2)
    delivery = _delivery(doc)
    sink.deliver(delivery)
    sink.flush()  # no evaluator: kept
    assert queue.count("received") == 1
    assert sink.erase("hl-a", delivery.referral_id) == 1
    assert queue.count() == 0
    assert sink.erase("hl-a", delivery.referral_id) == 0
    sink.close()
    queue.close()
    path = settings.org_dir("police-fr") / "known-pending.sqlite3"
    stored = b"".join(p.read_bytes() for p in path.parent.glob("known-pending.sqlite3*"))
    item = doc["body"]["items"][0]
    # Secure delete; the WAL is checkpointed on close.
    assert item["hashes"][0]["value"].encode() not in stored
