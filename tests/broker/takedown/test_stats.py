"""The removal figures of a seeded, signed ledger on the real broker, against a reference count.

20,000 items with known times are written as signed trail events by two
hotlines, read into the ledger store and summarised; every figure is counted
again here from the seed's own truth. A tampered event changes a figure and
``stats verify`` names it; no output carries a URL, a hash or an address.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.ledger.store import _FIELDS, LedgerStore, entry_hash
from broker.network import parse_network
from broker.takedown.stats import store_figures
from broker.wire.codec import Codec
from cli.main import app
from tests.support.connectors import network_text
from tests.support.kafka import provision_network
from tests.support.security import give_keys
from tests.support.takedown import DAY, HOUR
from tests.support.takedown_seed import HOTLINES, SeedItem, seed_items, write_trail

#: The store check is CPU-bound (every entry re-hashed, every record verified): a loaded machine
#: stretches it well past the default 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

ITEMS = 20_000
runner = CliRunner()


# -- the reference count: the seed's truth, counted here ------------------------------------
def _median(xs: list[int]) -> float:
    m = len(xs) // 2
    return float(xs[m]) if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def _reference_group(items: list[SeedItem]) -> dict[str, Any]:
    n = len(items)
    times = sorted(max(0, i.removed - i.opened) for i in items if i.removed is not None)
    rank90 = (9 * len(times) + 9) // 10  # nearest rank, in integers
    police = [i for i in items if i.police is not None and i.police - i.opened <= 3 * DAY]

    def pct(k: int) -> float:
        return round(100 * k / n, 1)

    return {
        "items": n,
        "removed": len(times),
        "median_hours": round(_median(times) / HOUR, 2) if times else None,
        "p90_hours": round(times[rank90 - 1] / HOUR, 2) if times else None,
        "removed_within_2_5d": pct(len([t for t in times if t <= 60 * HOUR])),
        "removed_within_3d": pct(len([t for t in times if t <= 72 * HOUR])),
        "removed_within_7d": pct(len([t for t in times if t <= 168 * HOUR])),
        "police_within_3d": pct(len(police)),
        "notices": sum(i.notices for i in items),
        "escalated": len([i for i in items if i.escalated]),
        "not_illegal": len([i for i in items if i.outcome == "NOT_ILLEGAL"]),
        "moved": len([i for i in items if i.outcome == "MOVED"]),
        "still_online": len([i for i in items if i.outcome == "STILL_ONLINE"]),
    }


def _reference(items: list[SeedItem]) -> dict[str, Any]:
    keys: dict[str, Callable[[SeedItem], str]] = {
        "provider": lambda i: i.item.provider,
        "country": lambda i: i.item.country,
        "route": lambda i: i.item.route,
        "hotline": lambda i: i.hotline,
    }
    out: dict[str, Any] = {"overall": _reference_group(items)}
    for name, key in keys.items():
        groups: dict[str, list[SeedItem]] = {}
        for i in items:
            groups.setdefault(key(i), []).append(i)
        out[f"by_{name}"] = {k: _reference_group(v) for k, v in sorted(groups.items())}
    return out


# -- the seeded ledger ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, bootstrap: str) -> dict[str, Any]:
    """20,000 seeded items on this module's ledger topic, synced into a store."""
    tmp = tmp_path_factory.mktemp("takedown-stats")
    trust = tmp / "trust.toml"
    text = network_text().replace(
        'name = "connector test network"',
        f'name = "takedown test network"\nallow_plain = false\ntrust_file = "{trust}"',
    )
    network_file = tmp / "network.toml"
    network_file.write_text(text, encoding="utf-8")
    settings = Settings(
        bootstrap_servers=bootstrap,
        state_dir=tmp / "state",
        network_file=network_file,
        topic_prefix=f"t-takedown-stats-{uuid.uuid4().hex[:8]}.",
    )
    network = parse_network(text, str(network_file))
    provision_network(settings, network)
    give_keys(settings, trust, *HOTLINES)
    items = seed_items(ITEMS)
    write_trail(settings, items)
    with LedgerStore.for_settings(settings) as store:
        # 100,000 events: on a loaded machine reading them takes longer than sync's 30 s.
        store.sync(settings, Codec.from_settings(settings), timeout=600)
    env = {
        "REFERRAL_BOOTSTRAP_SERVERS": bootstrap,
        "REFERRAL_TOPIC_PREFIX": settings.topic_prefix,
        "REFERRAL_NETWORK_FILE": str(network_file),
        "REFERRAL_STATE_DIR": str(settings.state_dir),
        "COLUMNS": "160",
    }
    return {"settings": settings, "network": network, "items": items, "env": env}


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


_CANARY = re.compile(r"example\.org|\.invalid|https?:|@|[0-9a-f]{40,}")


def test_every_figure_equals_the_reference_count(seeded: dict[str, Any]) -> None:
    settings = seeded["settings"]
    figures = store_figures(Path(settings.state_dir) / "ledger.sqlite3")
    reference = _reference(seeded["items"])
    assert figures["overall"]["items"] == ITEMS
    assert figures == reference
    # the CLI says the same, as JSON and as CSV
    code, out = _cli(seeded["env"], "stats", "--json", "--no-sync")
    assert code == 0, out
    assert json.loads(out) == reference
    code, out = _cli(seeded["env"], "stats", "--csv", "--no-sync")
    assert code == 0, out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 + 20 + 5 + 2 + 2
    host = next(r for r in rows if r["group"] == "provider" and r["key"] == "host-07")
    assert float(host["median_hours"]) == reference["by_provider"]["host-07"]["median_hours"]
    code, out = _cli(seeded["env"], "stats", "--no-sync")
    assert code == 0, out
    assert "host-07" in out
    assert "time to removal: hotline" in out
    for text in (json.dumps(figures), out):
        assert not _CANARY.search(text)


def test_the_dsa_art22_report_counts_notices_by_provider_and_action(
    seeded: dict[str, Any],
) -> None:
    code, out = _cli(seeded["env"], "stats", "--dsa-art22", "--json", "--no-sync")
    assert code == 0, out
    report = json.loads(out)["providers"]
    mine = [i for i in seeded["items"] if i.item.provider == "host-03"]
    row = report["host-03"]
    assert row["items_notified"] == len(mine)
    assert row["notices"]["NOTICE_SENT"] == len(mine)
    assert row["notices"].get("ESCALATED", 0) == len([i for i in mine if i.escalated])
    # a provider's action: its own answer (REMOVED, NOT_ILLEGAL, MOVED), not a re-check
    acted = [
        i
        for i in mine
        if any(
            s[2] == "host-03" and s[0].value in ("REMOVED", "NOT_ILLEGAL", "MOVED") for s in i.steps
        )
    ]
    assert sum(v for k, v in row["actions"].items() if k != "NO_ACTION") == len(acted)
    assert not _CANARY.search(out)


def _tamper(store_path: Path, event_id: str, shift_ms: int) -> None:
    """Move one event's time and re-chain everything after it (head and all), as an insider."""
    with sqlite3.connect(store_path) as db:
        db.row_factory = sqlite3.Row
        idx = db.execute("SELECT idx FROM entries WHERE event_id = ?", (event_id,)).fetchone()[0]
        db.execute("UPDATE entries SET at_ms = at_ms + ? WHERE idx = ?", (shift_ms, idx))
        rows = db.execute("SELECT * FROM entries WHERE idx >= ? ORDER BY idx", (idx,)).fetchall()
        prev = rows[0]["prev_hash"]
        for row in rows:
            fields = {name: row[name] for name in _FIELDS}
            fields["ledger_offset"] = row["ledger_offset"]
            digest = entry_hash(prev, fields)
            db.execute(
                "UPDATE entries SET prev_hash = ?, entry_hash = ? WHERE idx = ?",
                (prev, digest, row["idx"]),
            )
            prev = digest
        db.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (prev,))


def test_a_tampered_event_changes_a_figure_and_verify_names_it(seeded: dict[str, Any]) -> None:
    settings, env = seeded["settings"], seeded["env"]
    code, out = _cli(env, "stats", "verify", "--no-sync")
    assert code == 0, out
    assert out.startswith("figures verified: ")
    # a quick removal at host-11, pushed 20 days later
    victim = next(
        i
        for i in seeded["items"]
        if i.item.provider == "host-11"
        and i.outcome == "REMOVED"
        and i.removed is not None
        and i.removed - i.opened < DAY
        and len(i.steps) == 5
    )
    path = Path(settings.state_dir) / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        event_id = db.execute(
            "SELECT event_id FROM entries WHERE event = 'TAKEDOWN' AND reason LIKE ?",
            (f"REMOVED item={victim.item.item_id} %",),
        ).fetchone()[0]
    before = store_figures(path)["by_provider"]["host-11"]
    _tamper(path, event_id, 20 * DAY)
    after = store_figures(path)["by_provider"]["host-11"]
    assert after["removed_within_7d"] < before["removed_within_7d"]
    code, out = _cli(env, "stats", "verify", "--json", "--no-sync")
    assert code == 1, out
    found = json.loads(out)
    assert [a["event_id"] for a in found["altered"]] == [event_id]
    assert found["altered"][0]["kind"] == "altered"
    assert {
        "figure": "by_provider.host-11.removed_within_7d",
        "store": after["removed_within_7d"],
        "signed": before["removed_within_7d"],
    } in found["changed"]
    assert found["figures"]["by_provider"]["host-11"] == before
    assert not _CANARY.search(out)
