"""The share of known content per origin, for ``referral flows`` (counts only, issue 24).

The operator mirrors the compacted ``match.tokens`` topic into its own index
(``<state_dir>/known-share.sqlite3``, signatures checked) and counts, per origin,
its entries (one per hash or URL of an item) and those another member had
published before. Entries name no referral and no item (their references are
keyed by the token), so only counts come out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError

from broker.config import Settings
from broker.errors import ReferralError
from broker.kafka import clients
from broker.known.index import MatchIndex
from broker.network import Network
from broker.security.keys import load_trust

__all__ = ["KnownShare", "known_shares"]


@dataclass(frozen=True)
class KnownShare:
    """One origin's match entries and how many of them were known before elsewhere."""

    origin: str
    entries: int
    known: int

    @property
    def share(self) -> float:
        """The known entries' share (0 without entries)."""
        return self.known / self.entries if self.entries else 0.0

    def to_json(self) -> dict[str, object]:
        """The ``known_content`` row of ``flows --json``."""
        return {
            "origin": self.origin,
            "entries": self.entries,
            "known_before": self.known,
            "share": round(self.share, 4),
        }


def known_shares(
    settings: Settings, network: Network, *, sync: bool = True
) -> tuple[list[KnownShare], str | None]:
    """The shares per origin, and why the topic was not read (None: it was)."""
    index = MatchIndex(Path(settings.state_dir) / "known-share.sqlite3")
    why = None
    try:
        if sync:
            why = _sync(settings, network, index)
        return [KnownShare(*row) for row in index.shares()], why
    finally:
        index.close()


def _sync(settings: Settings, network: Network, index: MatchIndex) -> str | None:
    try:
        consumer = clients.consumer(settings, group_id=None, role="flows-known")
    except (ReferralError, KafkaError) as exc:
        return f"match tokens not read: {type(exc).__name__}"
    try:
        trust = load_trust(network, settings.network_file)
        topic = settings.topic_names().match_tokens
        index.sync(consumer, topic, trust, network.network.allow_plain, idle=1.0)
    except (ReferralError, KafkaError) as exc:
        return f"match tokens not read: {type(exc).__name__}"
    finally:
        consumer.close()
    return None
