"""The operator's desk: flows, a case's trace, dead letters, ledger verification, topics.

Metadata only, from the operator service (:mod:`broker.operator`, the same as
``referral flows`` / ``trace`` / ``dlq`` / ``topics list``). Nothing here holds a
key or opens a body. A replayed dead letter is recorded with who replayed it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from kafka.errors import KafkaError

from broker.config import Settings
from broker.errors import ConfigError, KafkaBrokerError
from broker.ids import resolve_id
from broker.kafka import clients
from broker.ledger.store import Verification
from broker.ledger.views import Flows, HandoverRecord, Trace
from broker.network import Network
from broker.operator.deadletters import (
    DeadLetterRow,
    DeadLetters,
    Replay,
    replayer_name,
    with_resolved,
)
from broker.operator.topics import TopicStats, deployment_topics, topic_stats
from broker.operator.views import flows_view, trace_view, verify_ledger
from broker.wire.codec import Codec
from console import ledger

__all__ = ["DeadLetterRow", "OperatorDesk", "Replay"]


class OperatorDesk:
    """Everything the console's operator pages do."""

    def __init__(self, settings: Settings, network: Network, codec: Codec) -> None:
        self.settings = settings
        self.network = network
        self.codec = codec
        self.names = settings.topic_names()
        self.letters = DeadLetters(
            settings,
            consumer=lambda: clients.consumer(settings, group_id=None, role="console-dlq"),
            producer=lambda: clients.producer(settings, role="console-dlq"),
        )

    def records(self, referral_id: str | None = None) -> list[HandoverRecord]:
        """Handover records from the local ledger store, synced from the topic first."""
        return ledger.records(self.settings, self.codec, referral_id)

    def flows(self, since: datetime | None = None) -> Flows:
        """The network's flows, as ``referral flows`` computes them."""
        return flows_view(self.settings, self.network, self.records(), datetime.now(UTC), since)

    def trace(self, given: str) -> Trace:
        """The timeline of the referral ``given`` names (id or unambiguous prefix)."""
        referral_id = resolve_id(given, ledger.referral_ids(self.settings, self.codec))
        records = self.records(referral_id)
        return trace_view(self.settings, self.network, records, referral_id, datetime.now(UTC))

    def dead_letters(self) -> list[DeadLetterRow]:
        """Every dead letter, marked resolved where a later delivery made it stale."""
        return with_resolved(self.letters.read(timeout=5), self.records())

    def dead_letter(self, letter_id: str) -> DeadLetterRow:
        """One dead letter by id (``partition:offset``); ConfigError if there is none."""
        for row in self.dead_letters():
            if row.letter.id == letter_id:
                return row
        raise ConfigError(f"no dead letter with id {letter_id}")

    def replay(self, letter_id: str, by: str) -> Replay:
        """Replay one dead letter to its original intake and record who did it."""
        by = replayer_name(by)
        (done,) = self.letters.replay([self.dead_letter(letter_id).letter], by)
        return done

    def replays(self) -> list[Replay]:
        """Every recorded replay, newest first."""
        return self.letters.replays()

    def verification(self) -> Verification:
        """``referral ledger verify --offline``: signatures, chain and the checkpoints held here."""
        self.records()
        return verify_ledger(self.settings, self.network, self.codec, offline=True)

    def topics(self) -> dict[str, TopicStats]:
        """This deployment's topics with message counts and consumer-group lag."""
        prefix = self.settings.topic_prefix
        admin = clients.admin_client(self.settings)
        try:
            found = dict(sorted(deployment_topics(admin, prefix).items()))
            consumer = clients.consumer(self.settings, group_id=None, role="topics-count")
            try:
                return topic_stats(admin, consumer, found, group_prefix=prefix)
            finally:
                consumer.close()
        except KafkaError as exc:
            raise KafkaBrokerError(f"cannot list topics: {type(exc).__name__}") from exc
        finally:
            admin.close()
