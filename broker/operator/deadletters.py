"""Dead letters as the operator sees them: listed, marked resolved, replayed on record.

Every replay, from ``referral dlq replay`` or the console, is recorded with who
replayed it in ``<state_dir>/console/replays.jsonl`` (a private file). The
caller hands in a group-less consumer and a producer (or factories of them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from broker.config import Settings
from broker.errors import ConfigError, KafkaBrokerError
from broker.kafka.deadletter import DeadLetter, read_dead_letters, replay_dead_letter
from broker.ledger.views import HandoverRecord, resolved_dead_letters
from broker.private import append_private, private_dir

__all__ = ["DeadLetterRow", "DeadLetters", "Replay", "replayer_name", "with_resolved"]


@dataclass(frozen=True)
class DeadLetterRow:
    """A dead letter as the operator lists it (no payload), and whether it was resolved since."""

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


def with_resolved(
    letters: Sequence[DeadLetter], records: Iterable[HandoverRecord]
) -> list[DeadLetterRow]:
    """Each letter, marked resolved where a later delivery in ``records`` made it stale."""
    resolved = resolved_dead_letters(
        ((d.id, d.referral_id, d.stage, d.actor, d.at_ms) for d in letters), records
    )
    return [DeadLetterRow(d, d.id in resolved) for d in letters]


def replayer_name(by: str) -> str:
    """Who replays, as recorded: whitespace folded, at most 80 characters; ConfigError if empty."""
    by = " ".join(by.split())[:80]
    if not by:
        raise ConfigError("name who replays (it is recorded)")
    return by


class DeadLetters:
    """The dead-letter topic of one deployment: read, replay, and the record of replays."""

    def __init__(
        self,
        settings: Settings,
        consumer: Callable[[], Any],
        producer: Callable[[], Any],
    ) -> None:
        self.settings = settings
        self.names = settings.topic_names()
        self._consumer = consumer
        self._producer = producer
        self.audit = Path(settings.state_dir) / "console" / "replays.jsonl"

    def read(self, timeout: float = 10.0) -> list[DeadLetter]:
        """Every dead letter on the topic (KafkaBrokerError when Kafka cannot be read)."""
        consumer = self._consumer()
        try:
            return list(read_dead_letters(consumer, self.names.deadletter, timeout=timeout))
        except KafkaError as exc:
            raise KafkaBrokerError(f"cannot read dead letters: {type(exc).__name__}") from exc
        finally:
            consumer.close()

    def chosen(self, ids: Iterable[str], *, every: bool = False) -> list[DeadLetter]:
        """The letters ``ids`` name (all with ``every``); ConfigError naming any not found."""
        wanted = set(ids)
        letters = [d for d in self.read() if every or d.id in wanted]
        missing = wanted - {d.id for d in letters}
        if missing:
            raise ConfigError(f"no dead letter with id {', '.join(sorted(missing))}")
        return letters

    def replay(self, letters: Sequence[DeadLetter], by: str) -> list[Replay]:
        """Send ``letters`` back to their intake, awaited, and record each with who replayed."""
        by = replayer_name(by)
        allowed = {self.names.intake, self.names.status_intake}
        producer = self._producer()
        try:
            skipped = [replay_dead_letter(producer, d, allowed) for d in letters]
            producer.flush(30)
        except KafkaError as exc:
            raise KafkaBrokerError(f"replay not sent: {type(exc).__name__}") from exc
        finally:
            producer.close(10)
        at = datetime.now(UTC).isoformat()
        done = [
            Replay(at, by, d.id, d.original_topic, d.referral_id, why is None, why)
            for d, why in zip(letters, skipped, strict=True)
        ]
        if done:
            private_dir(self.audit.parent, "console state")
            lines = "".join(json.dumps(r.__dict__, sort_keys=True) + "\n" for r in done)
            append_private(self.audit, lines.encode())
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
