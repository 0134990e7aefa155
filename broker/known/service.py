"""The evaluation service: the evaluator's long-running consumer of ``known.evaluate``.

Like the router, it is a consume loop (:class:`broker.kafka.service.LoopService`).
Each request (blinded elements only, signed by the requesting organisation) is
checked, rate-limited per organisation (:class:`broker.known.tokens.Evaluator`),
evaluated with the current OPRF key (or the one it names, while kept) and answered
on ``known.evaluated``, signed by the evaluator. Every evaluation and every refusal
is a ledger event (EVALUATED / EVALUATION_REFUSED) that records the count, the key
id and the reason, never an element. The key is rotated when older than
``known.rotate_days`` (checked on each request and at start).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer

from broker.config import Settings
from broker.errors import ConfigError, SignatureInvalid
from broker.kafka.loop import RecordContext
from broker.kafka.service import ConsumerFactory, Durable, LoopService
from broker.known.errors import EvaluationRefused, OprfError
from broker.known.keystore import OprfKeys, oprf_dir
from broker.known.ratestore import RateStore, rate_path
from broker.known.tokens import EvaluationRequest, Evaluator, RateLimit
from broker.known.wire import Answer, decode_request, encode_answer, sign_known, verify_known
from broker.ledger.events import HandoverEventType
from broker.network import KnownContent, Network
from broker.security.keys import LiveKeys, LiveTrust, key_dir
from broker.security.signing import ledger_signer
from broker.wire.codec import Codec

__all__ = ["EvaluationService", "known_settings"]

log = logging.getLogger("referral.known.evaluator")

_NO_REFERRAL = "00000000-0000-0000-0000-000000000000"


def known_settings(network: Network) -> KnownContent:
    """The network's ``[known]`` table; ConfigError if known-content matching is off."""
    if network.known is None:
        raise ConfigError("the network file has no [known] table: known-content matching is off")
    return network.known


def _request_uuid(request_id: str) -> str:
    try:
        return str(uuid.UUID(request_id))
    except ValueError:
        return _NO_REFERRAL


class EvaluationService(LoopService[Durable]):
    """The evaluator's consume loop: evaluates, answers, records, refuses over the rate."""

    name = "evaluator"

    def __init__(
        self,
        settings: Settings,
        network: Network,
        codec: Codec,
        *,
        clock: Callable[[], float] = time.time,
        producer: KafkaProducer | None = None,
        consumer_factory: ConsumerFactory | None = None,
        trust: LiveTrust | None = None,
        poll_timeout_ms: int = 200,
    ) -> None:
        self.known = known_settings(network)
        self.network = network
        evaluator = self.known.evaluator
        self.clock = clock
        self.oprf = OprfKeys(oprf_dir(settings, evaluator))
        self.ring = self.oprf.ring()
        limit = RateLimit(self.known.rate_items, self.known.rate_seconds)
        self.windows = RateStore(rate_path(settings, evaluator))
        self.evaluator = Evaluator(self.ring, limit, clock, windows=self.windows)
        self.keys = LiveKeys(key_dir(settings, evaluator), evaluator)
        self.trust = trust or LiveTrust(network, settings.network_file)
        self.evaluated = self.refused = 0
        super().__init__(
            settings,
            evaluator,
            codec,
            [settings.topic_names().evaluate],
            "evaluator",
            [],
            producer=producer,
            consumer_factory=consumer_factory,
            poll_timeout_ms=poll_timeout_ms,
            signer=ledger_signer(self.keys, evaluator),
            trace_records=False,
        )
        self.rotate_if_due()

    def close(self) -> None:
        """Stop consuming, then close the rate windows' file."""
        try:
            super().close()
        finally:
            self.windows.close()

    def rotate_if_due(self) -> str | None:
        """Rotate the OPRF key if it is older than ``rotate_days``; the new key id."""
        new = self.oprf.rotate_if_due(self.ring, self.known.rotate_days, self.clock())
        if new is not None:
            log.info("OPRF key rotated: %s is current", new)
        return new

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Answer one evaluation request (evaluated elements, or a refusal)."""
        self.rotate_if_due()
        try:
            request = decode_request(record.value or b"")
        except OprfError as exc:
            ctx.dead_letter("known_decode", exc)
            return
        answer = self._answer(record, request.request, request.org, request.key, request.blinded)
        value = encode_answer(answer)
        headers = sign_known(self.keys.current(), "answer", value)
        names = self.names
        ctx.send(names.evaluated, key=request.org.encode(), value=value, headers=headers)
        kind, reason = (
            (HandoverEventType.EVALUATION_REFUSED, answer.refused)
            if answer.refused is not None
            else (
                HandoverEventType.EVALUATED,
                f"{len(answer.evaluated)} elements, key {answer.key}",
            )
        )
        ctx.event(
            kind,
            _request_uuid(request.request),
            "",
            from_party=request.org,
            to_party=self.org_id,
            reason=reason,
        )

    def _answer(
        self, record: Any, request_id: str, org: str, key: str | None, blinded: tuple[bytes, ...]
    ) -> Answer:
        try:
            if not self.network.has_organisation(org):
                raise EvaluationRefused(f"{org[:64]} is not an organisation of the network")
            verify_known(
                record.headers,
                record.value or b"",
                self.trust.current(),
                "request",
                org,
                self.network.network.allow_plain,
            )
            response = self.evaluator.evaluate(EvaluationRequest(org, blinded, key))
        except (EvaluationRefused, OprfError, SignatureInvalid) as exc:
            self.refused += 1
            reason = str(exc).splitlines()[0][:300]
            log.warning("evaluation refused for %s: %s", org[:64], type(exc).__name__)
            return Answer(request_id, org, key, refused=reason)
        self.evaluated += len(blinded)
        return Answer(request_id, org, response.key_id, response.evaluated)
