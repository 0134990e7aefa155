"""End to end: hotlines publish through their sources, the router routes, police sinks deliver.

Every organisation of the test network runs its own :class:`ConnectorRuntime`
(threads), a real :class:`~broker.routing.router.Router` runs beside them, all on the
embedded broker. The broker-loss test runs its own broker, kills it after
publishing, and starts an empty one on the same port: the origin's outbox must
republish, and every referral must still arrive exactly once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from broker.config import Settings
from broker.kafka.embedded import EmbeddedBroker
from broker.network import Network
from broker.wire.codec import Codec
from connectors.runtime import ConnectorRuntime
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
from tests.support.kafka import provision_network, start_router

pytestmark = pytest.mark.slow

ORGS = ("hl-a", "hl-b", "police-nl", "police-de", "police-fr", "secretariat")


def _start(
    settings: Settings, network: Network, codec: Codec, stack: ExitStack, *orgs: str
) -> dict[str, ConnectorRuntime]:
    runtimes = {}
    for org in orgs:
        runtime = ConnectorRuntime(settings, network, org, codec, env=ENV)
        stack.callback(runtime.stop)
        runtimes[org] = runtime.start()
    return runtimes


def _received(settings: Settings, origin: str) -> set[tuple[str, str]]:
    """(referral id, emitted_by) of every RECEIVED in the origin's status folder."""
    out = set()
    for f in (Path(settings.state_dir) / "orgs" / origin / "status").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            s = json.loads(line)
            if s["status"] == "RECEIVED":
                out.add((s["referral_id"], s["emitted_by"]))
    return out


def _sqlite_ids(settings: Settings) -> list[str]:
    path = Path(settings.state_dir) / "orgs" / "police-de" / "cases.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        try:
            return [r[0] for r in db.execute("SELECT referral_id FROM cases")]
        except sqlite3.OperationalError:
            return []


def _ids(settings: Settings, org: str) -> list[str]:
    return [p.stem for p in inbox_files(settings, org)]


@pytest.fixture
def hook() -> Iterator[HookServer]:
    with hook_server() as server:
        yield server


def test_two_hotlines_three_police_sinks_end_to_end(settings: Settings, hook: HookServer) -> None:
    network = make_network(webhook_url=hook.url)
    provision_network(settings, network)
    codec = codec_for(settings)
    # hl-a (drop folder): NL x3, DE x2, FR, NL+DE, one for an unserved jurisdiction (US)
    a_refs = [referral_json("hl-a", cc) for cc in ("NL", "NL", "NL", "DE", "DE", "FR", "US")]
    both = referral_json(
        "hl-a",
        "NL",
        jurisdictions=[
            {"country": "NL", "basis": "HOSTING", "derived": False},
            {"country": "DE", "basis": "VICTIM_LOCATION", "derived": False},
        ],
    )
    a_refs.append(both)
    # hl-b (HTTP intake): DE x2, FR x2, NL
    b_refs = [referral_json("hl-b", cc) for cc in ("DE", "DE", "FR", "FR", "NL")]

    def rid(r: dict[str, object]) -> str:
        return str(r["envelope"]["referral_id"])  # type: ignore[index]

    def concerning(cc: str) -> set[str]:
        out = set()
        for r in a_refs + b_refs:
            if any(j["country"] == cc for j in r["envelope"]["jurisdictions"]):
                out.add(rid(r))
        return out

    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        rt = _start(settings, network, codec, stack, *ORGS)
        drop = Path(settings.state_dir) / "orgs" / "hl-a" / "drop"
        (drop / ".export.jsonl.tmp").write_text("".join(json.dumps(r) + "\n" for r in a_refs))
        (drop / ".export.jsonl.tmp").rename(drop / "export.jsonl")
        port = rt["hl-b"].http_port
        with httpx.Client(timeout=30) as client:
            r = client.post(
                f"http://127.0.0.1:{port}/referrals",
                json=b_refs,
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        assert r.status_code == 202, r.text

        want = {
            "police-nl": concerning("NL"),
            "police-de": concerning("DE"),
            "police-fr": concerning("FR"),
            "secretariat": concerning("US"),
        }

        def got() -> dict[str, list[str]]:
            return {
                "police-nl": _ids(settings, "police-nl"),
                "police-de": _sqlite_ids(settings),
                "police-fr": hook.referral_ids(),
                "secretariat": _ids(settings, "secretariat"),
            }

        def all_receipts() -> bool:
            return all(not rt[o].outbox.pending() for o in ("hl-a", "hl-b"))

        wait_for(lambda: {k: set(v) for k, v in got().items()} == want, 60, "every delivery")
        wait_for(all_receipts, 30, "every RECEIVED back at the origins")
        final = got()
        assert rt["police-nl"].inbox.duplicates == 0

    for org, ids in final.items():
        assert sorted(ids) == sorted(want[org]), f"{org} got each of its referrals exactly once"
    assert len(hook.requests) == len(want["police-fr"])
    assert all(r["signed"] for r in hook.requests)
    expected_receipts = {
        origin: {(rid(r), org) for r in refs for org, ids in want.items() if rid(r) in ids}
        for origin, refs in (("hl-a", a_refs), ("hl-b", b_refs))
    }
    for origin, receipts in expected_receipts.items():
        assert _received(settings, origin) == receipts
    assert (Path(settings.state_dir) / "orgs" / "hl-a" / "drop" / "done" / "export.jsonl").exists()


def test_outbox_republishes_after_the_broker_lost_everything(
    settings: Settings, tmp_path: Path
) -> None:
    network = make_network(republish_after=3)
    with EmbeddedBroker(log_path=tmp_path / "own-broker-1.log") as first:
        own = Settings(
            bootstrap_servers=first.bootstrap,
            state_dir=settings.state_dir,
            network_file=settings.network_file,
            topic_prefix=settings.topic_prefix,
        )
        provision_network(own, network)
        codec = codec_for(own)
        drop = Path(own.state_dir) / "orgs" / "hl-a" / "drop"
        before = [referral_json("hl-a", "NL") for _ in range(2)]
        lost = [referral_json("hl-a", "NL") for _ in range(3)]
        with ExitStack() as stack:
            router = start_router(own, network, codec)
            rt = _start(own, network, codec, stack, "hl-a", "police-nl")
            (drop / "before.json").write_text(json.dumps(before))
            wait_for(
                lambda: not rt["hl-a"].outbox.pending() and len(_ids(own, "police-nl")) == 2,
                45,
                "phase 1",
            )
            router.stop()
            rt["police-nl"].stop()
            # published while nobody routes or receives: only the broker holds them
            (drop / "lost.json").write_text(json.dumps(lost))
            source = rt["hl-a"].source("drop_folder")
            wait_for(lambda: len(source.reports) == 2, 20, "phase 2 publication")  # type: ignore[attr-defined]
            report = source.reports[1]  # type: ignore[attr-defined]
            assert report.moved_to == drop / "done" / "lost.json"
            assert [p.sent for p in report.result.published] == [True] * 3, "the broker had them"
            assert len(rt["hl-a"].outbox.pending()) == 3
        port = first.port
    # the broker is gone, and with it every record and offset

    with EmbeddedBroker(port=port, log_path=tmp_path / "own-broker-2.log") as second:
        assert second.bootstrap == own.bootstrap_servers
        provision_network(own, network)
        with ExitStack() as stack:
            stack.callback(start_router(own, network, codec).stop)
            rt = _start(own, network, codec, stack, "hl-a", "police-nl")
            everything = {r["envelope"]["referral_id"] for r in before + lost}
            wait_for(
                lambda: set(_ids(own, "police-nl")) == everything, 60, "republished deliveries"
            )
            wait_for(lambda: not rt["hl-a"].outbox.pending(), 30, "receipts after the loss")
            republished = set(rt["hl-a"].republished)
            inbox = rt["police-nl"].inbox
            assert sorted(inbox.delivered()) == sorted(everything), "each delivered exactly once"
    assert {r["envelope"]["referral_id"] for r in lost} <= republished
    assert not republished & {r["envelope"]["referral_id"] for r in before}, (
        "what was already received is never sent again"
    )
    assert sorted(_ids(own, "police-nl")) == sorted(everything)
