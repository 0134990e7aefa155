"""The router's key hash is kafka-python's default partitioner hash, for every key."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from broker.kafka.partitioning import key_hash


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_same_as_kafka_python(data: bytes) -> None:
    assert key_hash(data) == murmur2(data) & 0x7FFFFFFF


def test_referral_ids() -> None:
    for _ in range(200):
        key = str(uuid.uuid4()).encode()
        assert key_hash(key) == murmur2(key) & 0x7FFFFFFF
