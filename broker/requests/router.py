"""The request router: ``requests.intake`` → ``requests.to.<SPOC>``, by the SPOC rules.

It reads only the clear envelope of a police message, checks the sender's
signature and that sender and receiver are two countries' single points of
contact, and forwards the original bytes and headers; anything else goes to
``requests.deadletter`` with a reason header. Each forward is a ``REQUEST_ROUTED``
ledger event of the router (signed when it has keys).
"""

from __future__ import annotations

import threading
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from broker.config import Settings
from broker.errors import CodecError, SecurityError
from broker.kafka import clients
from broker.ledger.events import LedgerEmitter, Signer, handover_event
from broker.network import Network
from broker.requests.routes import REQUESTS_DEADLETTER, REQUESTS_INTAKE, check_route, to_topic
from broker.requests.wire import RequestError, verify_message, window_of
from broker.security.keys import TrustStore
from broker.wire.codec import Codec

__all__ = ["REASON_HEADER", "RequestRouter"]

REASON_HEADER = "referral.request.refused"


class RequestRouter:
    """Routes police messages SPOC to SPOC (a consumer group: run as many as you like)."""

    def __init__(
        self,
        settings: Settings,
        network: Network,
        codec: Codec,
        trust: TrustStore,
        *,
        actor: str = "router",
        signer: Signer | None = None,
        **consumer_overrides: Any,
    ) -> None:
        self.network, self.codec, self.trust = network, codec, trust
        self.names = settings.topic_names()
        self.producer: KafkaProducer = clients.producer(settings, role="requests-router")
        self.consumer: KafkaConsumer = clients.consumer(
            settings,
            self.names.prefix + REQUESTS_INTAKE,
            group_id="requests-router",
            role="requests-router",
            **consumer_overrides,
        )
        self.ledger = LedgerEmitter(
            self.producer, codec, self.names.ledger, actor=actor, signer=signer
        )
        self.actor = actor
        self.window = window_of(network)
        self.routed = 0
        self.refused = 0

    def route(self, record: Any) -> str:
        """Forward one intake record; the topic it went to."""
        try:
            env = verify_message(self.codec, self.trust, record.headers, record.value, self.window)
            check_route(self.network, str(env["from_org"]), str(env["to_org"]))
        except (SecurityError, CodecError, RequestError) as exc:
            topic = self.names.prefix + REQUESTS_DEADLETTER
            headers = [*(record.headers or []), (REASON_HEADER, type(exc).__name__.encode())]
            self.producer.send(topic, key=record.key, value=record.value, headers=headers)
            self.refused += 1
            return topic
        topic = to_topic(self.names, str(env["to_org"]))
        self.producer.send(topic, key=record.key, value=record.value, headers=record.headers)
        self.ledger.emit(
            handover_event(
                "REQUEST_ROUTED",
                referral_id=str(env["request_id"]),
                case_id=str(env["case_id"]),
                actor=self.actor,
                from_party=str(env["from_org"]),
                to_party=str(env["to_org"]),
                topic=topic,
                reason=f"msg={env['message_id']};kind={env['kind']}",
            )
        )
        self.routed += 1
        return topic

    def run(self, stop: threading.Event) -> None:
        """Route until ``stop`` is set; offsets committed once every forward is acknowledged."""
        try:
            while not stop.is_set():
                batch = self.consumer.poll(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        self.route(record)
                if batch:
                    self.producer.flush()
                    self.consumer.commit()
        finally:
            self.producer.flush()
            self.consumer.close()
            self.producer.close()
