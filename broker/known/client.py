"""An organisation's side of the evaluation: blind, ask the evaluator over Kafka, unblind.

:class:`EvaluationClient` sends signed batches of blinded elements to
``known.evaluate`` and reads its answers from its own partition of
``known.evaluated`` (keyed by organisation), checking the evaluator's signature.
The inputs and the blinds never leave the process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.config import Settings
from broker.errors import KafkaBrokerError
from broker.kafka import clients
from broker.kafka.partitioning import key_hash
from broker.known.errors import EvaluationRefused
from broker.known.tokens import EvaluationResponse, PendingBatch, Token, blind_batch, unblind
from broker.known.wire import (
    Request,
    decode_answer,
    encode_request,
    sign_known,
    verify_known,
)
from broker.network import Network
from broker.security.keys import LiveKeys, LiveTrust, key_dir

__all__ = ["BATCH", "EvaluationClient"]

#: Elements per request (an item has up to four: three exact hashes and its URL).
BATCH = 1000


class EvaluationClient:
    """Turns an organisation's inputs into match tokens through the network's evaluator."""

    def __init__(
        self,
        settings: Settings,
        network: Network,
        org_id: str,
        producer: KafkaProducer,
        *,
        keys: LiveKeys | None = None,
        trust: LiveTrust | None = None,
        timeout: float = 60.0,
    ) -> None:
        if network.known is None:
            raise EvaluationRefused("the network file has no [known] table")
        self.settings = settings
        self.network = network
        self.org_id = org_id
        self.evaluator = network.known.evaluator
        self.producer = producer
        self.keys = keys or LiveKeys(key_dir(settings, org_id), org_id)
        self.trust = trust or LiveTrust(network, settings.network_file)
        self.timeout = timeout
        self.names = settings.topic_names()
        self._consumer: KafkaConsumer | None = None
        self._tp: TopicPartition | None = None
        #: Elements evaluated so far, and the seconds spent waiting for answers.
        self.elements = 0
        self.wait_s = 0.0

    def _answers(self) -> tuple[KafkaConsumer, TopicPartition]:
        if self._consumer is None or self._tp is None:
            consumer = clients.consumer(self.settings, group_id=None, role=f"known-{self.org_id}")
            parts = consumer.partitions_for_topic(self.names.evaluated)
            deadline = time.monotonic() + 10
            while not parts and time.monotonic() < deadline:
                time.sleep(0.05)
                parts = consumer.partitions_for_topic(self.names.evaluated)
            if not parts:
                consumer.close()
                raise KafkaBrokerError(f"topic {self.names.evaluated} is missing: provision it")
            tp = TopicPartition(self.names.evaluated, key_hash(self.org_id.encode()) % len(parts))
            consumer.assign([tp])
            consumer.seek_to_end(tp)
            consumer.position(tp)
            self._consumer, self._tp = consumer, tp
        return self._consumer, self._tp

    def close(self) -> None:
        """Close the answers consumer."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def tokens(self, inputs: Sequence[bytes]) -> list[Token]:
        """One token per input (see :mod:`broker.known.normalise`), in order.

        EvaluationRefused if the evaluator refused a batch (over the rate, say) or
        did not answer within ``timeout``.
        """
        if not inputs:
            return []
        consumer, tp = self._answers()
        pending: dict[str, PendingBatch] = {}
        order: list[str] = []
        for start in range(0, len(inputs), BATCH):
            batch, request = blind_batch(self.org_id, inputs[start : start + BATCH])
            request_id = str(uuid.uuid4())
            value = encode_request(Request(request_id, self.org_id, None, request.blinded))
            headers = sign_known(self.keys.current(), "request", value)
            self.producer.send(
                self.names.evaluate, key=self.org_id.encode(), value=value, headers=headers
            )
            pending[request_id] = batch
            order.append(request_id)
        self.producer.flush(self.timeout)
        got = self._collect(consumer, tp, pending)
        self.elements += len(inputs)
        return [token for rid in order for token in unblind(pending[rid], got[rid])]

    def _collect(
        self, consumer: KafkaConsumer, tp: TopicPartition, pending: dict[str, PendingBatch]
    ) -> dict[str, EvaluationResponse]:
        started = time.monotonic()
        deadline = started + self.timeout
        got: dict[str, EvaluationResponse] = {}
        allow_plain = self.network.network.allow_plain
        while len(got) < len(pending):
            if time.monotonic() > deadline:
                raise EvaluationRefused(
                    f"the evaluator {self.evaluator} did not answer within {self.timeout:g} s"
                )
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    answer = decode_answer(record.value or b"")
                    if answer.request not in pending or answer.org != self.org_id:
                        continue
                    verify_known(
                        record.headers,
                        record.value or b"",
                        self.trust.current(),
                        "answer",
                        self.evaluator,
                        allow_plain,
                    )
                    if answer.refused is not None:
                        raise EvaluationRefused(answer.refused)
                    got[answer.request] = EvaluationResponse(str(answer.key), answer.evaluated)
        self.wait_s += time.monotonic() - started
        return got
