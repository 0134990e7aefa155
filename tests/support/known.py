"""Shared helpers of the known-content tests: a keyed network with an evaluator, a running one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.known.keystore import OprfKeys, oprf_dir
from broker.known.service import EvaluationService
from broker.network import Network, parse_network
from broker.wire.codec import Codec
from tests.support.kafka import provision_network
from tests.support.security import give_keys

HOTLINES = ("hl-a", "hl-b", "hl-c")

NETWORK = """
[network]
name = "known-content test network"
allow_plain = false
trust_file = "{trust}"

[known]
evaluator = "secretariat"
rate_items = {rate}
rate_seconds = 3600

[[organisations]]
id = "hl-a"
name = "Hotline A"
role = "hotline"
country = "NL"

[[organisations]]
id = "hl-b"
name = "Hotline B"
role = "hotline"
country = "DE"

[[organisations]]
id = "hl-c"
name = "Hotline C"
role = "hotline"
country = "SE"

[[organisations]]
id = "police-fr"
name = "Police FR"
role = "police"
country = "FR"

[[organisations]]
id = "secretariat"
name = "Secretariat"
role = "fallback"
country = "NL"

[routing]
fallback = "secretariat"
[routing.jurisdictions]
NL = ["hl-a"]
DE = ["hl-b"]
SE = ["hl-c"]
FR = ["police-fr"]
"""


def known_network(settings: Settings, *, rate: int = 100_000) -> tuple[Settings, Network]:
    """Write the test network (keys for every member, an OPRF key), provision it."""
    trust = Path(settings.state_dir) / "trust.toml"
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    text = NETWORK.format(trust=trust, rate=rate)
    path = Path(settings.state_dir) / "network.toml"
    path.write_text(text, encoding="utf-8")
    network = parse_network(text, str(path))
    settings = settings.model_copy(update={"network_file": path})
    give_keys(settings, trust, *HOTLINES, "police-fr", "secretariat")
    OprfKeys(oprf_dir(settings, "secretariat")).create()
    provision_network(settings, network)
    return settings, network


@contextmanager
def running_evaluator(
    settings: Settings, network: Network, **kw: Any
) -> Iterator[EvaluationService]:
    """An evaluation service consuming in a thread until the block ends."""
    service = EvaluationService(settings, network, Codec.from_settings(settings), **kw)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(30)
