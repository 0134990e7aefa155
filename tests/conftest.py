"""Test harness: one real broker per session, unique names per test.

The embedded Tansu broker is started once on a free loopback port, or an
existing cluster is used when ``REFERRAL_TEST_BOOTSTRAP`` names one. Each test
that touches Kafka gets its own topic namespace (a unique prefix), so tests on
one broker never see each other's records.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.clients import wait_for_broker
from broker.kafka.embedded import EmbeddedBroker
from broker.network import Network, load_network
from broker.wire.codec import Codec
from broker.wire.topics import TopicNames
from tests.support.kafka import provision_network

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_NETWORK = ROOT / "examples" / "network.toml"

#: Consumer timings for the embedded broker (its first group join takes ~half the session timeout).
GROUP_TIMINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


#: Suites that run a whole network of processes (or a browser): under pytest-xdist
#: (``make test``: three workers) they share one worker, so two never compete for the
#: two cores at once.
PROCESS_SUITES = frozenset(
    {
        "test_faults.py",
        "test_router_processes.py",
        "test_broker_restart.py",
        "test_demo_cmd.py",
        "test_browser.py",
        "test_stats_browser.py",
        "test_connector_cmd.py",
        "test_prometheus.py",
    }
)


def _uses_module_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` uses a module-scoped fixture (built once per worker that runs it)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) if info is not None else {}
    return any(d and d[-1].scope == "module" for d in defs.values())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a broker as ``integration``; group the process suites."""
    for item in items:
        if "bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
        if item.path.name in PROCESS_SUITES:
            # The fault matrix alone takes minutes: its own worker, beside the other suites.
            group = "faults" if item.path.name == "test_faults.py" else "processes"
            item.add_marker(pytest.mark.xdist_group(group))
        elif _uses_module_fixture(item):
            # A module's costly fixture (a kept demo, a seeded ledger) is built once, not
            # once on each worker its tests happen to land on.
            item.add_marker(pytest.mark.xdist_group(f"module:{item.path}"))


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a real broker for the whole session."""
    existing = os.environ.get("REFERRAL_TEST_BOOTSTRAP")
    if existing:
        wait_for_broker(existing, timeout=30)
        yield existing
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker.bootstrap


@pytest.fixture
def unique() -> Callable[[str], str]:
    """A factory of names unique to this test run: ``unique("grp")`` → ``grp-1a2b3c4d``."""

    def make(stem: str) -> str:
        return f"{stem}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def topic_names(request: pytest.FixtureRequest) -> TopicNames:
    """A topic namespace of this test alone."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40].strip("-").lower()
    return TopicNames(f"t-{stem}-{uuid.uuid4().hex[:6]}.")


@pytest.fixture
def network() -> Network:
    """The shipped demo network."""
    return load_network(EXAMPLE_NETWORK)


@pytest.fixture
def settings(bootstrap: str, tmp_path: Path, topic_names: TopicNames) -> Settings:
    """Settings pointing at the session broker, this test's namespace and state dir."""
    return Settings(
        bootstrap_servers=bootstrap,
        state_dir=tmp_path / "state",
        network_file=EXAMPLE_NETWORK,
        topic_prefix=topic_names.prefix,
    )


@pytest.fixture
def provisioned(settings: Settings, network: Network) -> Settings:
    """``settings`` with every topic of the demo network created in this test's namespace."""
    provision_network(settings, network)
    return settings


@pytest.fixture
def net() -> Network:
    """The small connector test network (tests/support/connectors.py)."""
    from tests.support.connectors import make_network

    return make_network()


@pytest.fixture
def ready(settings: Settings, net: Network) -> Settings:
    """Settings with the connector test network's topics provisioned."""
    provision_network(settings, net)
    return settings


@pytest.fixture
def codec(ready: Settings) -> Codec:
    """The codec on the embedded registry of ``ready``."""
    return Codec.from_settings(ready)


@pytest.fixture
def producer(ready: Settings) -> Iterator[KafkaProducer]:
    """A producer on the session broker (closed after the test)."""
    p = clients.producer(ready, role="test")
    yield p
    p.close(5)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run the test under umask 022 (the usual default), whatever the runner's."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)
