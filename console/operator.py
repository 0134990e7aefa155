"""The operator's desk: flows, a case's trace, dead letters, ledger verification, topics.

Metadata only — ids, organisations, jurisdictions, topics, times, statuses —
from the handover ledger (:mod:`broker.ledger.store`, the pure views of
:mod:`broker.ledger.views`, the same as ``referral flows`` / ``trace``), the
dead-letter topic (:mod:`broker.kafka.deadletter`, as ``referral dlq``) and
the broker's topic counts (as ``referral topics list``). Nothing here holds a
key or opens a body.

A replayed dead letter is recorded with who replayed it (the name the operator
typed) in ``<state_dir>/console/replays.jsonl`` (a private file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kafka.errors import KafkaError

from broker.config import Settings
from broker.errors import BrokerError, ConfigError
from broker.ids import resolve_id
from broker.kafka import clients
from broker.kafka.deadletter import DeadLetter, read_dead_letters, replay_dead_letter
from broker.kafka.provision import describe_topics
from broker.ledger.store import LedgerStore, Verification
from broker.ledger.views import Flows, HandoverRecord, Trace, flows, resolved_dead_letters, trace
from broker.network import Network
from broker.private import append_private, private_dir
from broker.security.keys import load_trust
from broker.wire.codec import Codec
from cli.operator_cmd import held_heads
from cli.topics_cmd import TopicStats, topic_stats
from console import ledger

__all__ = ["DeadLetterRow", "OperatorDesk", "Replay"]


@dataclass(frozen=True)
class DeadLetterRow:
    """A dead letter as the console lists it (no payload)."""

    letter: DeadLetter
    resolved: bool

    @property
    def at(self) -> datetime:
        """When it was dead-lettered."""
        return datetime.fromtimestamp(self.letter.at_ms / 1000, UTC)


@dataclass(frozen=True)
class Replay:
    """One recorded replay: which dead letter, who, when, and whether it was sent."""

    at: str
    by: str
    letter_id: str
    original_topic: str
    referral_id: str | None
    sent: bool
    skipped: str | None


class OperatorDesk:
    """Everything the console's operator pages do."""

    def __init__(self, settings: Settings, network: Network, codec: Codec) -> None:
        self.settings = settings
        self.network = network
        self.codec = codec
        self.names = settings.topic_names()
        self.audit = Path(settings.state_dir) / "console" / "replays.jsonl"

    def records(self, referral_id: str | None = None) -> list[HandoverRecord]:
        """Handover records from the local ledger store, synced from the topic first."""
        return ledger.records(self.settings, self.codec, referral_id)

    def flows(self, since: datetime | None = None) -> Flows:
        """The network's flows, as ``referral flows`` computes them."""
        return flows(
            self.records(), self.network.deadlines, self.names, datetime.now(UTC), since=since
        )

    def trace(self, given: str) -> Trace:
        """The timeline of the referral ``given`` names (id or unambiguous prefix)."""
        referral_id = resolve_id(given, ledger.referral_ids(self.settings, self.codec))
        records = self.records(referral_id)
        return trace(records, referral_id, self.network.deadlines, self.names, datetime.now(UTC))

    def dead_letters(self) -> list[DeadLetterRow]:
        """Every dead letter, marked resolved where a later delivery made it stale."""
        consumer = clients.consumer(self.settings, group_id=None, role="console-dlq")
        try:
            letters = list(read_dead_letters(consumer, self.names.deadletter, timeout=5))
        except KafkaError as exc:
            raise BrokerError(f"cannot read dead letters: {type(exc).__name__}") from exc
        finally:
            consumer.close()
        resolved = resolved_dead_letters(
            ((d.id, d.referral_id, d.stage, d.actor, d.at_ms) for d in letters), self.records()
        )
        return [DeadLetterRow(d, d.id in resolved) for d in letters]

    def dead_letter(self, letter_id: str) -> DeadLetterRow:
        """One dead letter by id (``partition:offset``); ConfigError if there is none."""
        for row in self.dead_letters():
            if row.letter.id == letter_id:
                return row
        raise ConfigError(f"no dead letter with id {letter_id}")

    def replay(self, letter_id: str, by: str) -> Replay:
        """Replay one dead letter to its original intake and record who did it."""
        by = " ".join(by.split())[:80]
        if not by:
            raise ConfigError("name who replays (it is recorded)")
        row = self.dead_letter(letter_id)
        producer = clients.producer(self.settings, role="console-dlq")
        try:
            skipped = replay_dead_letter(
                producer, row.letter, {self.names.intake, self.names.status_intake}
            )
            producer.flush(30)
        except KafkaError as exc:
            raise BrokerError(f"replay not sent: {type(exc).__name__}") from exc
        finally:
            producer.close(10)
        done = Replay(
            at=datetime.now(UTC).isoformat(),
            by=by,
            letter_id=row.letter.id,
            original_topic=row.letter.original_topic,
            referral_id=row.letter.referral_id,
            sent=skipped is None,
            skipped=skipped,
        )
        private_dir(self.audit.parent, "console state")
        append_private(self.audit, (json.dumps(done.__dict__, sort_keys=True) + "\n").encode())
        return done

    def replays(self) -> list[Replay]:
        """Every recorded replay, newest first."""
        if not self.audit.exists():
            return []
        out = []
        for line in self.audit.read_text(encoding="utf-8").splitlines():
            try:
                out.append(Replay(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return out[::-1]

    def verification(self) -> Verification:
        """``referral ledger verify --offline``: signatures, chain and the checkpoints held here."""
        self.records()
        trust = load_trust(self.network, self.settings.network_file)
        with LedgerStore.for_settings(self.settings) as store:
            return store.verify(
                trust,
                codec=self.codec,
                allow_plain=self.network.network.allow_plain,
                heads=held_heads(self.settings),
            )

    def topics(self) -> dict[str, TopicStats]:
        """This deployment's topics with message counts and consumer-group lag."""
        admin = clients.admin_client(self.settings)
        try:
            found = describe_topics(admin)
            prefix = self.settings.topic_prefix
            if prefix:
                found = {n: p for n, p in found.items() if n.startswith(prefix)}
            return topic_stats(self.settings, admin, dict(sorted(found.items())))
        except KafkaError as exc:
            raise BrokerError(f"cannot list topics: {type(exc).__name__}") from exc
        finally:
            admin.close()
