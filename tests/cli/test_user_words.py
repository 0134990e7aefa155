"""Errors speak the user's words: flags, CSV columns, organisations in the network.

No broker: every refusal here must come before anything is signed or sent (with
no broker configured, reaching the send would say "no bootstrap servers").
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.config import load_settings
from broker.contracts import Delivery
from broker.errors import UnknownName
from broker.network import load_network
from broker.receiver.inbox import Inbox
from broker.receiver.statuses import new_status_update, send_status_update
from broker.wire.models import ReferralStatus
from cli.main import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_NETWORK = ROOT / "examples" / "network.toml"
ORG = "police-nl"
runner = CliRunner()


@pytest.fixture
def received(tmp_path: Path) -> tuple[dict[str, str | None], str]:
    """A fresh state dir whose police-nl inbox holds one referral from hl-se; no broker."""
    rid = str(uuid.uuid4())
    doc = {"envelope": {"referral_id": rid, "case_id": "case-1", "priority": "NORMAL"}}
    inbox = Inbox(tmp_path / "state" / "orgs" / ORG / "inbox.sqlite3")
    try:
        inbox.record(Delivery(rid, "case-1", "hl-se", b"\x00", doc, "referrals.to.NL", 0, 1), "f")
    finally:
        inbox.close()
    env: dict[str, str | None] = {
        "REFERRAL_STATE_DIR": str(tmp_path / "state"),
        "REFERRAL_NETWORK_FILE": str(EXAMPLE_NETWORK),
        "REFERRAL_BOOTSTRAP_SERVERS": None,
    }
    return env, rid


def one_line(args: list[str], env: dict[str, str | None]) -> tuple[int, str]:
    result = runner.invoke(app, args, env=env)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return result.exit_code, lines[0]


def test_reroute_to_an_unknown_organisation_is_refused_before_signing(
    received: tuple[dict[str, str | None], str],
) -> None:
    env, rid = received
    args = ["status", ORG, rid[:8], "REROUTED", "--destination", "police-xx"]
    code, line = one_line(args, env)
    assert code == 2
    assert line.startswith("error: unknown organisation 'police-xx' for --destination; did you")
    assert "police-nl" in line  # a nearest valid one
    inbox = Inbox.for_org(load_settings(state_dir=env["REFERRAL_STATE_DIR"]), ORG)
    try:
        assert inbox.sent_statuses("hl-se", rid) == []
    finally:
        inbox.close()


def test_send_status_update_refuses_an_unknown_destination_itself(
    received: tuple[dict[str, str | None], str],
) -> None:
    """The console's path: the check is in the sending, not only in the CLI."""
    env, rid = received
    settings = load_settings(
        state_dir=env["REFERRAL_STATE_DIR"], network_file=env["REFERRAL_NETWORK_FILE"]
    )
    inbox = Inbox.for_org(settings, ORG)
    try:
        record = inbox.lookup(rid)
        assert record is not None
        update = new_status_update(
            inbox, ORG, record, ReferralStatus.REROUTED, destination="police-xx"
        )
    finally:
        inbox.close()
    network = load_network(EXAMPLE_NETWORK)
    with pytest.raises(UnknownName, match="police-xx"):
        send_status_update(settings, network, None, None, update)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "flag"), [("DELAYED", "--reason"), ("REROUTED", "--destination")]
)
def test_status_errors_name_the_flag(
    received: tuple[dict[str, str | None], str], status: str, flag: str
) -> None:
    env, rid = received
    code, line = one_line(["status", ORG, rid, status], env)
    assert code == 1
    assert line.startswith(f"error: {status} needs {flag}"), line
    assert "reason_code" not in line
    assert "destination_org" not in line


def check(tmp_path: Path, text: str) -> tuple[int, str, str]:
    path = tmp_path / "referrals.csv"
    path.write_text(text, encoding="utf-8")
    env = {
        "REFERRAL_STATE_DIR": str(tmp_path / "state"),
        "REFERRAL_NETWORK_FILE": str(EXAMPLE_NETWORK),
    }
    result = runner.invoke(app, ["check", str(path), "--as", "hl-nl"], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_csv_headers_match_whatever_their_case(tmp_path: Path) -> None:
    code, out, err = check(
        tmp_path, "Case_ID,URL,Hosting Country\nc-1,https://a.example.org/x,nl\n"
    )
    assert (code, err) == (0, "")
    assert "row 2: ok, referral " in out


def test_a_misspelt_header_gets_did_you_mean(tmp_path: Path) -> None:
    code, _, err = check(tmp_path, "case_id,url,hostng_country\nc-1,https://a.example.org/x,nl\n")
    assert code == 1
    assert err.strip().endswith(
        "header: hostng_country: unknown column; did you mean hosting_country?"
    )


def test_a_missing_column_is_named_as_the_column(tmp_path: Path) -> None:
    code, _, err = check(tmp_path, "case_id,hosting_country\nc-1,nl\n")
    assert code == 1
    assert err.strip().endswith("header: url: missing column")
    assert "Input should be" not in err


def test_an_empty_required_cell_is_named_as_its_column(tmp_path: Path) -> None:
    code, _, err = check(tmp_path, "case_id,url\nc-1,\n")
    assert code == 1
    assert err.strip().endswith("row 2: url: empty: this column needs a value")


def test_a_mistyped_referral_id_gets_the_nearest_one_of_the_inbox(
    received: tuple[dict[str, str | None], str],
) -> None:
    env, rid = received
    typo = rid[:-1] + ("0" if rid[-1] != "0" else "1")
    code, line = one_line(["status", ORG, typo, "ACCEPTED"], env)
    assert code == 2
    assert line == f"error: unknown referral '{typo}' in the inbox of {ORG}; did you mean {rid}?"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--handling", "H9"], "error: --handling must be one of H0, H1, H2, H3"),
        (["--reliability", "Q"], "error: --reliability must be one of A, B, C, X"),
        (["--assessment", "9"], "error: --assessment must be one of 1, 2, 3, 4"),
        (["--language", "english"], "error: --language must be a two-letter ISO 639-1 code"),
        (["--purpose", " "], "error: --purpose must be a non-empty text"),
    ],
)
def test_request_send_names_the_flag_before_anything_connects(
    received: tuple[dict[str, str | None], str], extra: list[str], expected: str
) -> None:
    env, _ = received
    args = ["request", "send", ORG, "--to", "police-de", "--case", "c-1", "--purpose", "p"]
    code, line = one_line([*args, "--item", "x", *extra], env)
    assert code == 1  # refused input, as `status` refuses it (2 is for unknown names)
    assert line.startswith(expected)


def test_request_clarify_names_the_flag(received: tuple[dict[str, str | None], str]) -> None:
    env, _ = received
    code, line = one_line(["request", "clarify", ORG, "0" * 8, "--give", " "], env)
    assert (code, line.split(" must ")[0]) == (1, "error: --give")
