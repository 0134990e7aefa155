"""The console's Stats page in a real headless Chromium, over a seeded, signed takedown ledger.

2,000 seeded items (tests/support/takedown_seed.py) are written to the ledger
topic of the embedded broker, signed by their hotlines; the operator logs in
and opens Stats: the headline figures are the seed's own count, both charts are
drawn, every breakdown is listed, nothing is wider than an 800 px window and no
URL or address is served. Screenshots: ``artifacts/screenshots/stats*.png``.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path

import pytest

from broker.config import Settings
from broker.network import parse_network
from console.auth import OPERATOR, token_env
from console.server import ConsoleServer, make_console
from tests.console.test_browser import CHROMIUM, CHROMIUM_ARGS, _browser_or_fail, _narrow_shot
from tests.support.connectors import network_text
from tests.support.kafka import provision_network
from tests.support.security import give_keys
from tests.support.takedown import DAY
from tests.support.takedown_seed import HOTLINES, seed_items, write_trail

pytestmark = pytest.mark.slow

OPERATOR_TOKEN = "synthetic-console-token-operator"
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def test_the_stats_page_in_a_real_browser(settings: Settings, tmp_path: Path) -> None:
    sync_playwright = _browser_or_fail()
    trust = tmp_path / "trust.toml"
    text = network_text().replace(
        'name = "connector test network"',
        f'name = "stats test network"\nallow_plain = false\ntrust_file = "{trust}"',
    )
    network_file = tmp_path / "network.toml"
    network_file.write_text(text, encoding="utf-8")
    settings = Settings(**{**settings.model_dump(), "network_file": network_file})
    network = parse_network(text, str(network_file))
    provision_network(settings, network)
    give_keys(settings, trust, *HOTLINES)
    items = seed_items(2000, seed=7)
    write_trail(settings, items)
    removed = sum(1 for i in items if i.removed is not None)
    police = sum(1 for i in items if i.police is not None and i.police - i.opened <= 3 * DAY)
    SHOTS.mkdir(parents=True, exist_ok=True)
    env = {token_env(OPERATOR): OPERATOR_TOKEN}
    with ExitStack() as stack:
        server = ConsoleServer(make_console(settings, network, None, env=env), port=0)
        stack.callback(server.stop)
        base = server.start().url.rstrip("/")
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        page.goto(f"{base}/login")
        page.fill("#token", OPERATOR_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/operator$"))
        page.click("header nav a[href='/operator/stats']")
        page.wait_for_url(re.compile(r".*/operator/stats$"))
        kpis = page.inner_text("#kpis")
        assert "2000\nitems" in kpis
        assert f"{removed}\nremoved" in kpis
        assert f"{round(100 * police / 2000, 1)}%\nreported to police" in kpis
        assert page.locator("svg.chart").count() == 2
        assert page.locator("#by-provider tbody tr").count() == 20
        assert page.locator("#by-country tbody tr").count() == 5
        assert page.locator("#by-hotline tbody tr").count() == 2
        page.screenshot(path=str(SHOTS / "stats.png"), full_page=True)
        _narrow_shot(page, SHOTS / "stats-800.png")
        html = page.content()
        assert not re.search(r"example\.org|\.invalid|https?://(?!127\.0\.0\.1)|@", html)
        # a window of one day back from now holds none of the seeded (2026-01) items
        page.fill("input[name=since]", "1d")
        page.click("form.filters button")
        assert "0\nitems" in page.inner_text("#kpis")
