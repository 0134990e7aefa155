"""The router rides out a broker that is briefly unreachable: nothing lost, no crash."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.config import Settings
from broker.kafka.embedded import EmbeddedBroker, free_port
from broker.network import Network
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, EmbeddedRegistry
from tests.conftest import EXAMPLE_NETWORK
from tests.support.factories import make_referral
from tests.support.kafka import provision_network, publish, read_topic, start_router
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Settings, TcpProxy]]:
    """A private broker reachable only through a proxy that the test can cut."""
    port = free_port()
    proxy = TcpProxy(("127.0.0.1", port))
    broker = EmbeddedBroker(port, advertised=f"127.0.0.1:{proxy.port}", log_path=tmp_path / "b.log")
    broker.start()
    try:
        yield (
            Settings(
                bootstrap_servers=f"127.0.0.1:{proxy.port}",
                network_file=EXAMPLE_NETWORK,
                state_dir=tmp_path / "state",
            ),
            proxy,
        )
    finally:
        broker.stop()
        proxy.close()


def referrals(codec: Codec, n: int) -> tuple[list[tuple[bytes, bytes]], set[str]]:
    base = make_referral().to_avro()
    out, ids = [], set()
    for _ in range(n):
        rid = str(uuid.uuid4())
        env = {
            **base["envelope"],
            "referral_id": rid,
            "priority": "NORMAL",
            "handling": {**base["envelope"]["handling"], "tlp": "GREEN", "recipients": []},
            "jurisdictions": [{"country": "FR", "basis": "VICTIM_LOCATION", "derived": False}],
        }
        out.append((rid.encode(), codec.encode(REFERRAL, {**base, "envelope": env})))
        ids.add(rid)
    return out, ids


def test_router_survives_a_cut_connection(
    proxied: tuple[Settings, TcpProxy], network: Network
) -> None:
    settings, proxy = proxied
    provision_network(settings, network)
    codec = Codec(EmbeddedRegistry())
    names = settings.topic_names()
    first, first_ids = referrals(codec, 400)
    second, second_ids = referrals(codec, 400)
    router = start_router(settings, network, codec)
    try:
        publish(settings, names.intake, first)
        deadline = time.monotonic() + 30
        while not read_topic(settings, names.jurisdiction("FR"), idle=0.2, timeout=5):
            assert time.monotonic() < deadline, "router never started routing"
        proxy.cut()
        time.sleep(3)
        proxy.restore()
        publish(settings, names.intake, second)
        want = first_ids | second_ids
        got: set[str] = set()
        deadline = time.monotonic() + 90
        while got != want and time.monotonic() < deadline:
            got = {
                r.key.decode()
                for r in read_topic(
                    settings, names.jurisdiction("FR"), at_least=len(want), timeout=20
                )
            }
        assert router.thread is not None
        assert router.thread.is_alive(), f"the router died during the outage: {router.error}"
    finally:
        stats = router.stop()
    assert got == want
    assert stats.referrals >= len(want)
