"""Junk costs the attacker more than the network (issue 21's "no amplification").

A member floods ``status.intake`` and ``status.to.hl-a`` with records nobody
can be held to — unsigned status updates and bytes that decode to nothing —
and ``referrals.intake`` and police-nl's lane with bytes. Every one of them is
dead-lettered with its original bytes, but none gets a signed ledger entry of
its own: the router, hl-a's status feed and police-nl's sink driver each record
one summary event per consumed batch (count, topic, stage, offsets), and the
ledger still verifies.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka.deadletter import H_OFFSET, H_PARTITION, H_STAGE, H_TOPIC
from broker.kafka.service import LoopService
from broker.kafka.tally import UNATTRIBUTED_REFERRAL, summarised
from broker.ledger.store import LedgerStore
from broker.network import Network, parse_network
from broker.security.keys import ROUTER
from broker.wire.codec import Codec
from broker.wire.models import ReferralStatus, StatusUpdate, utc_now_ms
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers
from cli.main import app
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import ENV, NETWORK_TOML, codec_for, wait_for
from tests.support.kafka import (
    cli_env,
    header,
    provision_network,
    publish,
    read_topic,
    start_router,
)
from tests.support.security import give_keys

pytestmark = pytest.mark.slow

#: Junk records of each status kind per status topic (5 * JUNK in all, with the referral junk).
JUNK = 1000


@pytest.fixture
def keyed(provisioned: Settings, tmp_path: Path) -> tuple[Settings, Network]:
    """Keys for hl-a, police-de, police-nl and the router; a network with no plain records."""
    trust = tmp_path / "trust.toml"
    give_keys(provisioned, trust, "hl-a", "police-de", "police-nl", ROUTER)
    text = (
        NETWORK_TOML.replace("{webhook_url}", "http://127.0.0.1:9/hook")
        .replace("{republish_after}", "300")
        .replace(
            'name = "connector test network"',
            f'name = "junk test network"\nallow_plain = false\ntrust_file = "{trust}"',
        )
    )
    network_file = tmp_path / "network.toml"
    network_file.write_text(text, encoding="utf-8")
    settings = Settings(**{**provisioned.model_dump(), "network_file": network_file})
    network = parse_network(text, str(network_file))
    provision_network(settings, network)
    return settings, network


def _unsigned_status(codec: Codec) -> bytes:
    """A well-formed RECEIVED "from police-de" about a referral of hl-a, without a signature."""
    update = StatusUpdate(
        referral_id=str(uuid.uuid4()),
        case_id=f"case-{uuid.uuid4().hex[:8]}",
        emitted_by="police-de",
        emitted_at=utc_now_ms(),
        status=ReferralStatus.RECEIVED,
        origin_org="hl-a",
    )
    return codec.encode(STATUS_UPDATE, update.to_avro())


def _dead_letters(settings: Settings, at_least: int) -> dict[tuple[Any, ...], Any]:
    """The dead letters by original position (at least once: a repeat has the same one)."""
    found: dict[tuple[Any, ...], Any] = {}

    def enough() -> bool:
        records = read_topic(settings, settings.topic_names().deadletter, idle=0.5, timeout=20)
        for r in records:
            found.setdefault((header(r, H_TOPIC), header(r, H_PARTITION), header(r, H_OFFSET)), r)
        return len(found) >= at_least

    wait_for(enough, 120, f"{at_least} dead letters", step=1)
    return found


def test_a_junk_flood_is_dead_lettered_whole_with_a_summary_not_an_entry_each(
    keyed: tuple[Settings, Network],
) -> None:
    settings, network = keyed
    names = settings.topic_names()
    codec = codec_for(settings)
    intake, status, status_hl_a, nl = (
        names.intake,
        names.status_intake,
        names.status("hl-a"),
        names.jurisdiction("NL"),
    )
    unsigned = [_unsigned_status(codec) for _ in range(2 * JUNK)]
    garbage = [b"junk-" + os.urandom(8 + i % 40) for i in range(3 * JUNK)]
    sent = {
        status: unsigned[:JUNK] + garbage[:JUNK],
        status_hl_a: unsigned[JUNK:] + garbage[JUNK : 2 * JUNK],
        intake: garbage[2 * JUNK : 5 * JUNK // 2],
        nl: garbage[5 * JUNK // 2 :],
    }
    total = 5 * JUNK
    with ExitStack() as stack:
        router = start_router(settings, network, codec)
        stack.callback(router.stop)
        loops: list[LoopService[Any] | None] = [router.router]
        for org in ("hl-a", "police-nl"):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(rt.stop)
            rt.start()
            loops += [rt.status_feed] if org == "hl-a" else [rt.sink_driver]
        for topic, values in sent.items():
            # On police-nl's lane, addressed to it (a header anyone can write).
            to_nl = [(Headers.DESTINATION_ORGS, b"police-nl")] if topic == nl else []
            publish(settings, topic, [(None, v) for v in values], to_nl)
        dead = _dead_letters(settings, total)
        wait_for(
            lambda: sum(x.stats.dead_lettered_unrecorded for x in loops if x is not None) >= total,
            30,
            "every junk record counted",
        )

    # Nothing lost: every junk record is on the dead-letter topic, byte for byte.
    assert len(dead) == total
    assert Counter(d.value for d in dead.values()) == Counter(v for vs in sent.values() for v in vs)
    stages = Counter((k[0], header(d, H_STAGE)) for k, d in dead.items())
    assert stages == {
        (status, "STATUS_ROUTE"): 2 * JUNK,
        (status_hl_a, "STATUS_VERIFY"): JUNK,
        (status_hl_a, "SINK_DECODE"): JUNK,
        (intake, "ROUTE_DECODE"): JUNK // 2,
        (nl, "SINK_DECODE"): JUNK // 2,
    }

    # No amplification: a few summary events, about no referral, that count them all.
    env = cli_env(settings)
    # The operator's store (the one `referral ledger verify` reads), synced from the topic.
    with LedgerStore(Path(settings.state_dir) / "ledger.sqlite3") as store:

        def synced() -> bool:
            store.sync(settings, codec, timeout=10, idle=0.3, checkpoints=False)
            said = [summarised(r.reason) for r in store.records()]
            return sum(s[1] for s in said if s is not None) >= total

        wait_for(synced, 60, "the summaries in the ledger", step=0.5)
        entries = store.records()
    assert {r.referral_id for r in entries} == {UNATTRIBUTED_REFERRAL}
    assert {r.event for r in entries} == {"DEAD_LETTERED"}
    assert {r.actor for r in entries} == {ROUTER, "hl-a", "police-nl"}
    counted: Counter[tuple[str | None, str]] = Counter()
    for r in entries:
        what = summarised(r.reason)
        assert what is not None, r.reason
        counted[(r.topic, what[0])] += what[1]
    assert counted == {
        (status, "STATUS_ROUTE: SignatureInvalid"): JUNK,
        (status, "STATUS_ROUTE: NotFramed"): JUNK,
        (status_hl_a, "STATUS_VERIFY: SignatureInvalid"): JUNK,
        (status_hl_a, "SINK_DECODE: NotFramed"): JUNK,
        (intake, "ROUTE_DECODE: NotFramed"): JUNK // 2,
        (nl, "SINK_DECODE: NotFramed"): JUNK // 2,
    }
    # One per topic, partition, stage and error of a consumed batch: far fewer than the junk.
    assert len(entries) <= total // 50, len(entries)
    result = CliRunner().invoke(app, ["ledger", "verify"], env={**env, "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ledger intact: {len(entries)} entries"), result.stdout
