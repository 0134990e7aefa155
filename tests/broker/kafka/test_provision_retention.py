"""``topics provision`` sets topic retention to match the network's retention rules.

The embedded Tansu takes topic configs but describes none; a cluster named by
``REFERRAL_TEST_BOOTSTRAP`` that describes them is checked too.
"""

from __future__ import annotations

from kafka.admin import ConfigResource, ConfigResourceType

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.provision import provision, retention_configs
from broker.network import Network
from broker.retention import Retention, RetentionRule

DAY_MS = 86_400_000


def test_topics_keep_what_the_longest_rule_keeps_and_the_ledger_for_good(
    settings: Settings, network: Network
) -> None:
    rules = (RetentionRule(outcome=("NOT_ILLEGAL",), after_days=30), RetentionRule(after_days=400))
    kept = network.model_copy(update={"retention": Retention(rules=rules)})
    names = settings.topic_names()
    assert retention_configs(network, names.intake, names) == {}, "no rules: the broker's default"
    assert retention_configs(kept, names.intake, names) == {"retention.ms": str(400 * DAY_MS)}
    assert retention_configs(kept, names.ledger, names) == {"retention.ms": "-1"}
    admin = clients.admin_client(settings)
    try:
        report = provision(admin, kept, names)
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in (names.intake, names.ledger)]
        )
    finally:
        admin.close()
    assert report.configs[names.intake] == {"retention.ms": str(400 * DAY_MS)}
    assert report.configs[names.ledger] == {"retention.ms": "-1"}
    assert set(report.configs) == set(report.created)
    shown = described.get("topic", {}) if isinstance(described, dict) else {}
    for topic, want in ((names.intake, str(400 * DAY_MS)), (names.ledger, "-1")):
        if shown.get(topic):  # a broker that describes topic configs
            assert shown[topic]["retention.ms"] == want
