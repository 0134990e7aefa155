"""Known content in the console (real headless Chromium) and in ``referral show``.

Two hotlines publish items another hotline assessed before, one of them under
TLP RED; police-fr's console inbox and referral page mark each repeat with the
earlier holder and classification, the RED one with only whom to ask.
Screenshots: ``artifacts/screenshots/known-*.png``.
"""

from __future__ import annotations

import json
import random
import re
from contextlib import ExitStack
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.known_net import RECEIVER, _document, plan
from broker.config import Settings
from broker.known.index import NEAR
from broker.known.views import referral_marks
from broker.wire.codec import Codec
from cli.main import app
from connectors.runtime import ConnectorRuntime
from console.auth import token_env
from console.server import ConsoleServer, make_console
from tests.console.test_browser import CHROMIUM_ARGS, _browser_or_fail, _narrow_shot
from tests.support.connectors import wait_for
from tests.support.kafka import cli_env, start_router
from tests.support.known import known_network, running_evaluator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
TOKEN = "synthetic-console-token-police-fr-known"


def test_known_items_are_marked_in_the_console_and_in_referral_show(
    settings: Settings,
) -> None:
    sync_playwright = _browser_or_fail()
    SHOTS.mkdir(parents=True, exist_ok=True)
    settings, network = known_network(settings, connectors=True)
    codec = Codec.from_settings(settings)
    first, again = plan(2, 1, random.Random(11))
    red_first, red_again = plan(2, 1, random.Random(12))
    with ExitStack() as stack:
        stack.enter_context(running_evaluator(settings, network))
        stack.callback(start_router(settings, network, codec).stop)
        orgs = {first.org, again.org, red_first.org, red_again.org, RECEIVER}
        runtimes = {
            org: stack.enter_context(ConnectorRuntime(settings, network, org, codec))
            for org in sorted(orgs)
        }

        def send(item: object, n: int, legal: str, red: bool) -> str:
            org = item.org  # type: ignore[attr-defined]
            doc = _document(org, [(n, item)], legal, red)  # type: ignore[list-item]
            result = runtimes[org].publisher.publish([(str(n), doc)])
            assert result.ok
            return str(result.published[0].referral_id)

        send(first, 0, "NATIONAL", False)
        send(red_first, 1, "BASELINE", True)
        rid = send(again, 2, "NOT_ILLEGAL", False)
        red_rid = send(red_again, 3, "NOT_ILLEGAL", False)

        def marked() -> bool:  # the receiver's index sync (every 5 s) takes the entries
            marks = referral_marks(settings, RECEIVER, [rid, red_rid])
            return rid in marks and red_rid in marks

        wait_for(marked, 90, "both repeats marked in police-fr's index", step=0.5)

        # referral show: the item's line, and --json's previously_assessed.
        env = cli_env(settings)
        shown = CliRunner().invoke(app, ["show", rid, "--as", RECEIVER], env=env)
        assert shown.exit_code == 0, shown.output
        assert f"previously assessed by {first.org} as NATIONAL on " in shown.output
        as_json = CliRunner().invoke(app, ["show", red_rid, "--as", RECEIVER, "--json"], env=env)
        assert as_json.exit_code == 0, as_json.output
        (item,) = json.loads(as_json.output)["items"]
        known = item["previously_assessed"]
        assert (known["holder"], known["ask"], known["tlp"]) == (red_first.org,) * 2 + ("RED",)
        assert "classification" not in known

        console_env = {token_env(RECEIVER): TOKEN}
        server = ConsoleServer(make_console(settings, network, RECEIVER, env=console_env), port=0)
        stack.callback(server.stop)
        base = server.start().url.rstrip("/")
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        page.goto(f"{base}/login")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/inbox$"))

        mark = page.locator(f'tr[data-known-for="{rid}"]').inner_text()
        assert f"previously assessed by {first.org} as NATIONAL on " in mark
        red = page.locator(f'tr[data-known-for="{red_rid}"]').inner_text()
        assert f"known to {red_first.org} (TLP:RED): ask {red_first.org}" in red
        assert "BASELINE" not in red
        assert page.locator("tr.known-row").count() == 2  # the originals are not marked
        page.screenshot(path=str(SHOTS / "known-inbox.png"), full_page=True)
        _narrow_shot(page, SHOTS / "known-inbox-800.png")

        page.goto(f"{base}/referral/{again.org}/{rid}")
        line = page.locator("#items [data-known]").inner_text()
        assert f"previously assessed by {first.org} as NATIONAL on " in line
        page.screenshot(path=str(SHOTS / "known-referral.png"), full_page=True)
        page.goto(f"{base}/referral/{red_again.org}/{red_rid}")
        line = page.locator("#items [data-known]").inner_text()
        assert line.endswith(f"known to {red_first.org} (TLP:RED): ask {red_first.org}")
        _narrow_shot(page, SHOTS / "known-referral-red-800.png")


def _flip(rng: random.Random, pdq: bytes, bits: int) -> bytes:
    mask = sum(1 << p for p in rng.sample(range(256), bits))
    return (int.from_bytes(pdq, "big") ^ mask).to_bytes(32, "big")


def test_a_liaison_hides_known_content_and_shows_it_again(settings: Settings) -> None:
    """The console's toggle: a referral of known items only leaves the inbox, a near-duplicate
    item leaves its referral page; 'Show them' brings both back. Screenshots
    ``known-hide-*.png``."""
    sync_playwright = _browser_or_fail()
    SHOTS.mkdir(parents=True, exist_ok=True)
    settings, network = known_network(settings, connectors=True)
    codec = Codec.from_settings(settings)
    rng = random.Random(31)
    first, again = plan(2, 1, random.Random(21))
    image, copy, fresh = plan(3, 0, random.Random(22))
    pdq = rng.randbytes(32)
    with ExitStack() as stack:
        stack.enter_context(running_evaluator(settings, network))
        stack.callback(start_router(settings, network, codec).stop)
        runtimes = {
            org: stack.enter_context(ConnectorRuntime(settings, network, org, codec))
            for org in sorted({first.org, again.org, RECEIVER})
        }

        def send(org: str, items: list[tuple[object, bytes | None]], n: int, legal: str) -> str:
            doc = _document(org, [(n + k, it) for k, (it, _) in enumerate(items)], legal, False)  # type: ignore[misc]
            for entry, (_, value) in zip(doc["body"]["items"], items, strict=True):
                if value is not None:
                    entry["hashes"].append({"algorithm": "PDQ", "value": value.hex()})
            result = runtimes[org].publisher.publish([(str(n), doc)])
            assert result.ok
            return str(result.published[0].referral_id)

        send(first.org, [(first, None), (image, pdq)], 0, "BASELINE")
        only_known = send(again.org, [(again, None)], 2, "NOT_ILLEGAL")  # the same hashes
        mixed = send(again.org, [(copy, _flip(rng, pdq, 12)), (fresh, None)], 3, "NOT_ILLEGAL")

        def marked() -> bool:  # police-fr's runtime syncs its index every 5 s
            marks = referral_marks(settings, RECEIVER, [only_known, mixed])
            return only_known in marks and any(h.kind == NEAR for _, h in marks.get(mixed, ()))

        wait_for(marked, 90, "both referrals marked in police-fr's index", step=0.5)

        console_env = {token_env(RECEIVER): TOKEN}
        server = ConsoleServer(make_console(settings, network, RECEIVER, env=console_env), port=0)
        stack.callback(server.stop)
        base = server.start().url.rstrip("/")
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        page.goto(f"{base}/login")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/inbox$"))

        # Shown by default, marked: the near-duplicate with its distance.
        assert page.locator("#inbox tr[data-referral]").count() == 3
        near = page.locator(f'tr[data-known-for="{mixed}"]').inner_text()
        assert (
            f"near-duplicate (distance 12 of 256) of an item previously assessed by {first.org}"
            in near
        )
        assert page.inner_text("#known-toggle") == "Hide content assessed before"
        page.screenshot(path=str(SHOTS / "known-hide-off.png"), full_page=True)

        # Hidden: the referral of known items only leaves; the mixed one stays.
        page.click("#known-toggle")
        page.wait_for_selector("#known-hidden")
        assert page.locator(f'#inbox tr[data-referral="{only_known}"]').count() == 0
        assert page.locator(f'#inbox tr[data-referral="{mixed}"]').count() == 1
        assert page.locator("#inbox tr[data-referral]").count() == 2
        assert "1 referral(s) holding only content assessed before hidden" in page.inner_text(
            "#known-hidden"
        )
        assert page.inner_text("#known-toggle") == "Show content assessed before"
        page.screenshot(path=str(SHOTS / "known-hide-inbox.png"), full_page=True)
        _narrow_shot(page, SHOTS / "known-hide-inbox-800.png")
        # The live refresh keeps the choice (the rows come with the same cookie).
        rows = page.request.get(f"{base}/inbox/rows").text()
        assert only_known not in rows
        assert "holding only content assessed before hidden" in rows

        # The mixed referral's page: its near-duplicate item hidden, the fresh one listed.
        page.goto(f"{base}/referral/{again.org}/{mixed}")
        assert page.locator("#items tr[data-item]").count() == 1
        assert page.locator("#items [data-known]").count() == 0
        assert "1 item(s) assessed before hidden" in page.inner_text("#known-hidden")
        page.screenshot(path=str(SHOTS / "known-hide-referral.png"), full_page=True)

        # 'Show them': back on the same page, both items, the near-duplicate marked.
        page.click("#known-hidden button")
        page.wait_for_url(re.compile(rf".*/referral/{again.org}/{mixed}$"))
        assert page.locator("#items tr[data-item]").count() == 2
        line = page.locator("#items [data-known]").inner_text()
        assert "near-duplicate (distance 12 of 256)" in line
        assert page.locator("#known-hidden").count() == 0
        page.goto(f"{base}/inbox")
        assert page.locator("#inbox tr[data-referral]").count() == 3
        page.screenshot(path=str(SHOTS / "known-hide-on-again.png"), full_page=True)
