"""Dead letters: listed with their reason, replayed to the intake once the cause is fixed."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

from typer.testing import CliRunner

from broker.config import Settings
from broker.network import Network, load_network
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, EmbeddedRegistry
from broker.wire.topics import Headers
from cli.main import app
from tests.conftest import EXAMPLE_NETWORK
from tests.support.factories import make_referral
from tests.support.kafka import header, publish, read_topic, start_router

EXTRA_ORG = """
[[organisations]]
id = "police-de-2"
name = "Second Demo Contact DE"
role = "police"
country = "DE"
"""


def test_dead_letter_is_listed_and_replayed_after_the_fix(
    provisioned: Settings, network: Network, tmp_path: Path
) -> None:
    codec = Codec(EmbeddedRegistry())
    names = provisioned.topic_names()
    datum = copy.deepcopy(make_referral().to_avro())
    rid = str(uuid.uuid4())
    datum["envelope"].update(
        referral_id=rid,
        origin_org="hl-nl",
        jurisdictions=[{"country": "DE", "basis": "VICTIM_LOCATION", "derived": False}],
        handling={"tlp": "RED", "recipients": ["police-de-2"], "handling_code": "H2"},
    )
    value = codec.encode(REFERRAL, datum)
    headers = [(Headers.ORIGIN, b"hl-nl"), (Headers.REFERRAL_ID, rid.encode())]
    publish(provisioned, names.intake, [(rid.encode(), value)], headers)
    # 1. The network does not know the named recipient yet: a dead letter.
    router = start_router(provisioned, network, codec)
    try:
        assert len(read_topic(provisioned, names.deadletter, at_least=1)) == 1
    finally:
        router.stop()
    env = {
        "REFERRAL_BOOTSTRAP_SERVERS": str(provisioned.bootstrap_servers),
        "REFERRAL_TOPIC_PREFIX": provisioned.topic_prefix,
        "REFERRAL_STATE_DIR": str(provisioned.state_dir),
    }
    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    (letter,) = json.loads(listed.stdout)
    assert letter["stage"] == "ROUTE_DECIDE"
    assert letter["error_class"] == "broker.errors.RoutingError"
    assert "not in the network" in letter["message"]
    assert letter["original_topic"] == names.intake
    assert letter["referral_id"] == rid
    # The liaison at an 80-column terminal: every line fits, the short id and the
    # reason are there; --wide brings back the error class and the whole id.
    narrow = runner.invoke(app, ["dlq", "list", "--no-sync"], env={**env, "COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80, narrow.stdout
    assert letter["id"] in narrow.stdout
    assert "ROUTE_DECIDE" in narrow.stdout
    assert rid[:8] in narrow.stdout
    assert rid not in narrow.stdout
    assert "RoutingError" not in narrow.stdout
    wide = runner.invoke(app, ["dlq", "list", "--no-sync", "--wide"], env={**env, "COLUMNS": "250"})
    assert wide.exit_code == 0, wide.output
    assert "RoutingError" in wide.stdout
    assert rid in wide.stdout
    # Nothing named: a one-line error, nothing sent.
    refused = runner.invoke(app, ["dlq", "replay"], env=env)
    assert refused.exit_code == 2
    assert refused.output.strip().startswith("error: name dead letters with --id")
    unknown = runner.invoke(app, ["dlq", "replay", "--id", "9:999"], env=env)
    assert unknown.exit_code == 2
    # 2. The cause is fixed (the organisation joins, DE routes to it) and the letter replayed.
    fixed_file = tmp_path / "fixed.toml"
    fixed_file.write_text(
        EXAMPLE_NETWORK.read_text()
        .replace('police = ["police-de"]', 'police = ["police-de", "police-de-2"]')
        .replace("[routing]", EXTRA_ORG + "\n[routing]")
    )
    fixed = load_network(fixed_file)
    replayed = runner.invoke(app, ["dlq", "replay", "--id", letter["id"]], env=env)
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 dead letter(s)" in replayed.output
    router = start_router(provisioned, fixed, codec)
    try:
        (routed,) = read_topic(provisioned, names.jurisdiction("DE"), at_least=1)
    finally:
        router.stop()
    assert routed.value == value
    assert header(routed, Headers.DESTINATION_ORGS) == "police-de-2"
    assert header(routed, Headers.ORIGIN) == "hl-nl"
    assert not [k for k, _ in routed.headers if k.startswith("__connect.errors.")]
