"""Topic statistics as both faces show them: counted by reading, lag per group."""

from __future__ import annotations

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from broker.config import Settings
from broker.kafka import clients
from broker.operator.topics import deployment_topics, topic_stats


def test_counts_are_read_and_lag_is_per_group_of_this_deployment(provisioned: Settings) -> None:
    names = provisioned.topic_names()
    producer = clients.producer(provisioned, role="test-topics")
    try:
        for i in range(7):
            producer.send(names.intake, key=b"k", value=b"v%d" % i, partition=0)
        producer.flush(10)
    finally:
        producer.close(5)
    tp = TopicPartition(names.intake, 0)
    group = clients.consumer(provisioned, group_id="lag-probe", role="test-topics")
    try:
        group.assign([tp])
        group.commit({tp: OffsetAndMetadata(3, "", -1)})
    finally:
        group.close()
    admin = clients.admin_client(provisioned)
    reader = clients.consumer(provisioned, group_id=None, role="test-topics")
    try:
        found = deployment_topics(admin, provisioned.topic_prefix)
        assert names.intake in found
        assert names.ledger in found
        assert all(name.startswith(provisioned.topic_prefix) for name in found)
        stats = topic_stats(admin, reader, found, group_prefix=provisioned.topic_prefix)
    finally:
        reader.close()
        admin.close()
    intake = stats[names.intake]
    assert (intake.messages, intake.source) == (7, "read")
    assert intake.lag == {provisioned.topic_prefix + "lag-probe": 4}
    assert intake.to_json()["group_lag"] == intake.lag
    assert stats[names.deadletter].messages == 0
    assert stats[names.deadletter].lag == {}
