"""``referral keys init|show|revoke`` through the real CLI: public ids out, private keys never."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from broker.network import load_network
from broker.security.keys import OrgKeys, load_trust
from cli.main import app
from tests.support.connectors import NETWORK_TOML

runner = CliRunner()


def _network_file(tmp_path: Path, trust: bool = True) -> Path:
    text = NETWORK_TOML.replace("{webhook_url}", "http://127.0.0.1:9/h").replace(
        "{republish_after}", "300"
    )
    if trust:
        text = text.replace(
            'name = "connector test network"',
            'name = "connector test network"\ntrust_file = "trust.toml"',
        )
    path = tmp_path / "net" / "network.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _run(tmp_path: Path, network: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(
        app, ["--network", str(network), "--state-dir", str(tmp_path / "state"), *args]
    )
    return result.exit_code, result.output


def test_keys_init_show_revoke(tmp_path: Path) -> None:
    network = _network_file(tmp_path)
    code, out = _run(tmp_path, network, "keys", "init", "police-de")
    assert code == 0, out
    keys = OrgKeys.load(tmp_path / "state" / "orgs" / "police-de" / "keys", "police-de")
    assert keys is not None
    ids = [k.id for k in keys.public_keys()]
    assert all(i in out for i in ids)
    trust = tmp_path / "net" / "trust.toml"  # relative to the network file
    assert trust.is_file()
    assert {k.id for k in load_trust(load_network(network), network).keys_of("police-de")} == set(
        ids
    )
    private = b"".join(p.read_bytes() for p in keys_dir(tmp_path).glob("*.pem"))
    assert b"PRIVATE KEY" in private
    assert "PRIVATE" not in out
    assert "PRIVATE" not in trust.read_text()

    code, out = _run(tmp_path, network, "keys", "init", "police-de")
    assert code == 2
    assert out.strip().startswith("error: police-de already has keys")
    assert len(out.strip().splitlines()) == 1

    code, out = _run(tmp_path, network, "keys", "show", "police-de", "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert {r["id"] for r in shown["keys"]} == set(ids)
    assert all(r["held_here"] and not r["revoked"] for r in shown["keys"])
    assert "PRIVATE" not in out

    code, out = _run(tmp_path, network, "keys", "revoke", "police-de", ids[0])
    assert code == 0, out
    code, out = _run(tmp_path, network, "keys", "show", "police-de", "--json")
    revoked = {r["id"]: r["revoked"] for r in json.loads(out)["keys"]}
    assert revoked == {ids[0]: True, ids[1]: False}

    code, out = _run(tmp_path, network, "keys", "init", "nobody")
    assert code == 2
    assert out.strip().startswith("error: unknown organisation 'nobody'; ")


def test_keys_init_without_a_trust_file_prints_the_table_to_add(tmp_path: Path) -> None:
    network = _network_file(tmp_path, trust=False)
    code, out = _run(tmp_path, network, "keys", "init", "hl-a")
    assert code == 0, out
    assert "[[organisations.keys.public]]" in out
    assert "PRIVATE" not in out


def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "orgs" / "police-de" / "keys"
