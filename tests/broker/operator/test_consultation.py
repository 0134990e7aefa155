"""The consultation log on the test broker: one entry per opening, from every path that opens."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.ledger.store import LedgerStore
from broker.operator.consultation import consultations
from broker.security.keys import load_trust
from broker.wire.registry import REFERRAL
from cli.main import app
from connectors.runtime import ConnectorRuntime
from console.liaison import LiaisonDesk
from tests.support.connectors import ENV, NETWORK_TOML, codec_for, referral_json, wait_for
from tests.support.factories import make_referral
from tests.support.kafka import cli_env, provision_network, publish, start_router
from tests.support.security import give_keys, keyed_network

pytestmark = pytest.mark.slow

runner = CliRunner()
ORG = "police-nl"


def _network_file(tmp_path: Path, trust: Path) -> Path:
    """The keyed test network as a file (what keyed_network parses), for the CLI."""
    text = (
        NETWORK_TOML.replace("{webhook_url}", "http://127.0.0.1:9/hook")
        .replace("{republish_after}", "300")
        .replace(
            'name = "connector test network"',
            f'name = "security test network"\nallow_plain = false\ntrust_file = "{trust}"',
        )
    )
    path = tmp_path / "keyed-network.toml"
    path.write_text(text)
    return path


def _synced(settings: Settings, rid: str, at_least: int) -> list[str]:
    with LedgerStore.for_settings(settings) as store:
        store.sync(settings, codec_for(settings), checkpoints=False)
        return [c.path for c in consultations(store.records(rid))]


def test_one_consultation_entry_per_opening_from_every_path(
    settings: Settings, tmp_path: Path
) -> None:
    trust = tmp_path / "trust.toml"
    give_keys(settings, trust, "hl-a", ORG)
    network = keyed_network(trust)
    provision_network(settings, network)
    codec = codec_for(settings)
    sent = referral_json("hl-a", "NL")
    rid = sent["envelope"]["referral_id"]
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        for org in ("hl-a", ORG):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(rt.stop)
            rt.start()
        drop = Path(settings.state_dir) / "orgs" / "hl-a" / "drop"
        (drop / "one.json").write_text(json.dumps([sent]))
        wait_for(lambda: _synced(settings, rid, 1) == ["sink-delivery"], 60, "the delivery")

    desk = LiaisonDesk(settings, network, ORG, codec)
    try:
        page = desk.referral(rid)
        assert page.summary is None
        shown = desk.reveal(rid, "case review 42")
        assert shown.summary
    finally:
        desk.close()
    env = {**cli_env(settings), "REFERRAL_NETWORK_FILE": str(_network_file(tmp_path, trust))}
    result = runner.invoke(app, ["show", rid, "--as", ORG, "--json"], env=env)
    assert result.exit_code == 0, result.output

    # tail opens only plain bodies: one published plain, shown under --reveal.
    plain = make_referral().to_avro()
    plain_rid = plain["envelope"]["referral_id"]
    topic = settings.topic_names().jurisdiction("DE")
    publish(settings, topic, [(b"p", codec.encode(REFERRAL, plain))])
    tail = ["tail", topic, "--decode", "--body", "--from-beginning", "--max", "1"]
    result = runner.invoke(app, [*tail, "--reveal", "--reason", "audit 7"], env=env)
    assert result.exit_code == 0, result.output

    expected = ["sink-delivery", "console-page", "console-reveal", "show"]
    wait_for(lambda: _synced(settings, rid, 4) == expected, 30, "four consultations")
    assert _synced(settings, plain_rid, 1) == ["tail-reveal"]

    result = runner.invoke(app, ["ledger", "show", "--consulted", rid, "--json"], env=env)
    assert result.exit_code == 0, result.output
    log = json.loads(result.output)
    assert [(c["who"], c["path"]) for c in log] == [(ORG, p) for p in expected]
    assert log[2]["why"] == "case review 42"
    assert log[3]["why"].startswith("referral show by ")
    assert all(c["topic"] == settings.topic_names().jurisdiction("NL") for c in log)
    assert all(sent["body"]["items"][0]["url"] not in json.dumps(c) for c in log)
    result = runner.invoke(app, ["ledger", "show", "--consulted", plain_rid], env=env)
    assert result.exit_code == 0, result.output
    assert "tail-reveal" in result.output
    assert "audit 7" in result.output
    with LedgerStore.for_settings(settings) as store:
        verification = store.verify(load_trust(network, None), codec=codec, allow_plain=True)
    assert verification.intact, str(verification)
