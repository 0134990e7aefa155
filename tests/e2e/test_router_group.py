"""A stranger in consumer group ``router`` swallows nothing (issue 23's "must show").

The embedded broker has no ACLs: anyone can join the router's group. A stranger
with the stock assignors is refused by the broker (its protocols are not the
group's); one that names the routers' protocol is noticed by the leading router
(one WARNING line, the strangers counter), assigned nothing, and the referrals
published while it stays reach police-nl within 60 s — with the outbox's
republish set to 10 minutes, so no re-send does it. One that joined first and
leads the group is left by the router for its fallback group: what it consumes
then is routed there too, within 60 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import InconsistentGroupProtocolError

from broker.config import Settings
from broker.network import Network, parse_network
from broker.routing.members import PROTOCOL
from broker.security.keys import ROUTER
from connectors.runtime import ConnectorRuntime
from tests.conftest import GROUP_TIMINGS
from tests.e2e.test_trust import ORGS, _network_text
from tests.support.connectors import ENV, codec_for, referral_json, wait_for
from tests.support.kafka import RouterThread, provision_network, start_router
from tests.support.security import give_keys

pytestmark = pytest.mark.slow

#: Long enough that no republish happens during the test.
REPUBLISH_AFTER_S = 600


class Copycat(RangePartitionAssignor):  # type: ignore[misc]
    """The stock range assignor under the routers' protocol name, with no router's token."""

    name = PROTOCOL


@pytest.fixture
def keyed(provisioned: Settings, tmp_path: Path) -> tuple[Settings, Network]:
    """The trust tests' sealed network, republishing only after 10 minutes."""
    trust = tmp_path / "trust.toml"
    give_keys(provisioned, trust, *ORGS, ROUTER)
    network_file = tmp_path / "network.toml"
    network_file.write_text(_network_text(trust, REPUBLISH_AFTER_S), encoding="utf-8")
    settings = Settings(**{**provisioned.model_dump(), "network_file": network_file})
    network = parse_network(network_file.read_text(), str(network_file))
    provision_network(settings, network)
    return settings, network


class Stranger:
    """A consumer in group ``router`` that polls and commits what it is given, in a thread."""

    def __init__(self, settings: Settings, **config: Any) -> None:
        names = settings.topic_names()
        self.consumer = KafkaConsumer(
            names.intake,
            names.status_intake,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.topic_prefix + "router",
            client_id="stranger",
            enable_auto_commit=True,
            auto_offset_reset="latest",
            **GROUP_TIMINGS,
            **config,
        )
        self.swallowed = 0
        self.by_topic: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stranger", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                for tp, records in self.consumer.poll(200).items():
                    self.swallowed += len(records)
                    self.by_topic[tp.topic] += len(records)
        except BaseException as exc:  # the test looks at it
            self.error = exc
        finally:
            self.consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)


@pytest.fixture
def running(keyed: tuple[Settings, Network]) -> Iterator[dict[str, Any]]:
    """The router (warmed up: it owns the intake) and hl-a's and police-nl's connectors."""
    settings, network = keyed
    codec = codec_for(settings)
    with ExitStack() as stack:
        router = start_router(settings, network, codec)
        stack.callback(router.stop)
        out: dict[str, Any] = {"router": router}
        for org in ("hl-a", "police-nl"):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(rt.stop)
            out[org] = rt.start()
        _publish_and_wait(out, 1, "the warm-up referral")
        yield out


def _publish_and_wait(rts: dict[str, Any], n: int, what: str) -> float:
    """Publish ``n`` referrals of hl-a for NL; seconds until police-nl holds them all."""
    inbox = rts["police-nl"].inbox
    before = len(inbox.received())
    rows = [(f"r{i}", referral_json("hl-a", "NL")) for i in range(n)]
    start = time.monotonic()
    result = rts["hl-a"].publisher.publish(rows)
    assert all(p.sent for p in result.published)
    wait_for(lambda: len(inbox.received()) == before + n, 60, what, step=0.2)
    return time.monotonic() - start


def test_a_stranger_naming_the_routers_protocol_is_noticed_and_swallows_nothing(
    running: dict[str, Any], keyed: tuple[Settings, Network], caplog: pytest.LogCaptureFixture
) -> None:
    settings, _ = keyed
    caplog.set_level(logging.WARNING, logger="referral.router.members")
    router: RouterThread = running["router"]
    assignor = router.router.assignor
    stranger = Stranger(settings, partition_assignment_strategy=[Copycat])
    try:
        joined = time.monotonic()
        wait_for(lambda: assignor.strangers >= 1, 60, "the router to notice the stranger")
        noticed_s = time.monotonic() - joined
        lines = [
            r.getMessage() for r in caplog.records if "without a router's signature" in r.message
        ]
        assert lines, "no WARNING line naming the stranger"
        assert "stranger-" in lines[0]
        # Six referrals while the stranger stays in the group: all delivered, none swallowed.
        took = _publish_and_wait(running, 6, "six referrals while the stranger is in the group")
        assert took < 60
        assert stranger.swallowed == 0
        assert stranger.error is None
        assert assignor.unvouched == 0  # the router led: its own assignment is signed
    finally:
        stranger.close()
    print(f"stranger noticed after {noticed_s:.1f} s; 6 referrals delivered in {took:.1f} s")


def test_a_stranger_with_the_stock_assignors_cannot_join(
    running: dict[str, Any], keyed: tuple[Settings, Network]
) -> None:
    settings, _ = keyed
    stranger = Stranger(settings)
    try:
        wait_for(lambda: stranger.error is not None, 60, "the broker to refuse the stranger")
        assert isinstance(stranger.error, InconsistentGroupProtocolError)
        assert stranger.swallowed == 0
        took = _publish_and_wait(running, 6, "six referrals after the refused join")
        assert took < 60
    finally:
        stranger.close()


def test_a_stranger_leading_the_group_swallows_nothing_it_is_not_routed_again(
    keyed: tuple[Settings, Network], caplog: pytest.LogCaptureFixture
) -> None:
    """The stranger joined first and leads: the router it hands partitions to says so, moves
    to its fallback group, and what the stranger consumes from then on reaches police-nl
    within 60 s (republish after 10 minutes: no re-send does it)."""
    settings, network = keyed
    caplog.set_level(logging.WARNING, logger="referral.router.members")
    codec = codec_for(settings)
    stranger = Stranger(settings, partition_assignment_strategy=[Copycat])
    with ExitStack() as stack:
        stack.callback(stranger.close)
        wait_for(
            lambda: bool(stranger.consumer.assignment()), 60, "the stranger alone in the group"
        )
        joined = time.monotonic()
        router = start_router(settings, network, codec)
        stack.callback(router.stop)
        rts: dict[str, Any] = {"router": router}
        for org in ("hl-a", "police-nl"):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(rt.stop)
            rts[org] = rt.start()
        assignor = router.router.assignor
        wait_for(lambda: router.router.fallbacks >= 1, 60, "the router to leave the stranger")
        moved_s = time.monotonic() - joined
        assert assignor.unvouched >= 1

        def said(*parts: str) -> bool:  # the warning follows the move: wait for it too
            return any(all(p in r.getMessage() for p in parts) for r in caplog.records)

        wait_for(lambda: said("a stranger leads the group"), 30, "the stranger named")
        wait_for(lambda: said("moves to group", ".fb-"), 30, "the move logged")
        took = _publish_and_wait(rts, 6, "six referrals while the stranger leads its group")
        assert took < 60
        # The stranger still consumed and committed them in its group: swallowed, yet delivered.
        intake = settings.topic_names().intake
        wait_for(lambda: stranger.by_topic[intake] == 6, 30, "the stranger to consume the six")
        wait_for(lambda: not rts["hl-a"].outbox.pending(), 60, "the RECEIVED statuses back")
        assert stranger.error is None
        assert rts["police-nl"].inbox.received()
    print(f"router moved after {moved_s:.1f} s; 6 swallowed referrals delivered in {took:.1f} s")
