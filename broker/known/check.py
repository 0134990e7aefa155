"""``referral check`` with known content: which rows hold items another member assessed.

The rows' items are tokenised through the evaluator (blinded; nothing is
published and nothing is remembered) and looked up in the organisation's index,
synced from ``match.tokens`` first. Only for an organisation with the ``known``
connector kind; :class:`KnownUnreachable` when the broker or the evaluator does
not answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaError

from broker.config import Settings
from broker.errors import ReferralError
from broker.kafka import clients
from broker.known.client import EvaluationClient
from broker.known.index import MatchIndex, PreviouslyAssessed
from broker.known.pdq import group_reference, is_chunk_kind
from broker.known.publish import item_inputs, item_pdqs
from broker.network import Network
from broker.security.keys import load_trust

__all__ = ["KnownRow", "KnownUnreachable", "check_known", "checks_known"]

#: The longest a check waits for the evaluator's answer (seconds).
CHECK_TIMEOUT = 10.0


class KnownUnreachable(ReferralError):
    """The evaluator (or the broker) could not be reached: known content was not checked."""


@dataclass(frozen=True)
class KnownRow:
    """One item of one checked row that another member assessed before."""

    label: str
    referral_id: str
    item_id: str
    hit: PreviouslyAssessed


def checks_known(network: Network, org: str) -> bool:
    """True if ``org`` has the ``known`` kind and the network an evaluator."""
    return network.known is not None and "known" in network.organisation(org).connectors


def check_known(
    settings: Settings,
    network: Network,
    org: str,
    rows: Sequence[tuple[str, str, Mapping[str, Any]]],
) -> list[KnownRow]:
    """The known items of ``(label, referral id, document)`` rows, in order."""
    jobs = [(label, rid, item_inputs(doc)) for label, rid, doc in rows]
    pdqs = {rid: item_pdqs(doc) for _, rid, doc in rows}
    flat = [i.data for _, _, inputs in jobs for i in inputs]
    if not flat:
        return []
    try:
        producer = clients.producer(settings, role=f"check-{org}")
    except (ReferralError, KafkaError) as exc:
        raise KnownUnreachable(f"the broker could not be reached ({type(exc).__name__})") from exc
    evaluator = network.known.evaluator if network.known is not None else "(none)"
    index = MatchIndex.for_org(settings, org)
    client = EvaluationClient(settings, network, org, producer, timeout=CHECK_TIMEOUT)
    consumer = None
    try:
        consumer = clients.consumer(settings, group_id=None, role=f"check-sync-{org}")
        trust = load_trust(network, settings.network_file)
        topic = settings.topic_names().match_tokens
        index.sync(consumer, topic, trust, network.network.allow_plain, idle=1.0)
        tokens = iter(client.tokens(flat))
        now_ms = int(time.time() * 1000)
        out: list[KnownRow] = []
        for label, rid, inputs in jobs:
            by_item: dict[str, list[tuple[str, str, bytes]]] = {}
            for inp in inputs:
                token = next(tokens)
                by_item.setdefault(inp.item_id, []).append((inp.kind, token.key_id, token.value))
            for item_id, mine in by_item.items():
                hit = _lookup(index, mine, rid, item_id, pdqs.get(rid, {}).get(item_id), now_ms)
                if hit is not None:
                    out.append(KnownRow(label, rid, item_id, hit))
        return out
    except (ReferralError, KafkaError) as exc:
        what = str(exc).splitlines()[0] if isinstance(exc, ReferralError) else type(exc).__name__
        raise KnownUnreachable(f"the evaluator {evaluator} could not be reached: {what}") from exc
    finally:
        if consumer is not None:
            consumer.close()
        client.close()
        index.close()
        producer.close(5)


def _lookup(
    index: MatchIndex,
    mine: list[tuple[str, str, bytes]],
    rid: str,
    item_id: str,
    pdq: bytes | None,
    now_ms: int,
) -> PreviouslyAssessed | None:
    """An exact match of the item's tokens, else its nearest PDQ near-duplicate."""
    hit = index.match([m for m in mine if not is_chunk_kind(m[0])], rid, item_id, now_ms)
    chunks = sorted((kind, key_id, t) for kind, key_id, t in mine if is_chunk_kind(kind))
    if hit is not None or pdq is None or len(chunks) != 32:
        return hit
    tokens = [t for _, _, t in chunks]
    return index.near(chunks[0][1], tokens, pdq, group_reference(tokens, rid, item_id), now_ms)
