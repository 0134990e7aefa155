"""Unattributable dead letters: counted, and recorded as one summary event per batch.

A record nobody can be held to (unsigned, signed with a key that is not the
emitter's, undecodable) is dead-lettered whole like any other — its bytes are
kept on the dead-letter topic — but it gets no signed ledger entry of its own:
otherwise one junk record written for free costs the network a signed, stored,
checkpointed entry. :class:`DeadLetterTally` counts a consumed batch's such
records, and the loop records them as one ``DEAD_LETTERED`` event per topic,
partition, stage and error class, whose reason says how many and which offsets
(``STATUS_VERIFY: SignatureInvalid x812, offsets 100-911``).
:func:`summarised` reads that reason back (the ledger's views count by it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from broker.errors import SignatureInvalid
from broker.ledger.batchwriter import EventFacts
from broker.security.signing import has_signature
from broker.wire.models import HandoverEventType
from broker.wire.topics import RecordHeaders

__all__ = [
    "UNATTRIBUTED_REFERRAL",
    "DeadLetterTally",
    "attributable",
    "summarised",
    "summary_reason",
]

#: The referral id of a summary event (it is about no one referral).
UNATTRIBUTED_REFERRAL = "00000000-0000-0000-0000-000000000000"

_SUMMARY = re.compile(r"^(?P<what>[A-Z_]+: [A-Za-z_]\w*) x(?P<n>\d+), offsets \d+-\d+$")


def attributable(exc: BaseException, headers: RecordHeaders, *, verified: bool = True) -> bool:
    """Whether a record refused with ``exc`` can be held to a member: it is signed, and
    ``verified`` (the checks verify the signature before anything else, so a refusal that
    is not the signature's own came after it held). False without checks (``verified``)."""
    return verified and has_signature(headers) and not isinstance(exc, SignatureInvalid)


def summary_reason(stage: str, error_class: str, count: int, first: int, last: int) -> str:
    """The reason of a summary event (stage, error class, count and offset range)."""
    return f"{stage}: {error_class} x{count}, offsets {first}-{last}"


def summarised(reason: str | None) -> tuple[str, int] | None:
    """``(stage: error class, count)`` of a summary event's reason; None for any other."""
    found = _SUMMARY.match(reason or "")
    return (found["what"], int(found["n"])) if found else None


@dataclass
class _Group:
    count: int
    first: int
    last: int


class DeadLetterTally:
    """A batch's unattributable dead letters, grouped by topic, partition, stage and error."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, int, str, str], _Group] = {}

    def __len__(self) -> int:
        return sum(g.count for g in self._groups.values())

    def add(self, record: Any, stage: str, error_class: str) -> None:
        """Count one dead-lettered record (a consumed record: topic, partition, offset)."""
        key = (str(record.topic), int(record.partition), stage, error_class)
        offset = int(record.offset)
        group = self._groups.get(key)
        if group is None:
            self._groups[key] = _Group(1, offset, offset)
        else:
            group.count += 1
            group.first = min(group.first, offset)
            group.last = max(group.last, offset)

    def events(self, at_ms: int) -> list[EventFacts]:
        """One DEAD_LETTERED event per group (at its first offset), for a batched ledger."""
        return [
            EventFacts(
                HandoverEventType.DEAD_LETTERED.value,
                UNATTRIBUTED_REFERRAL,
                "-",
                None,
                None,
                topic,
                partition,
                g.first,
                summary_reason(stage, error, g.count, g.first, g.last),
                None,
                at_ms,
            )
            for (topic, partition, stage, error), g in self._groups.items()
        ]
