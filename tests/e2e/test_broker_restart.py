"""The network heals itself: a router and every connector ride out an empty broker restart.

One router and the connectors of two hotlines and four receivers run in this
process on a broker of the test's own. Referrals are published before the
broker is killed, while it is down and after it is back; the new broker is
empty (memory-only) and the operator provisions the topics again a little
after it started, as one would by hand. Nothing is restarted: the producers
replace themselves, the consumers rejoin, the outboxes send again. Every
referral must reach each of its receivers exactly once, and everything must be
settled (every RECEIVED back at its origin) within 60 s of the broker's return.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.embedded import EmbeddedBroker
from broker.kafka.provision import ProvisionReport, provision
from broker.network import Network
from broker.wire.topics import TopicNames
from connectors.runtime import ConnectorRuntime
from tests.conftest import EXAMPLE_NETWORK
from tests.support.connectors import (
    ENV,
    TOKEN,
    HookServer,
    codec_for,
    hook_server,
    inbox_files,
    make_network,
    referral_json,
    wait_for,
)
from tests.support.kafka import RouterThread, provision_network, start_router

pytestmark = pytest.mark.slow

HOTLINES = ("hl-a", "hl-b")
RECEIVERS = ("police-nl", "police-de", "police-fr", "secretariat")
#: Jurisdictions cycled through per referral (US is served by nobody: the fallback).
COUNTRIES = ("NL", "DE", "FR", "US", "NL+DE")
#: How long after the broker's return everything must be settled.
SETTLE_BUDGET_S = 60.0

Referral = dict[str, Any]


@pytest.fixture
def hook() -> Iterator[HookServer]:
    with hook_server() as server:
        yield server


def _referrals(origin: str, n: int) -> list[Referral]:
    out = []
    for i in range(n):
        cc = COUNTRIES[i % len(COUNTRIES)]
        if cc == "NL+DE":
            out.append(
                referral_json(
                    origin,
                    "NL",
                    jurisdictions=[
                        {"country": "NL", "basis": "HOSTING", "derived": False},
                        {"country": "DE", "basis": "VICTIM_LOCATION", "derived": False},
                    ],
                )
            )
        else:
            out.append(referral_json(origin, cc))
    return out


def _rid(r: Referral) -> str:
    return str(r["envelope"]["referral_id"])


def _receivers_of(r: Referral) -> set[str]:
    by_country = {"NL": "police-nl", "DE": "police-de", "FR": "police-fr"}
    return {by_country.get(j["country"], "secretariat") for j in r["envelope"]["jurisdictions"]}


def _drop(settings: Settings, name: str, refs: list[Referral]) -> None:
    drop = Path(settings.state_dir) / "orgs" / "hl-a" / "drop"
    (drop / f".{name}.tmp").write_text("".join(json.dumps(r) + "\n" for r in refs))
    (drop / f".{name}.tmp").rename(drop / name)


def _post(runtime: ConnectorRuntime, refs: list[Referral]) -> None:
    with httpx.Client(timeout=90) as client:
        r = client.post(
            f"http://127.0.0.1:{runtime.http_port}/referrals",
            json=refs,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert r.status_code == 202, r.text


def _sqlite_rows(settings: Settings) -> list[str]:
    path = Path(settings.state_dir) / "orgs" / "police-de" / "cases.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        try:
            return [r[0] for r in db.execute("SELECT referral_id FROM cases")]
        except sqlite3.OperationalError:
            return []


def _kill(broker: EmbeddedBroker) -> None:
    """SIGKILL, as a crash would; then reap the process."""
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGKILL)
    broker.stop()


def _provision(settings: Settings, network: Network) -> ProvisionReport:
    admin = clients.admin_client(settings)
    try:
        return provision(admin, network, settings.topic_names())
    finally:
        admin.close()


def test_router_and_connectors_ride_out_an_empty_broker_restart(
    tmp_path: Path, topic_names: TopicNames, hook: HookServer, record_property: Any
) -> None:
    network = make_network(webhook_url=hook.url, republish_after=2)
    first = EmbeddedBroker(log_path=tmp_path / "broker-1.log").start()
    settings = Settings(
        bootstrap_servers=first.bootstrap,
        state_dir=tmp_path / "state",
        network_file=EXAMPLE_NETWORK,
        topic_prefix=topic_names.prefix,
    )
    provision_network(settings, network)
    codec = codec_for(settings)
    published: list[Referral] = []
    brokers = [first]
    with ExitStack() as stack:
        stack.callback(lambda: [b.stop() for b in brokers])  # last: clients close first
        router: RouterThread = start_router(settings, network, codec)
        stack.callback(router.stop)
        rt: dict[str, ConnectorRuntime] = {}
        for org in (*HOTLINES, *RECEIVERS):
            runtime = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(runtime.stop)
            rt[org] = runtime.start()
        producers = {org: rt[org].producer for org in rt}

        def want() -> dict[str, set[str]]:
            out: dict[str, set[str]] = {org: set() for org in RECEIVERS}
            for r in published:
                for org in _receivers_of(r):
                    out[org].add(_rid(r))
            return out

        def got() -> dict[str, set[str]]:
            return {
                "police-nl": {p.stem for p in inbox_files(settings, "police-nl")},
                "police-de": set(_sqlite_rows(settings)),
                "police-fr": set(hook.referral_ids()),
                "secretariat": {p.stem for p in inbox_files(settings, "secretariat")},
            }

        def settled() -> bool:
            return got() == want() and all(not rt[o].outbox.pending() for o in HOTLINES)

        # 1. A healthy network.
        before = _referrals("hl-a", 10) + _referrals("hl-b", 10)
        published += before
        _drop(settings, "before.jsonl", before[:10])
        _post(rt["hl-b"], before[10:])
        wait_for(settled, 60, "the network before the restart")

        # 2. Published, then the broker dies with them somewhere on their way.
        doomed = _referrals("hl-a", 10) + _referrals("hl-b", 10)
        published += doomed
        _post(rt["hl-b"], doomed[10:])
        _drop(settings, "doomed.jsonl", doomed[:10])
        source = rt["hl-a"].source("drop_folder")
        wait_for(lambda: len(source.reports) == 2, 20, "the second drop file read")  # type: ignore[attr-defined]
        _kill(first)

        # 3. Dropped while there is no broker at all.
        during = _referrals("hl-a", 10)
        published += during
        _drop(settings, "during.jsonl", during)
        time.sleep(3)

        # 4. An empty broker on the same port; the operator provisions a little later.
        second = EmbeddedBroker(port=first.port, log_path=tmp_path / "broker-2.log").start()
        back = time.monotonic()
        brokers.append(second)
        time.sleep(2)  # every client reconnects and asks for topics that do not exist yet
        report = _provision(settings, network)

        # 5. Published after the return.
        after = _referrals("hl-b", 10)
        published += after
        _post(rt["hl-b"], after)

        try:
            wait_for(settled, SETTLE_BUDGET_S - (time.monotonic() - back), "everything settled")
        except AssertionError:
            missing = {org: len(want()[org] - ids) for org, ids in got().items()}
            pending = {o: len(rt[o].outbox.pending()) for o in HOTLINES}
            raise AssertionError(
                f"not settled: missing per receiver {missing}, pending per origin {pending}, "
                f"router {router.router.stats}, republished "
                f"{ {o: len(rt[o].republished) for o in HOTLINES} }, errors "
                f"{ {o: rt[o].errors[-3:] for o in rt} }"
            ) from None
        settle_s = time.monotonic() - back
        record_property("settle_seconds", round(settle_s, 1))
        print(f"settled {settle_s:.1f}s after the broker's return")

        # Nothing was restarted: the same threads ran all along.
        assert router.thread is not None
        assert router.thread.is_alive(), router.error
        for org, runtime in rt.items():
            assert runtime.producer is producers[org]
            dead = [t.name for t in runtime._threads if not t.is_alive()]
            assert dead == [], f"{org}: threads died: {dead}"
        replaced = {org: producers[org].replacements for org in rt}
        delivered = {org: sorted(rt[org].inbox.delivered()) for org in RECEIVERS}
        deliveries = {org: rt[org].sink_driver.stats.delivered for org in RECEIVERS}  # type: ignore[union-attr]
        webhook_posts = sorted(hook.referral_ids())
        final, expected = got(), want()

    assert len(published) == 60
    for org in RECEIVERS:
        assert final[org] == expected[org], f"{org}: missing or extra referrals"
    assert webhook_posts == sorted(expected["police-fr"]), "each FR referral POSTed exactly once"
    for org, ids in delivered.items():
        assert ids == sorted(expected[org]), f"{org}: each referral delivered exactly once"
        assert deliveries[org] == len(expected[org]), f"{org}: a referral was delivered twice"
    assert all(1 <= n <= 3 for n in replaced.values()), f"producer replacements: {replaced}"
    # No client created a topic between the return and the provisioning.
    intake = settings.topic_names().intake
    assert report.created.get(intake) == 2, "the intake was created by the operator, not a client"
    assert report.existing == {}
    assert report.mismatched == {}
