"""Who may route: the router group's partitions go only to members a router's key vouches for.

Without broker ACLs anyone who reaches the cluster can join consumer group
``router`` and, under the stock assignors, be handed intake partitions whose
referrals it then consumes and commits — swallowed. Routers use their own
assignment protocol, :data:`PROTOCOL`, so:

* a consumer with the stock assignors cannot join at all (the broker refuses a
  member whose protocols the group does not share: InconsistentGroupProtocol);
* a member that names :data:`PROTOCOL` must put in its subscription a token
  signed with a router's key (:class:`MemberContext`, fresh within
  :data:`TOKEN_WINDOW_S`); the leader assigns partitions only to members whose
  token verifies, and logs one WARNING line naming the strangers, counted in
  :attr:`RouterAssignor.strangers` (and the ``referral.router.strangers``
  metric);
* every assignment the leader hands out carries its signature over the member
  id and partitions; a router given partitions by a leader that cannot sign
  (a stranger that got to lead the group) logs an ERROR line and counts it in
  :attr:`RouterAssignor.unvouched`, then moves to a fallback group only routers
  can name (:mod:`.fallback`).

All routers of a group must run this protocol (upgrade them together). A router
without a key of its own (a plain development network), or with one the trust
store does not hold, vouches for every member, as the stock assignors did, and
says so once. ACLs on a real cluster remain the first defence (README,
*Production*).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

from broker.errors import SignatureInvalid
from broker.security.keys import ROUTER, LiveKeys, TrustStore
from broker.security.signing import (
    CONTEXT_HEADER,
    KEY_HEADER,
    SIGNATURE_HEADER,
    sign,
    verify_signed,
)

__all__ = ["PROTOCOL", "TOKEN_WINDOW_S", "AssignContext", "MemberContext", "RouterAssignor"]

log = logging.getLogger("referral.router.members")

#: The router group's assignment protocol (the name every member must name).
PROTOCOL = "referral-router-v1"
#: How old a member's signed token may be (it is made anew at every join).
TOKEN_WINDOW_S = 600.0
_HEADERS = (SIGNATURE_HEADER, KEY_HEADER, CONTEXT_HEADER)


@dataclass(frozen=True)
class MemberContext:
    """What a router member's token binds: the group, and when it was signed."""

    DOMAIN: ClassVar[bytes] = b"referral-broker/v1/router-member\n"

    group: str
    signed_at_ms: int

    @property
    def signer(self) -> str:
        """Only a router's key makes a member token."""
        return ROUTER

    def encode(self) -> bytes:
        """The canonical ASCII text of the context."""
        return f"router-member-v1;group={self.group};signed={self.signed_at_ms}".encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> MemberContext:
        """Parse a member context; SignatureInvalid if it is not one."""
        group, signed = _parse(data, "router-member-v1", ("group", "signed"))
        return cls(group, int(signed))


@dataclass(frozen=True)
class AssignContext:
    """What the leader's signature on one member's assignment binds."""

    DOMAIN: ClassVar[bytes] = b"referral-broker/v1/router-assignment\n"

    group: str
    member_id: str
    signed_at_ms: int

    @property
    def signer(self) -> str:
        """Only a router leads the group."""
        return ROUTER

    def encode(self) -> bytes:
        """The canonical ASCII text of the context."""
        return (
            f"router-assign-v1;group={self.group};member={self.member_id};"
            f"signed={self.signed_at_ms}"
        ).encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> AssignContext:
        """Parse an assignment context; SignatureInvalid if it is not one."""
        group, member, signed = _parse(data, "router-assign-v1", ("group", "member", "signed"))
        return cls(group, member, int(signed))


def _parse(data: bytes, version: str, names: Sequence[str]) -> list[str]:
    try:
        head, *parts = data.decode("ascii").split(";")
        fields = dict(p.split("=", 1) for p in parts)
        if head != version or list(fields) != list(names):
            raise ValueError(head)
        int(fields["signed"])
        return [fields[n] for n in names]
    except (UnicodeDecodeError, ValueError) as exc:
        raise SignatureInvalid(f"{version} context is malformed") from exc


def _pack(headers: Iterable[tuple[str, bytes]]) -> bytes:
    found = dict(headers)
    return b"\n".join(found[h] for h in _HEADERS)


def _unpack(data: bytes) -> list[tuple[str, bytes]]:
    parts = bytes(data or b"").split(b"\n")
    if len(parts) != len(_HEADERS):
        raise SignatureInvalid("no router signature")
    return list(zip(_HEADERS, parts, strict=True))


def _partitions_value(assigned: Iterable[Any]) -> bytes:
    """The canonical text of an assignment: ``topic=p,p;topic=p`` (the leader signs it)."""
    pairs = sorted((str(t), sorted(int(x) for x in p)) for t, p in assigned)
    return ";".join(f"{t}={','.join(map(str, p))}" for t, p in pairs).encode()


def _describe(member: Any) -> str:
    """A member id as a log may show it: what a client chose, reduced to safe characters."""
    raw = str(getattr(member, "member_id", ""))[:100]
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "?" for c in raw) or "?"


class RouterAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Round-robin over the members a router's key vouches for; nothing for anyone else."""

    name = PROTOCOL
    version = 0

    def __init__(
        self,
        group: str,
        keys: LiveKeys,
        trust: Callable[[], TrustStore],
        *,
        clock: Callable[[], float] = time.time,
        on_stranger: Callable[[int], None] | None = None,
    ) -> None:
        self.group = group
        self.keys = keys
        self.trust = trust
        self.clock = clock
        self.on_stranger = on_stranger
        #: This member's id in the group (set once the consumer exists; "" until it joined).
        self.member_id: Callable[[], str] = lambda: ""
        #: Members refused partitions so far (by this router, as leader).
        self.strangers = 0
        #: Assignments this router got from a leader that is not a router.
        self.unvouched = 0
        #: Called once per such assignment (the router moves to its fallback group).
        self.on_unvouched: Callable[[], None] | None = None
        self._warned_unkeyed = False

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- what every member does ----------------------------------------------------------
    def metadata(self, topics: Iterable[str]) -> Any:
        """The subscription with this router's signed member token (empty without a key)."""
        current = self.keys.current()
        token = b""
        if current is not None:
            context = MemberContext(self.group, self._now_ms())
            token = _pack(sign(current.signing, current.signing_id, context, b""))
        return ConsumerProtocolSubscription(self.version, sorted(topics), token)

    def on_assignment(self, assignment: Any, generation: Any) -> None:
        """Check the leader's signature on this router's assignment (ERROR line if not)."""
        member_id = self.member_id()
        assigned = list(getattr(assignment, "assigned_partitions", None) or ())
        if self.keys.current() is None:
            return  # unkeyed: nothing to check against
        try:
            context = verify_signed(
                _unpack(getattr(assignment, "user_data", b"") or b""),
                _partitions_value(assigned),
                self.trust(),
                AssignContext,
            )
            if context.group != self.group or context.member_id != member_id:
                raise SignatureInvalid("the assignment is another member's")
        except (SignatureInvalid, TypeError, ValueError) as exc:  # never break the join
            self.unvouched += 1
            log.error(
                "router group %s: this router's %d partition list(s) were assigned by a"
                " member that is not a router (%s): a stranger leads the group;"
                " stop it, or set ACLs (README, Production)",
                self.group,
                len(assigned),
                exc,
            )
            if self.on_unvouched is not None:
                self.on_unvouched()

    # -- what the leader does ------------------------------------------------------------
    def _vouched(self, member: Any, now_ms: int) -> bool:
        try:
            context = verify_signed(
                _unpack(member.metadata.user_data), b"", self.trust(), MemberContext
            )
        except SignatureInvalid:
            return False
        age_ms = now_ms - context.signed_at_ms
        return context.group == self.group and -60_000 <= age_ms <= TOKEN_WINDOW_S * 1000

    def assign(self, cluster: Any, members: Sequence[Any]) -> dict[str, Any]:
        """Each topic's partitions round-robin over the vouched members; strangers get none."""
        current = self.keys.current()
        now_ms = self._now_ms()
        own = SimpleNamespace(metadata=self.metadata(()))
        if current is None or not self._vouched(own, now_ms):
            if not self._warned_unkeyed:
                self._warned_unkeyed = True
                log.warning(
                    "router group %s: this router has no key the trust store holds, so group"
                    " members are not checked (run `referral keys init router`)",
                    self.group,
                )
            vouched = sorted(m.member_id for m in members)
        else:
            vouched = sorted(m.member_id for m in members if self._vouched(m, now_ms))
        strangers = [m for m in members if m.member_id not in vouched]
        if strangers:
            self.strangers += len(strangers)
            if self.on_stranger is not None:
                self.on_stranger(len(strangers))
            log.warning(
                "router group %s: %d member(s) without a router's signature joined and were"
                " assigned nothing: %s",
                self.group,
                len(strangers),
                ", ".join(sorted(_describe(m) for m in strangers)),
            )
        plan: dict[str, dict[str, list[int]]] = {m.member_id: {} for m in members}
        topics = sorted({t for m in members for t in m.metadata.topics})
        for topic in topics:
            takers = [m for m in vouched if topic in _topics_of(members, m)]
            partitions = sorted(cluster.partitions_for_topic(topic) or ())
            for i, partition in enumerate(partitions):
                if takers:
                    plan[takers[i % len(takers)]].setdefault(topic, []).append(partition)
        out = {}
        for member_id, by_topic in plan.items():
            assigned = sorted((t, sorted(p)) for t, p in by_topic.items())
            user_data = b""
            if current is not None:
                context = AssignContext(self.group, member_id, now_ms)
                headers = sign(
                    current.signing, current.signing_id, context, _partitions_value(assigned)
                )
                user_data = _pack(headers)
            out[member_id] = ConsumerProtocolAssignment(self.version, assigned, user_data)
        return out


def _topics_of(members: Sequence[Any], member_id: str) -> set[str]:
    for m in members:
        if m.member_id == member_id:
            return set(m.metadata.topics)
    return set()
