"""The one ACCESSED recorder: a revealed TLP RED / AMBER+STRICT body goes on the ledger.

``referral tail --reveal`` and the console's reveal both record through it; the
caller hands in the producer (or a factory of it) and the signer of whose access it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError

from broker.errors import KafkaBrokerError
from broker.ledger.events import HandoverEventType, LedgerEmitter, Signer, handover_event
from broker.wire.codec import Codec

__all__ = ["AccessRecorder"]


class AccessRecorder:
    """Emits one ACCESSED handover event per revealed restricted body, as ``actor``.

    ``signer`` (that organisation's ledger signer) signs the events; without one they are
    unsigned (fit only where plain referrals are allowed).
    """

    def __init__(
        self,
        codec: Codec,
        ledger_topic: str,
        actor: str,
        producer: Callable[[], Any],
        *,
        signer: Callable[[], Signer | None] = lambda: None,
    ) -> None:
        self.codec = codec
        self.ledger_topic = ledger_topic
        self.actor = actor
        self._producer = producer
        self._signer = signer

    def accessed(
        self,
        *,
        referral_id: str,
        case_id: str,
        at: tuple[str, int, int],
        reason: str,
        wait: bool = False,
    ) -> None:
        """Record that ``actor`` saw the body at ``at`` (topic, partition, offset) for ``reason``.

        With ``wait`` the event is acknowledged before this returns (KafkaBrokerError if not).
        """
        topic, partition, offset = at
        producer = self._producer()
        emitter = LedgerEmitter(producer, self.codec, self.ledger_topic, signer=self._signer())
        try:
            emitter.emit(
                handover_event(
                    HandoverEventType.ACCESSED,
                    referral_id=referral_id,
                    case_id=case_id,
                    actor=self.actor,
                    to_party=self.actor,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    reason=reason[:500],
                )
            )
            if wait:
                producer.flush(30)
        except KafkaError as exc:
            if not wait:
                raise
            raise KafkaBrokerError(
                f"access not recorded, content not shown: {type(exc).__name__}"
            ) from exc
