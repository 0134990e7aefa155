"""A router led by a stranger moves its group: a fallback group only routers can name.

When a stranger joins group ``router`` first it leads it, and
:class:`~broker.routing.members.RouterAssignor` can only say so (ERROR line,
``unvouched``). The router then leaves: it snapshots the group's committed
offsets at once, seeds them into a fallback group named from the router's
private key (a stranger without it cannot guess the name, and one who finds it
on the broker joins late, is led by a router and gets nothing), and joins that.
The stranger keeps consuming the old group, but the fallback group reads the
same intake from where the group stood, so what the stranger swallows from then
on is routed within seconds, not at the origins' republish. Not covered: what it
consumed while no router was in the group before (that waits for the republish).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from broker.config import Settings
from broker.kafka import clients

__all__ = ["FALLBACK_MARK", "committed_offsets", "fallback_group", "seed_offsets"]

log = logging.getLogger("referral.router.members")

#: What joins a group id and its fallback's digest.
FALLBACK_MARK = ".fb-"


def fallback_group(group_id: str, signing: Ed25519PrivateKey) -> str:
    """The next group after ``group_id``: the same for every router (one key), unguessable else."""
    secret = signing.private_bytes_raw()
    digest = hashlib.sha256(b"referral-router-fallback\n" + secret + group_id.encode()).hexdigest()
    return group_id.split(FALLBACK_MARK, 1)[0] + FALLBACK_MARK + digest[:16]


def committed_offsets(
    settings: Settings, group: str, topics: list[str]
) -> dict[TopicPartition, int]:
    """The offsets ``group`` (prefixed) has committed on ``topics`` now ({} if unreadable)."""
    try:
        admin = clients.admin_client(settings)
    except KafkaError as exc:
        log.warning("router group %s: offsets not read: %s", group, type(exc).__name__)
        return {}
    try:
        found: dict[str, Any] = admin.list_group_offsets({group: None})
        return {
            TopicPartition(tp.topic, tp.partition): int(meta.offset)
            for tp, meta in dict(found.get(group) or {}).items()
            if tp.topic in topics and int(meta.offset) >= 0
        }
    except (KafkaError, AttributeError, TypeError) as exc:
        log.warning("router group %s: offsets not read: %s", group, type(exc).__name__)
        return {}
    finally:
        admin.close()


def seed_offsets(settings: Settings, group: str, offsets: dict[TopicPartition, int]) -> bool:
    """Commit ``offsets`` for the (empty) ``group``; False if it already has members."""
    if not offsets:
        return False
    try:
        admin = clients.admin_client(settings)
    except KafkaError:
        return False
    try:
        admin.alter_group_offsets(
            group, {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
        )
        return True
    except KafkaError as exc:  # another router seeded and joined it first: fine
        log.info("router group %s not seeded: %s", group, type(exc).__name__)
        return False
    finally:
        admin.close()
