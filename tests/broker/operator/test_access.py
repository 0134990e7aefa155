"""The one ACCESSED recorder, on the test broker: a signed event as the revealing organisation."""

from __future__ import annotations

import uuid
from pathlib import Path

from broker.config import Settings
from broker.kafka import clients
from broker.ledger.store import LedgerStore
from broker.operator.access import AccessRecorder
from broker.security.keys import LiveKeys, key_dir, load_trust
from broker.security.signing import ledger_signer
from broker.wire.codec import Codec
from tests.support.kafka import provision_network
from tests.support.security import give_keys, keyed_network

ORG = "police-nl"


def test_a_reveal_is_one_signed_accessed_event_that_verifies(
    settings: Settings, tmp_path: Path
) -> None:
    trust_file = tmp_path / "trust.json"
    network = keyed_network(trust_file)
    provision_network(settings, network)
    give_keys(settings, trust_file, ORG)
    codec = Codec.from_settings(settings)
    producer = clients.producer(settings, role="test-access")
    keys = LiveKeys(key_dir(settings, ORG), ORG)
    recorder = AccessRecorder(
        codec,
        settings.topic_names().ledger,
        ORG,
        lambda: producer,
        signer=lambda: ledger_signer(keys, ORG),
    )
    rid = str(uuid.uuid4())
    try:
        recorder.accessed(
            referral_id=rid,
            case_id="case-access",
            at=("referrals.to.NL", 2, 41),
            reason="console reveal: " + "x" * 600,
            wait=True,
        )
    finally:
        producer.close(5)
    with LedgerStore.for_settings(settings) as store:
        store.sync(settings, codec, checkpoints=False)
        (event,) = store.records(rid)
        verification = store.verify(load_trust(network, None), codec=codec, allow_plain=False)
    assert (event.event, event.actor, event.to_party) == ("ACCESSED", ORG, ORG)
    assert (event.topic, event.partition, event.offset) == ("referrals.to.NL", 2, 41)
    assert event.reason is not None
    assert len(event.reason) == 500
    assert verification.intact, str(verification)
    assert verification.signed == 1
