"""Helpers of the police-request tests: the keyed example network, desks, a router thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.kafka import clients
from broker.network import Network, parse_network
from broker.requests.desk import Clock, Desk
from broker.requests.router import RequestRouter
from broker.requests.routes import provision_requests
from broker.security.keys import LiveKeys, OrgKeys, TrustStore, key_dir, load_trust
from broker.security.signing import ledger_signer
from broker.wire.codec import Codec
from tests.support.kafka import provision_network
from tests.support.security import give_keys

ROOT = Path(__file__).resolve().parents[2]
NORDIC = ("police-se", "police-no", "police-dk", "police-fi")
#: Consumer timings for the embedded broker (its first group join takes ~half the session timeout).
GROUP_TIMINGS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


class SimClock:
    """A simulated clock in ms: it moves only when told."""

    def __init__(self, start_ms: int) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now


def keyed_example(settings: Settings, tmp: Path) -> Network:
    """The example network (also written to ``tmp/network.toml``) with keys for every SPOC and
    the router, plain records refused; its topics and the request topics provisioned."""
    trust = tmp / "trust.toml"
    text = (ROOT / "examples" / "network.toml").read_text()
    text = text.replace("allow_plain = true", f'allow_plain = false\ntrust_file = "{trust}"')
    (tmp / "network.toml").write_text(text)
    network = parse_network(text, "keyed-example.toml")
    give_keys(settings, trust, *NORDIC, "police-nl", "police-de", "police-fr", "router")
    provision_network(settings, network)
    admin = clients.admin_client(settings)
    try:
        provision_requests(admin, network, settings.topic_names())
    finally:
        admin.close()
    return network


def org_keys(settings: Settings, org: str) -> OrgKeys:
    """The private keys of ``org`` (made by :func:`keyed_example`)."""
    keys = OrgKeys.load(key_dir(settings, org), org)
    assert keys is not None
    return keys


@dataclass
class Net:
    """A running request network: desks for some SPOCs and a router thread."""

    desks: dict[str, Desk]
    router: RequestRouter
    trust: TrustStore


@contextmanager
def request_network(
    settings: Settings, network: Network, codec: Codec, clock: Clock, orgs: tuple[str, ...] = NORDIC
) -> Iterator[Net]:
    """Desks for ``orgs`` on ``clock`` and a router, closed afterwards."""
    trust = load_trust(network)
    keys = org_keys(settings, "router")
    signer = ledger_signer(LiveKeys.fixed(keys, "router"), "router")
    router = RequestRouter(settings, network, codec, trust, signer=signer, **GROUP_TIMINGS)
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), name="request-router", daemon=True)
    thread.start()
    desks = {
        o: Desk(settings, network, codec, org_keys(settings, o), trust, clock=clock) for o in orgs
    }
    try:
        yield Net(desks, router, trust)
    finally:
        stop.set()
        thread.join(30)
        for desk in desks.values():
            desk.close()
