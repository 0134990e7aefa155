"""Per-item outcomes end to end, and the re-referral of a moved item (issue 14).

A signed network on the embedded broker: hotline ``hl-a`` refers three items
hosted in DE to ``police-de``; ``police-de`` reports (``referral status --item``,
by id prefix) one removed, one moved to a host in FR, one still online, in one
signed update. The origin verifies it, keeps the three outcomes, and re-refers
the moved item in a child referral that ``police-fr`` (webhook) receives;
``referral trace`` of the parent and of the child link them, ``referral outbox``
shows the outcomes.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.ids import short_id
from broker.network import Network, parse_network
from broker.security.keys import ROUTER
from broker.wire import models as m
from cli.main import app
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import (
    ENV,
    NETWORK_TOML,
    HookServer,
    codec_for,
    hook_server,
    referral_json,
    wait_for,
)
from tests.support.kafka import cli_env, provision_network, start_router
from tests.support.security import give_keys

pytestmark = pytest.mark.slow
runner = CliRunner()


def signed_network(settings: Settings, tmp_path: Path, hook_url: str, *orgs: str) -> Network:
    """The connector test network, signed (keys for ``orgs`` and the router), as a file too.

    ``settings.network_file`` is not changed; :func:`env_for` points the CLI at the file.
    """
    trust = tmp_path / "trust.toml"
    give_keys(settings, trust, *orgs, ROUTER)
    text = (
        NETWORK_TOML.replace("{webhook_url}", hook_url)
        .replace("{republish_after}", "1")
        .replace(
            'name = "connector test network"',
            f'name = "outcome test network"\nallow_plain = false\ntrust_file = "{trust}"',
        )
    )
    (tmp_path / "network.toml").write_text(text)
    network = parse_network(text, "network.toml")
    provision_network(settings, network)
    return network


def env_for(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """``referral`` CLI environment on the test's broker namespace and signed network."""
    return {**cli_env(settings), "REFERRAL_NETWORK_FILE": str(tmp_path / "network.toml")}


def cli(env: dict[str, str], *args: str) -> str:
    """Run ``referral ARGS``; its output (AssertionError with the output if it failed)."""
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def three_items(org: str) -> dict[str, Any]:
    """A referral of ``org`` with three items hosted in DE."""
    raw = referral_json(org, "DE")
    item = raw["body"]["items"][0]
    raw["body"]["items"] = [
        {**item, "url": f"{item['url']}/{n}", "item_id": None} for n in ("a", "b", "c")
    ]
    return raw


def item_ids(raw: dict[str, Any]) -> list[str]:
    """The item ids the referral gets (derived from its id and the URLs)."""
    body = m.Referral.model_validate(raw).body
    assert isinstance(body, m.CaseBody)
    return [str(i.item_id) for i in body.items]


@pytest.fixture
def hook() -> Any:
    with hook_server() as server:
        yield server


def test_three_outcomes_reach_the_origin_and_the_moved_item_is_re_referred(
    settings: Settings, tmp_path: Path, hook: HookServer
) -> None:
    network = signed_network(settings, tmp_path, hook.url, "hl-a", "police-de", "police-fr")
    env = env_for(settings, tmp_path)
    codec = codec_for(settings)
    raw = three_items("hl-a")
    rid = str(raw["envelope"]["referral_id"])
    removed, moved, online = item_ids(raw)
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        rts = {}
        for org in ("hl-a", "police-de", "police-fr"):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV, republish_after=1)
            stack.callback(rt.stop)
            rts[org] = rt.start()
        result = rts["hl-a"].publisher.publish([("row 1", raw)])
        assert result.ok
        assert result.published[0].sent
        outbox, status_log = rts["hl-a"].outbox, rts["hl-a"].status_log
        wait_for(lambda: outbox.is_complete(rid), 30, "police-de's RECEIVED")

        cli(env, "status", "police-de", rid[:8], "ACCEPTED")
        out = cli(
            env,
            "status",
            "police-de",
            rid[:8],
            "NTD_SENT",
            "--item",
            f"{short_id(removed)}=REMOVED",
            "--item",
            f"{short_id(moved)}=still_online:country=FR",
            "--item",
            f"{short_id(online)}=STILL_ONLINE",
        )
        assert "3 items: 1 removed, 1 moved to FR, 1 still online" in out

        wait_for(lambda: len(status_log.item_states(rid)) == 3, 30, "the three verified outcomes")
        child = outbox.children(rid)
        wait_for(
            lambda: bool(outbox.children(rid)) and outbox.children(rid)[0][1],
            30,
            "the child referral published",
        )
        [(reroute, _)] = outbox.children(rid)
        wait_for(
            lambda: reroute.child_referral_id in hook.referral_ids(), 30, "police-fr's delivery"
        )
        wait_for(lambda: outbox.is_complete(reroute.child_referral_id), 30, "police-fr's RECEIVED")
        child = outbox.children(rid)
        states = {s.item_id: s for s in status_log.item_states(rid)}
        outbox_json = json.loads(cli(env, "outbox", "hl-a", "--all", "--json"))
        outbox_text = cli(env, "outbox", "hl-a", "--all")

    assert {i: s.outcome.outcome.value for i, s in states.items()} == {
        removed: "REMOVED",
        moved: "STILL_ONLINE",
        online: "STILL_ONLINE",
    }
    assert {s.emitter for s in states.values()} == {"police-de"}
    hosting = states[moved].outcome.hosting
    assert hosting is not None
    assert hosting.country == "FR"
    assert (reroute.item_id, reroute.country) == (moved, "FR")
    assert child == [(reroute, True)]

    # police-fr received one item, the moved one, as a child of the parent (signed by hl-a).
    [post] = [r for r in hook.requests if r["id"] == reroute.child_referral_id]
    envelope = post["body"]["referral"]["envelope"]
    assert envelope["parent_referral_id"] == rid
    assert envelope["origin_org"] == "hl-a"
    assert [j["country"] for j in envelope["jurisdictions"]] == ["FR"]
    assert [i["item_id"] for i in post["body"]["referral"]["body"]["items"]] == [moved]
    assert post["body"]["referral"]["body"]["items"][0]["hosting"]["country"] == "FR"

    parent_row = next(r for r in outbox_json if r["referral_id"] == rid)
    assert parent_row["items"] == "3 items: 1 removed, 1 moved to FR, 1 still online"
    assert parent_row["children"][0]["referral_id"] == reroute.child_referral_id
    child_row = next(r for r in outbox_json if r["referral_id"] == reroute.child_referral_id)
    assert child_row["parent_referral_id"] == rid
    assert "3 items: 1 removed, 1 moved to FR, 1 still online" in outbox_text

    def traced(referral_id: str, needle: str) -> dict[str, Any]:
        data: dict[str, Any] = {}

        def has() -> bool:
            data.update(json.loads(cli(env, "trace", referral_id, "--json")))
            return needle in json.dumps(data)

        wait_for(has, 20, f"the trace of {referral_id} to show {needle}", step=0.5)
        return data

    parent_trace = traced(rid, reroute.child_referral_id)
    # The ledger says how many moved, not where (its REROUTED names the child's country).
    assert parent_trace["outcomes"] == {"police-de": "3 items: 1 removed, 1 moved, 1 still online"}
    assert parent_trace["children"] == [
        {"referral_id": reroute.child_referral_id, "item_id": moved, "country": "FR"}
    ]
    assert parent_trace["status"] == "NTD_SENT"
    child_trace = traced(reroute.child_referral_id, rid)
    assert child_trace["parent"] == {"referral_id": rid, "item_id": moved}
    assert "police-fr" in child_trace["received"]
    text = cli(env, "trace", rid[:8], "--no-sync", "--wide")
    assert "items from police-de: 3 items: 1 removed, 1 moved, 1 still online" in text
    assert f"-> referral {reroute.child_referral_id}" in text
    assert "REROUTED" in text
    assert f"re-referral of referral {rid}" in cli(
        env, "trace", reroute.child_referral_id, "--no-sync", "--wide"
    )
