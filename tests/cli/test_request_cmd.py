"""``referral request …`` through the real CLI on the real broker: ask, answer, refuse, stats."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.network import load_network
from broker.requests.router import RequestRouter
from broker.security.keys import LiveKeys, load_trust
from broker.security.signing import ledger_signer
from broker.wire.codec import Codec
from cli.main import app
from tests.support.connectors import wait_for
from tests.support.kafka import cli_env
from tests.support.requests import GROUP_TIMINGS, keyed_example, org_keys

runner = CliRunner()


def _run(settings: Settings, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=cli_env(settings))
    return result.exit_code, result.output


@pytest.fixture
def cli_settings(settings: Settings, tmp_path: Path) -> Settings:
    keyed_example(settings, tmp_path)
    return settings.model_copy(update={"network_file": tmp_path / "network.toml"})


def test_request_answer_refuse_and_art18_through_the_cli(cli_settings: Settings) -> None:
    s = cli_settings
    net = load_network(s.network_file)
    keys = org_keys(s, "router")
    signer = ledger_signer(LiveKeys.fixed(keys, "router"), "router")
    trust = load_trust(net, s.network_file)
    router = RequestRouter(s, net, Codec.from_settings(s), trust, signer=signer, **GROUP_TIMINGS)
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        code, out = _run(
            s,
            "request",
            "send",
            "police-se",
            "--to",
            "police-fi",
            "--case",
            "case-1",
            "--purpose",
            "who runs example.org",
            "--item",
            "owner",
            "--urgent",
            "--language",
            "sv",
            "--handling",
            "H1",
        )
        assert code == 0, out
        rid = re.findall(r"[0-9a-f-]{36}", out)[0]
        code, out = _run(
            s,
            "request",
            "send",
            "police-se",
            "--to",
            "police-no",
            "--case",
            "case-2",
            "--purpose",
            "p",
            "--item",
            "i",
        )
        second = re.findall(r"[0-9a-f-]{36}", out)[0]
        wait_for(lambda: router.routed == 2, 20, "the router")
        code, out = _run(s, "request", "inbox", "police-fi", "--json")
        assert code == 0, out
        owed = json.loads(out)["asked_of_me"]
        assert [
            (r["request_id"], r["urgent"], r["access"], r["language"], r["handling"]) for r in owed
        ] == [(rid, True, "DIRECT", "sv", "H1")]
        code, out = _run(s, "request", "answer", "police-fi", rid[:8], "--text", "the owner")
        assert (code, out.strip()) == (0, "answered")
        code, out = _run(s, "request", "answer", "police-fi", rid[:8], "--text", "again")
        assert code != 0
        assert out.strip() == f"error: request {rid[:8]} is already answered"
        code, out = _run(s, "request", "refuse", "police-no", second[:8], "--ground", "NOPE")
        assert code == 2
        assert out.count("\n") == 1
        _run(s, "request", "inbox", "police-no")
        code, out = _run(
            s, "request", "refuse", "police-no", second[:8], "--ground", "MINOR_OFFENCE"
        )
        assert code == 0, out
    finally:
        stop.set()
        thread.join(30)
    code, out = _run(s, "request", "stats", "--year", str(datetime.now(UTC).year), "--json")
    assert code == 0, out
    tables = {t["state"]: t for t in json.loads(out)}
    assert tables["SE"]["sent"] == {"urgent-direct/FI": 1, "non-urgent/NO": 1}
    assert tables["FI"]["answered_within_limit"] == {"urgent-direct/SE": 1}
    assert tables["NO"]["refusals"] == {"MINOR_OFFENCE": 1}
    saved = s.state_dir / "art18.json"
    saved.write_text(out)
    code, out = _run(s, "request", "stats", "--check", str(saved))
    assert (code, "every table equals the count" in out) == (0, True), out
    tables["NO"]["refusals"] = {"MINOR_OFFENCE": 2}
    saved.write_text(json.dumps(list(tables.values())))
    code, out = _run(s, "request", "stats", "--check", str(saved))
    assert (code, out.strip()) == (1, f"error: {saved}: NO refusals differs from the ledger")
    code, out = _run(s, "request", "stats", "--state", "se", "--csv")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "state,year,table,key,count"
    assert f"SE,{datetime.now(UTC).year},sent,urgent-direct/FI,1" in lines
    assert all(line.startswith("SE,") for line in lines[1:])
