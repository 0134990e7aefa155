"""An ERASE whose answer never came is sent again every hour until ERASED (issue 27).

A signed network on the embedded broker, the hourly cadence on a simulated clock:
hl-a asks police-fr (a webhook case system) to erase two referrals. The case system
refuses the first erase (HTTP 400): police-fr dead-letters that ERASE and never
answers. Half an hour later nothing is re-sent; an hour later the unanswered one
alone is, it is erased and answered ERASED; an hour after that nothing is sent
again. A second ERASE of an erased referral is answered ERASED again and does
nothing else (no erase request to the case system, no DELIVERED).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka.deadletter import H_STAGE
from broker.origin.erase_request import ErasureBook
from broker.security.keys import ROUTER
from cli.main import app
from tests.support.connectors import ENV, codec_for, hook_server, referral_json, wait_for
from tests.support.kafka import cli_env, header, provision_network, read_topic, start_network
from tests.support.security import give_keys, keyed_network, keyed_network_text

pytestmark = pytest.mark.slow

runner = CliRunner()
ORG = "police-fr"
HOUR = 3600.0


def _book(settings: Settings) -> Callable[[str], Any]:
    """The state of police-fr's part in ``rid``'s erasure, from hl-a's book."""

    def get(rid: str) -> Any:
        book = ErasureBook.for_org(settings, "hl-a")
        try:
            (state,) = book.states(rid)
            return state
        finally:
            book.close()

    return get


def _erase_posts(hook: Any, rid: str) -> list[int]:
    """The statuses the case system answered to erase requests of ``rid``."""
    with hook.lock:
        return [r["status"] for r in hook.requests if r["id"] == rid and "erase" in r["body"]]


def test_an_unanswered_erase_is_sent_again_hourly_until_erased_then_never(
    settings: Settings, tmp_path: Path
) -> None:
    trust = tmp_path / "trust.toml"
    give_keys(settings, trust, "hl-a", ORG, ROUTER)
    codec = codec_for(settings)
    with hook_server() as hook, ExitStack() as stack:
        network = keyed_network(trust, webhook_url=hook.url)
        provision_network(settings, network)
        rts = start_network(
            stack, settings, network, codec, ("hl-a", ORG), env=ENV, republish_after=1
        )
        hl, fr = rts["hl-a"], rts[ORG]
        data = [referral_json("hl-a", "FR") for _ in range(2)]
        assert hl.publisher.publish([(f"row {i}", d) for i, d in enumerate(data)]).ok
        lost, fine = (str(d["envelope"]["referral_id"]) for d in data)
        wait_for(lambda: all(hl.outbox.is_complete(r) for r in (lost, fine)), 60, "receipts")
        state = _book(settings)

        hook.refuse.add(lost)  # the case system refuses the erase: the ERASE dead-letters
        t0 = time.time()
        requester = hl.erase_requester
        for rid in (lost, fine):
            entry = hl.outbox.get(rid)
            assert entry is not None
            assert requester.request(rid, entry.case_id, [ORG], "INCORRECT", t0) == [ORG]
        wait_for(lambda: state(fine).answered_at is not None, 60, "ERASED of the other one")

        def dead() -> list[Any]:
            out = read_topic(settings, settings.topic_names().deadletter, idle=0.3, timeout=5)
            return [d for d in out if header(d, "referral.id") == lost or lost.encode() in d.value]

        wait_for(lambda: bool(dead()), 30, "police-fr's ERASE dead-lettered")
        assert header(dead()[0], H_STAGE) == "DELIVER"
        assert _erase_posts(hook, lost) == [400]
        assert state(lost).answered_at is None
        assert fr.inbox.state("hl-a", lost).versions  # still held: nothing erased

        assert requester.resend_due(HOUR, t0 + HOUR / 2) == []  # not yet an hour
        hook.refuse.discard(lost)  # the case system takes erasures again
        assert requester.resend_due(HOUR, t0 + HOUR + 1) == [(lost, ORG)]
        wait_for(lambda: state(lost).answered_at is not None, 60, "ERASED after the re-send")
        assert state(lost).sends == 2
        assert state(fine).sends == 1
        assert _erase_posts(hook, lost) == [400, 200]
        assert fr.inbox.state("hl-a", lost).erased
        # Answered: never sent again.
        assert requester.resend_due(HOUR, t0 + 2 * HOUR + 2) == []
        assert requester.resend_due(HOUR, t0 + 30 * HOUR) == []

        # A second ERASE of an erased referral: ERASED again, nothing else done.
        assert fr.sink_driver is not None
        repeats = fr.sink_driver.stats.duplicates
        entry_case = state(lost).case_id
        assert requester.request(lost, entry_case, [ORG], "INCORRECT") == [ORG]
        wait_for(
            lambda: fr.sink_driver is not None and fr.sink_driver.stats.duplicates > repeats,
            30,
            "the repeat handled",
        )
        (tmp_path / "network.toml").write_text(keyed_network_text(trust, webhook_url=hook.url))
        env = {**cli_env(settings), "REFERRAL_NETWORK_FILE": str(tmp_path / "network.toml")}

        def hops() -> list[dict[str, Any]]:
            runner.invoke(app, ["ledger", "sync"], env=env)
            out = runner.invoke(app, ["ledger", "show", "--json"], env=env).stdout
            return [e for e in json.loads(out) if e.get("referral_id") == lost]

        def answered() -> list[dict[str, Any]]:
            return [
                h
                for h in hops()
                if h["event"] == "STATUS_SENT" and h["reason"] == "ERASED" and h["actor"] == ORG
            ]

        wait_for(lambda: len(answered()) == 2, 60, "police-fr's second ERASED", step=1)
        erased_at_fr = [
            h
            for h in hops()
            if h["event"] == "DELIVERED" and h["reason"] == "ERASE INCORRECT" and h["actor"] == ORG
        ]
        assert len(erased_at_fr) == 1
        assert _erase_posts(hook, lost) == [400, 200]
