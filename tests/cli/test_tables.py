"""Tables that fit an 80-column terminal (``COLUMNS=80``), and ``--wide`` for everything."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from broker.config import Settings
from broker.ledger.events import handover_event
from broker.ledger.store import LedgerStore
from cli.main import app
from tests.support.connectors import cli_env_for

NETWORK = Path(__file__).resolve().parents[2] / "examples" / "network.toml"


def _hop(rid: str, event: str, n: int, **kw: Any) -> dict[str, Any]:
    return handover_event(
        event,
        referral_id=rid,
        case_id="case-narrow-1",
        actor=kw.pop("actor", "hl-nl"),
        from_party="hl-nl",
        offset=n,
        partition=0,
        at_ms=int(time.time() * 1000) - 60_000 + n * 1000,
        **kw,
    )


def _seed(state: Path) -> str:
    rid = str(uuid.uuid4())
    store = LedgerStore(state / "ledger.sqlite3")
    events = [
        _hop(rid, "PUBLISHED", 0, topic="referrals.intake", to_party="router"),
        _hop(
            rid,
            "ROUTED",
            1,
            actor="router",
            topic="referrals.to.DE",
            to_party="police-de",
            reason="jurisdiction DE (HOSTING) for the police of the hosting country",
        ),
        _hop(rid, "DELIVERED", 2, actor="police-de", topic="referrals.to.DE"),
    ]
    for i, e in enumerate(events):
        store.append([e], ledger_offset=i)
    store.close()
    return rid


def _run(state: Path, columns: int, *args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(
        app,
        ["--network", str(NETWORK), "--state-dir", str(state), *args],
        env={**(env or {}), "COLUMNS": str(columns), "TERM": "dumb"},
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def _fits(out: str, width: int = 80) -> None:
    too_long = [line for line in out.splitlines() if len(line) > width]
    assert not too_long, too_long


def test_trace_fits_80_columns_and_takes_a_short_id(tmp_path: Path) -> None:
    rid = _seed(tmp_path)
    out = _run(tmp_path, 80, "trace", rid[:8], "--no-sync")
    _fits(out)
    for key in ("PUBLISHED", "ROUTED", "DELIVERED", "police-de", "referrals.to.DE"):
        assert key in out, key
    assert "case-narrow-1" in out
    wide = _run(tmp_path, 200, "trace", rid[:8], "--no-sync", "--wide")
    assert "since prev" in wide, "--wide shows every column"


def test_ledger_show_fits_80_columns_with_short_ids(tmp_path: Path) -> None:
    rid = _seed(tmp_path)
    out = _run(tmp_path, 80, "ledger", "show")
    _fits(out)
    assert rid[:8] in out
    assert rid not in out
    for key in ("PUBLISHED", "ROUTED", "router", "referrals.to.DE"):
        assert key in out, key
    wide = _run(tmp_path, 200, "ledger", "show", "--wide", "--referral", rid[:8])
    assert rid in wide
    assert "for the police of the hosting country" in wide


def test_topics_list_fits_80_columns(provisioned: Settings, tmp_path: Path) -> None:
    env = cli_env_for(provisioned, tmp_path)
    out = _run(tmp_path, 80, "topics", "list", env=env)
    _fits(out)
    assert "topic" in out
    assert "messages" in out
    assert "\nreferrals.intake " in out, "names without the deployment prefix, one per line"
    assert provisioned.topic_prefix in out, "the title names the prefix"
    wide = _run(tmp_path, 200, "topics", "list", "--wide", env=env)
    assert "counted by" in wide
