"""Key rotation on the real broker: the origin re-derives its tokens, old entries are removed."""

from __future__ import annotations

from bench.known_net import _document, plan
from broker.config import Settings
from broker.kafka import clients
from broker.known.client import EvaluationClient
from broker.known.index import MatchIndex
from broker.known.keystore import OprfKeys, oprf_dir
from broker.known.publish import KnownPublisher, item_inputs
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher
from broker.origin.status_log import StatusLog
from broker.security.keys import LiveKeys, key_dir, load_trust
from broker.wire.codec import Codec
from broker.wire.models import ItemOutcome, utc_now_ms
from tests.support.known import known_network, running_evaluator


def _sync(settings: Settings, index: MatchIndex, network: object) -> None:
    consumer = clients.consumer(settings, group_id=None, role="sync")
    try:
        trust = load_trust(network, settings.network_file)  # type: ignore[arg-type]
        index.sync(consumer, settings.topic_names().match_tokens, trust, allow_plain=False)
    finally:
        consumer.close()


def test_tokens_are_rederived_under_the_new_key_and_the_old_entries_go(
    settings: Settings,
) -> None:
    import random

    settings, network = known_network(settings)
    producer = clients.producer(settings, role="test")
    codec = Codec.from_settings(settings)
    items = plan(10, 0, random.Random(1))
    doc = _document("hl-a", list(enumerate(items)), "BASELINE", False)
    with running_evaluator(settings, network) as service:
        client = EvaluationClient(settings, network, "hl-a", producer)
        index = MatchIndex.for_org(settings, "hl-a")
        known = KnownPublisher(client, index, producer, LiveKeys(key_dir(settings, "hl-a"), "hl-a"))
        outbox = Outbox.for_org(settings, "hl-a")
        publisher = Publisher(
            settings, network, "hl-a", codec, producer, outbox, known=known.publish
        )
        assert publisher.publish([("1", doc)]).ok
        old_key = service.ring.current.key_id
        assert {t.key_id for t in index.own_tokens([outbox.all()[0].referral_id])} == {old_key}
        new_key = OprfKeys(oprf_dir(settings, "secretariat")).create()  # keys init --rotate
        rid = outbox.all()[0].referral_id
        stored = outbox.get(rid)
        assert stored is not None
        assert stored.document is not None
        inputs = item_inputs(stored.document)
        removed = ItemOutcome.model_validate(
            {"item_id": inputs[0].item_id, "outcome": "REMOVED", "observed_at": utc_now_ms()}
        )
        status_log = StatusLog.for_org(settings, "hl-a")
        status_log.record_outcomes(rid, "police-fr", [removed], 1)
        assert known.rederive(outbox, status_log) == 1
        status_log.close()
        assert service.ring.current.key_id == new_key
        assert {t.key_id for t in index.own_tokens([rid])} == {new_key}
        # Another member's index, synced from the compacted topic: only the new key's entries.
        other = MatchIndex.for_org(settings, "police-fr")
        _sync(settings, other, network)
        assert len(other) == len(inputs) == 30  # ten items: SHA-256, MD5, URL
        first = inputs[0]
        token = service.ring.current.token(first.data)
        hit = other.match([(first.kind, new_key, token.value)], "another", "item", 2**62)
        assert hit is not None
        assert (hit.holder, hit.classification, hit.case_status) == ("hl-a", "BASELINE", "REMOVED")
        stale = service.ring.get(old_key).token(first.data)
        assert other.match([(first.kind, old_key, stale.value)], "another", "item", 2**62) is None
        client.close()
        publisher.close()
    producer.close()
