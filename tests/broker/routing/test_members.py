"""The router group's assignor without a broker: who is vouched for, who gets partitions."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment

from broker.config import Settings
from broker.routing.members import TOKEN_WINDOW_S, RouterAssignor
from broker.security.keys import ROUTER, LiveKeys, key_dir, load_trust
from tests.support.security import give_keys, keyed_network

GROUP = "t-members.router"
TOPICS = ("t.intake", "t.status.intake")
NOW = 1_800_000_000.0


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Any]:
    trust = tmp_path / "trust.toml"
    settings = Settings(state_dir=tmp_path / "state", network_file=tmp_path / "network.toml")
    give_keys(settings, trust, "hl-a", ROUTER)
    network = keyed_network(trust)
    store = load_trust(network)
    return {
        "router": LiveKeys(key_dir(settings, ROUTER), ROUTER),
        "hl-a": LiveKeys(key_dir(settings, "hl-a"), ROUTER),  # hl-a's key under the router's name
        "trust": lambda: store,
        "none": LiveKeys(tmp_path / "no-keys", ROUTER),
    }


def _assignor(parts: dict[str, Any], keys: str = "router", at: float = NOW) -> RouterAssignor:
    return RouterAssignor(GROUP, parts[keys], parts["trust"], clock=lambda: at)


def _member(member_id: str, assignor: RouterAssignor) -> Any:
    return SimpleNamespace(member_id=member_id, metadata=assignor.metadata(TOPICS))


CLUSTER = SimpleNamespace(partitions_for_topic=lambda topic: {0, 1, 2})


def _given(plan: dict[str, Any], member_id: str) -> list[tuple[str, list[int]]]:
    return [(str(t), list(p)) for t, p in plan[member_id].assigned_partitions]


def test_only_members_a_router_key_vouches_for_get_partitions(
    parts: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="referral.router.members")
    leader = _assignor(parts)
    members = [
        _member("router-1", leader),
        _member("router-2", _assignor(parts)),
        _member("stale-1", _assignor(parts, at=NOW - TOKEN_WINDOW_S - 1)),
        _member("forged-1", _assignor(parts, keys="hl-a")),  # another member's key
        _member("bare-1", _assignor(parts, keys="none")),  # no token at all
        _member("other-group-1", RouterAssignor("elsewhere", parts["router"], parts["trust"])),
    ]
    plan = leader.assign(CLUSTER, members)
    assert _given(plan, "router-1") == [(TOPICS[0], [0, 2]), (TOPICS[1], [0, 2])]
    assert _given(plan, "router-2") == [(TOPICS[0], [1]), (TOPICS[1], [1])]
    for stranger in ("stale-1", "forged-1", "bare-1", "other-group-1"):
        assert _given(plan, stranger) == [], stranger
    assert leader.strangers == 4
    [line] = [r.getMessage() for r in caplog.records]
    assert "4 member(s) without a router's signature" in line
    assert "forged-1" in line

    # Each router checks the leader's signature on what it was given, bound to its member id.
    router_2 = _assignor(parts)
    router_2.member_id = lambda: "router-2"
    router_2.on_assignment(plan["router-2"], 1)
    assert router_2.unvouched == 0
    router_2.on_assignment(plan["stale-1"], 1)  # another member's (empty) assignment, replayed
    assert router_2.unvouched == 1


def test_an_assignment_from_a_stranger_leading_the_group_is_an_error_line(
    parts: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="referral.router.members")
    router = _assignor(parts)
    router.member_id = lambda: "router-1"
    router.on_assignment(ConsumerProtocolAssignment(0, [(TOPICS[0], [1])], b""), 1)
    assert router.unvouched == 1
    assert "a stranger leads the group" in caplog.records[0].getMessage()


@pytest.mark.parametrize("keys", ["none", "hl-a"])
def test_a_router_without_a_trusted_key_vouches_for_every_member_and_says_so(
    parts: dict[str, Any], caplog: pytest.LogCaptureFixture, keys: str
) -> None:
    """No key, or one the trust store does not hold as the router's: it must not starve."""
    caplog.set_level(logging.WARNING, logger="referral.router.members")
    bare = _assignor(parts, keys=keys)
    members = [_member("a-1", bare), _member("b-1", bare)]
    plan = bare.assign(CLUSTER, members)
    assert _given(plan, "a-1") == [(TOPICS[0], [0, 2]), (TOPICS[1], [0, 2])]
    assert bare.strangers == 0
    bare.assign(CLUSTER, members)
    assert [r.getMessage() for r in caplog.records] == [
        f"router group {GROUP}: this router has no key the trust store holds, so group members"
        " are not checked (run `referral keys init router`)"
    ]
