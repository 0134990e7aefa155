"""A verified status re-publishes the holder's match entries with the new case status."""

from __future__ import annotations

import random

from bench.known_net import _document, plan
from broker.config import Settings
from broker.contracts import StatusDelivery
from broker.kafka import clients
from broker.known.casestatus import CaseStatusSink
from broker.known.client import EvaluationClient
from broker.known.index import MatchIndex
from broker.known.publish import KnownPublisher, item_inputs
from broker.network import Network
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher
from broker.origin.status_log import StatusLog
from broker.security.keys import LiveKeys, key_dir, load_trust
from broker.wire.codec import Codec
from broker.wire.models import ItemOutcome, utc_now_ms
from tests.support.known import known_network, running_evaluator


def _synced(settings: Settings, network: Network, org: str) -> MatchIndex:
    index = MatchIndex.for_org(settings, org)
    consumer = clients.consumer(settings, group_id=None, role=f"sync-{org}")
    try:
        trust = load_trust(network, settings.network_file)
        index.sync(consumer, settings.topic_names().match_tokens, trust, allow_plain=False)
    finally:
        consumer.close()
    return index


def test_a_verified_outcome_updates_the_case_status_other_members_see(
    settings: Settings,
) -> None:
    settings, network = known_network(settings)
    producer = clients.producer(settings, role="test")
    codec = Codec.from_settings(settings)
    doc = _document("hl-a", list(enumerate(plan(3, 0, random.Random(7)))), "BASELINE", False)
    client = EvaluationClient(settings, network, "hl-a", producer)
    index = MatchIndex.for_org(settings, "hl-a")
    known = KnownPublisher(client, index, producer, LiveKeys(key_dir(settings, "hl-a"), "hl-a"))
    outbox = Outbox.for_org(settings, "hl-a")
    publisher = Publisher(settings, network, "hl-a", codec, producer, outbox, known=known.publish)
    with running_evaluator(settings, network) as service:
        assert publisher.publish([("1", doc)]).ok
        key = service.ring.current
    rid = outbox.all()[0].referral_id
    stored = outbox.get(rid)
    assert stored is not None
    assert stored.document is not None
    first, second = [i for i in item_inputs(stored.document) if i.kind == "sha256"][:2]
    # An earlier outcome of the second item is in the status log already.
    status_log = StatusLog.for_org(settings, "hl-a")
    earlier = ItemOutcome.model_validate(
        {"item_id": second.item_id, "outcome": "STILL_ONLINE", "observed_at": utc_now_ms()}
    )
    status_log.record_outcomes(rid, "police-fr", [earlier], 1)
    # The evaluator is down: the new status needs no evaluation, only the tokens held.
    sink = CaseStatusSink(known, outbox, status_log)
    outcome = {"item_id": first.item_id, "outcome": "REMOVED", "observed_at": utc_now_ms()}
    sink.deliver_status(StatusDelivery(rid, "ACTIONED", "police-fr", {"item_outcomes": [outcome]}))
    sink.flush()
    other = _synced(settings, network, "police-fr")
    hit = other.match([("sha256", key.key_id, key.token(first.data).value)], "x", "y", 2**62)
    assert hit is not None
    assert (hit.holder, hit.classification, hit.case_status) == ("hl-a", "BASELINE", "REMOVED")
    hit = other.match([("sha256", key.key_id, key.token(second.data).value)], "x", "y", 2**62)
    assert hit is not None
    assert hit.case_status == "STILL_ONLINE"
    assert len(other) == 9  # the same entries, replaced (three items: SHA-256, MD5, URL)
    other.close()
    status_log.close()
    client.close()
    publisher.close()
    producer.close()
