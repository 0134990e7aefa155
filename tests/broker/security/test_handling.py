"""Handling rules at the operator's console, and secrets hygiene of a whole sealed run."""

from __future__ import annotations

import base64
import json
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka.deadletter import HEADER_DLQ_PREFIX
from broker.ledger.events import decode_events
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, EmbeddedRegistry
from cli.main import app
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import (
    ENV,
    TOKEN,
    codec_for,
    inbox_files,
    referral_json,
    wait_for,
)
from tests.support.factories import make_referral
from tests.support.kafka import cli_env, provision_network, publish, read_topic, start_router
from tests.support.security import case_content, give_keys, keyed_network

pytestmark = pytest.mark.slow

runner = CliRunner()


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_tail_redacts_red_and_amber_strict_bodies_unless_revealed_with_a_reason(
    provisioned: Settings,
) -> None:
    codec = Codec(EmbeddedRegistry())
    names = provisioned.topic_names()
    red = make_referral(
        handling={"tlp": "RED", "recipients": ["police-de"], "handling_code": "H2"}
    ).to_avro()
    amber = make_referral().to_avro()
    url = red["body"]["items"][0]["url"]
    publish(
        provisioned,
        names.jurisdiction("DE"),
        [(b"r", codec.encode(REFERRAL, red)), (b"a", codec.encode(REFERRAL, amber))],
    )
    env = cli_env(provisioned)
    env["COLUMNS"] = "250"
    base = ("tail", "referrals.to.DE", "--decode", "--body", "--from-beginning", "--max", "2")
    code, out = _cli(env, *base)
    assert code == 0, out
    assert url not in out
    assert "redacted: TLP RED" in out
    assert amber["body"]["items"][0]["url"] in out, "AMBER bodies are shown with --body"

    code, out = _cli(env, *base, "--reveal")
    assert (code, out.strip()) == (
        2,
        'error: --reveal needs --reason "..." (every revealed body is recorded)',
    )

    code, out = _cli(env, *base, "--reveal", "--reason", "case review 42")
    assert code == 0, out
    assert url in out
    ledger = read_topic(provisioned, names.ledger, at_least=1)
    events = [e for r in ledger for e in decode_events(codec, r.value)]
    assert sorted((e["event"], e["referral_id"]) for e in events) == sorted(
        [
            ("ACCESSED", red["envelope"]["referral_id"]),
            ("ACCESSED", amber["envelope"]["referral_id"]),
        ]
    ), "every body shown under --reveal is recorded, restricted or not"
    assert {e["actor"] for e in events} == {"operator"}
    assert all(e["reason"].startswith("tail-reveal: by ") for e in events)
    assert all(e["reason"].endswith(": case review 42") for e in events)
    assert {e["topic"] for e in events} == {names.jurisdiction("DE")}


def test_no_secret_and_no_case_content_in_logs_spans_or_error_headers(
    provisioned: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sasl_password = "planted-sasl-password-7f3a"
    trace_file = tmp_path / "spans.jsonl"
    settings = Settings(
        **{
            **provisioned.model_dump(),
            "sasl_username": "referral-test",
            "sasl_password": SecretStr(sasl_password),
            "trace_exporter": "jsonl",
            "trace_file": trace_file,
        }
    )
    trust = tmp_path / "trust.toml"
    orgs = ("hl-a", "hl-b", "police-nl", "police-de", "police-fr", "secretariat")
    give_keys(settings, trust, *orgs)
    network = keyed_network(trust)
    provision_network(settings, network)
    codec = codec_for(settings)
    sent = [referral_json("hl-a", cc) for cc in ("NL", "DE")]
    with_red = referral_json(
        "hl-a", "NL", handling={"tlp": "RED", "recipients": ["police-de"], "handling_code": "H0"}
    )  # RED naming an organisation that does not serve NL: refused at publish
    caplog.set_level(logging.DEBUG)
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        for org in ("hl-a", "police-nl", "police-de"):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(rt.stop)
            rt.start()
        drop = Path(settings.state_dir) / "orgs" / "hl-a" / "drop"
        (drop / "batch.json").write_text(json.dumps([*sent, with_red]))
        wait_for(lambda: len(inbox_files(settings, "police-nl")) == 1, 60, "police-nl delivery")
        # An altered record at police-de: a dead letter with error headers.
        [routed] = read_topic(settings, settings.topic_names().jurisdiction("DE"), at_least=1)
        wait_for(lambda: _delivered_de(settings), 60, "police-de delivery")
        altered = bytearray(routed.value)
        altered[-5] ^= 0xFF
        publish(
            settings,
            settings.topic_names().jurisdiction("DE"),
            [(routed.key, bytes(altered))],
            routed.headers,
        )
        wait_for(lambda: len(_dead(settings)) >= 1, 30, "the dead letter of the altered record")
    dead = _dead(settings)
    assert any(_h(d, HEADER_DLQ_PREFIX + "stage") == b"VERIFY" for d in dead)

    logs = "\n".join(r.getMessage() for r in caplog.records) + "\n" + caplog.text
    assert "dead-lettered" in logs, "the run's log lines were captured"
    spans = trace_file.read_text() if trace_file.exists() else ""
    assert '"name":"send ' in spans, "spans were exported"
    errors = "\n".join(
        v.decode("utf-8", "replace")
        for d in dead
        for k, v in d.headers
        if k.startswith(HEADER_DLQ_PREFIX)
    )
    assert "VERIFY" in errors
    haystacks = {"logs": logs, "spans": spans, "dead-letter headers": errors}
    planted = [TOKEN, sasl_password, *_private_key_forms(settings, orgs)]
    content = [s.decode() for r in [*sent, with_red] for s in case_content(r)]
    for where, text in haystacks.items():
        for secret in planted:
            assert secret not in text, f"a planted secret is in the {where}"
        for item in content:
            assert item not in text, f"case content is in the {where}"


def _h(record: Any, name: str) -> bytes | None:
    for k, v in record.headers or ():
        if k == name:
            return bytes(v)
    return None


def _dead(settings: Settings) -> list[Any]:
    return read_topic(settings, settings.topic_names().deadletter, timeout=5)


def _delivered_de(settings: Settings) -> bool:
    import sqlite3

    path = Path(settings.state_dir) / "orgs" / "police-de" / "cases.sqlite3"
    if not path.exists():
        return False
    with sqlite3.connect(path) as db:
        return bool(db.execute("SELECT count(*) FROM cases").fetchone()[0])


def _private_key_forms(settings: Settings, orgs: tuple[str, ...]) -> list[str]:
    """Every private key as PEM body lines, raw hex and raw base64."""
    from cryptography.hazmat.primitives import serialization

    out: list[str] = []
    for org in orgs:
        for pem in (Path(settings.state_dir) / "orgs" / org / "keys").glob("*.pem"):
            text = pem.read_text()
            out += [line for line in text.splitlines() if line and not line.startswith("-----")]
            key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
            raw = key.private_bytes(  # type: ignore[union-attr]
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            out += [raw.hex(), base64.b64encode(raw).decode()]
    assert out
    return out
