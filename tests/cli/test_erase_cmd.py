"""``referral erase``: bad input is one line in the user's words, before any broker is asked."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *args: str) -> tuple[int, str]:
    base = ["--state-dir", str(tmp_path / "state"), "--network"]
    result = CliRunner().invoke(
        app,
        [*base, str(ROOT / "examples" / "network.toml"), "erase", *args],
        env={"REFERRAL_BOOTSTRAP_SERVERS": "127.0.0.1:9"},
    )
    return result.exit_code, result.output


def test_a_reason_that_is_no_code_is_refused_in_one_line(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "0" * 8, "--as", "hl-nl", "--reason", "the victim asked")
    assert code != 0
    assert "--reason 'the victim asked': a code in capitals, e.g. INCORRECT" in out
    assert "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_a_referral_the_origin_does_not_hold_is_refused_in_one_line(tmp_path: Path) -> None:
    rid = "5f0c1d2e-0000-4000-8000-000000000000"
    code, out = _run(tmp_path, rid, "--as", "hl-nl", "--reason", "INCORRECT")
    assert code != 0
    assert f"hl-nl holds no referral {rid} (never published, or erased)" in out
    assert "Traceback" not in out
    assert len(out.strip().splitlines()) == 1
