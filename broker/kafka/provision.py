"""Create the topics a network needs (idempotently) and describe what exists."""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from broker.errors import KafkaBrokerError
from broker.network import Network
from broker.wire.topics import TopicNames

__all__ = ["ProvisionReport", "describe_topics", "provision", "retention_configs"]


@dataclass
class ProvisionReport:
    """What a provisioning run did."""

    created: dict[str, int] = field(default_factory=dict)
    existing: dict[str, int] = field(default_factory=dict)
    #: topic -> (wanted partitions, actual partitions) where they differ
    mismatched: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: topic -> the configs it was created with (retention)
    configs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """True if this run created anything."""
        return bool(self.created)


def describe_topics(admin: KafkaAdminClient, names: list[str] | None = None) -> dict[str, int]:
    """Topic name → partition count for the given (or all non-internal) topics."""
    try:
        wanted = names if names is not None else admin.list_topics()
        wanted = [n for n in wanted if not n.startswith("__")]
        if not wanted:
            return {}
        described = admin.describe_topics(wanted)
    except KafkaError as exc:
        raise KafkaBrokerError(f"cannot describe topics: {type(exc).__name__}") from exc
    out = {}
    for topic in described:
        if topic.get("error_code", 0) == 0:
            out[topic["name"]] = len(topic["partitions"])
    return dict(sorted(out.items()))


def retention_configs(
    network: Network, topic: str, names: TopicNames | None = None
) -> dict[str, str]:
    """``retention.ms`` matching the network's longest retention rule; the ledger and its
    checkpoints (ids, parties and times only) are kept for good."""
    names = names or TopicNames()
    if topic in (names.ledger, names.checkpoints):
        return {"retention.ms": "-1"}
    longest = network.retention.longest_days
    return {} if longest is None else {"retention.ms": str(int(longest * 86_400_000))}


def _configs(network: Network, name: str, names: TopicNames) -> dict[str, str]:
    """A topic's own configs (compaction) or else the retention the rules want."""
    own = dict(network.topic_config(names.strip(name) or name))
    return own if "cleanup.policy" in own else {**own, **retention_configs(network, name, names)}


def provision(
    admin: KafkaAdminClient, network: Network, names: TopicNames | None = None
) -> ProvisionReport:
    """Create every topic ``network`` needs (under ``names``) that does not exist yet."""
    report = ProvisionReport()
    required = network.required_topics(names)
    try:
        present = set(admin.list_topics())
    except KafkaError as exc:
        raise KafkaBrokerError(f"cannot list topics: {type(exc).__name__}") from exc
    missing = {name: n for name, n in required.items() if name not in present}
    if missing:
        rf = network.topics.replication_factor
        names = names or TopicNames()
        report.configs = {name: _configs(network, name, names) for name in missing}
        new = [
            NewTopic(name, n, rf, topic_configs=report.configs[name]) for name, n in missing.items()
        ]
        try:
            admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass  # created concurrently by another provisioner: fine
        except KafkaError as exc:
            raise KafkaBrokerError(f"cannot create topics: {type(exc).__name__}: {exc}") from exc
    actual = describe_topics(admin, list(required))
    for name, wanted in required.items():
        have = actual.get(name)
        if have is None:
            raise KafkaBrokerError(f"topic {name} is missing after provisioning")
        if name in missing:
            report.created[name] = have
        else:
            report.existing[name] = have
        if have != wanted:
            report.mismatched[name] = (wanted, have)
    return report
