"""The web console in a real headless Chromium, against a running network on the embedded broker.

One sealed and signed network (every organisation and the router have keys; no
plain referrals): the router, hl-a's connectors (the origin) and police-nl's
(the receiver) run in this process; the console serves police-nl and the
operator. Driven by Playwright with Debian's ``chromium`` (``executable_path``;
``playwright install`` is never run). Under ``CI=true`` a missing browser fails
the test instead of skipping it. Screenshots go to ``artifacts/screenshots/``
(git-ignored).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.ledger.store import LedgerStore
from broker.network import Network, parse_network
from broker.receiver.inbox import Inbox
from broker.security.keys import ROUTER
from broker.wire.codec import Codec
from connectors.runtime import ConnectorRuntime
from console.auth import OPERATOR, token_env
from console.server import ConsoleServer, make_console
from tests.support.connectors import ENV, NETWORK_TOML, referral_json, wait_for
from tests.support.kafka import provision_network, publish, start_router
from tests.support.security import give_keys

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
#: The launch flags of a sandbox-less CI container, without any network chatter.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIAISON_TOKEN = "synthetic-console-token-police-nl"
OPERATOR_TOKEN = "synthetic-console-token-operator"
ORGS = ("hl-a", "hl-b", "police-nl", "police-de", "police-fr", "secretariat")


def _browser_or_fail() -> Any:
    if not CHROMIUM.exists():
        # Never a skip: a browser test that did not run is not a pass.
        pytest.fail(f"{CHROMIUM} is missing (`make browser` installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    return sync_playwright


@pytest.fixture
def keyed(provisioned: Settings, tmp_path: Path) -> tuple[Settings, Network]:
    """The connector test network, sealed and signed: keys for everyone, no plain referrals."""
    trust = tmp_path / "trust.toml"
    give_keys(provisioned, trust, *ORGS, ROUTER)
    text = (
        NETWORK_TOML.replace("{webhook_url}", "http://127.0.0.1:9/hook")
        .replace("{republish_after}", "30")
        .replace(
            'name = "connector test network"',
            f'name = "console test network"\nallow_plain = false\ntrust_file = "{trust}"',
        )
    )
    network_file = tmp_path / "network.toml"
    network_file.write_text(text, encoding="utf-8")
    settings = Settings(**{**provisioned.model_dump(), "network_file": network_file})
    network = parse_network(text, str(network_file))
    provision_network(settings, network)
    return settings, network


@pytest.fixture
def shots() -> Path:
    """The screenshot folder (created)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


def _content(data: dict[str, Any]) -> list[str]:
    """The case content of a referral: URLs, hosts and hash values."""
    out = []
    for item in data["body"]["items"]:
        out.append(item["url"])
        out.append(item["url"].split("/")[2])
        out += [h["value"] for h in item["hashes"]]
    return out


def _item(n: int) -> dict[str, Any]:
    return {
        "url": f"https://host-{n}.example.org/console/{n}",
        "media_type": "IMAGE",
        "hashes": [{"algorithm": "SHA256", "value": os.urandom(32).hex()}],
        "hosting": {"country": "NL", "provider": "Example Hosting"},
    }


def _status_lines(settings: Settings, origin: str, rid: str) -> list[dict[str, Any]]:
    path = Path(settings.state_dir) / "orgs" / origin / "status" / f"{rid}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_liaison_and_operator_in_a_real_browser(
    keyed: tuple[Settings, Network], shots: Path
) -> None:
    sync_playwright = _browser_or_fail()
    settings, network = keyed
    codec = Codec.from_settings(settings)
    normal = referral_json("hl-a", "NL", case_id="console-normal-1")
    urgent = referral_json(
        "hl-a",
        "NL",
        case_id="console-urgent-1",
        priority="URGENT",
        urgency_reason="IMMINENT_RISK",
        handling={"tlp": "AMBER_STRICT", "recipients": [], "handling_code": "H1"},
        items=[_item(1), _item(2)],
    )
    late = referral_json("hl-a", "NL", case_id="console-live-1")
    rid = urgent["envelope"]["referral_id"]
    secrets = [s for r in (normal, urgent, late) for s in _content(r)]
    env = {token_env("police-nl"): LIAISON_TOKEN, token_env(OPERATOR): OPERATOR_TOKEN}

    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        origin = ConnectorRuntime(settings, network, "hl-a", codec, env=ENV)
        stack.callback(origin.stop)
        origin.start()
        police = ConnectorRuntime(settings, network, "police-nl", codec, env=ENV)
        stack.callback(police.stop)
        police.start()
        # The normal one first: the urgent one, newer, must still be listed first.
        assert origin.publisher.publish([("n", normal)]).published[0].sent
        assert origin.publisher.publish([("u", urgent)]).published[0].sent
        # A legacy client's broken record: a dead letter for the operator to replay.
        publish(settings, settings.topic_names().intake, [(b"legacy", b"not a referral")])
        inbox = Inbox.for_org(settings, "police-nl")
        stack.callback(inbox.close)
        wait_for(lambda: len(inbox.received()) == 2, 60, "two referrals in police-nl's inbox")

        server = ConsoleServer(make_console(settings, network, "police-nl", env=env), port=0)
        stack.callback(server.stop)
        base = server.start().url.rstrip("/")

        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        # What the browser's own console reports (a missing favicon is a 404 there).
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        # A wrong token sees nothing.
        page.goto(f"{base}/login")
        page.fill("#token", "not-the-token")
        page.click("button[type=submit]")
        assert "That token is not accepted" in page.inner_text("#error")
        page.goto(f"{base}/inbox")
        assert page.url.endswith("/login")
        assert "console-urgent-1" not in page.content()
        wrong = page.request.get(f"{base}/inbox/rows")
        assert wrong.status == 401
        assert rid not in wrong.text()

        # The liaison logs in: the urgent referral comes first.
        page.fill("#token", LIAISON_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/inbox$"))
        first = page.locator("#inbox tbody tr").first
        assert first.get_attribute("data-referral") == rid
        assert "URGENT" in first.inner_text()
        page.screenshot(path=str(shots / "inbox.png"), full_page=True)
        _narrow_shot(page, shots / "inbox-800.png")

        # The inbox refreshes without a reload: a referral arriving now appears.
        assert origin.publisher.publish([("l", late)]).published[0].sent
        page.wait_for_selector(
            f'#inbox tr[data-referral="{late["envelope"]["referral_id"]}"]', timeout=30_000
        )
        headers = page.request.get(f"{base}/inbox").headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store"

        # A form without the CSRF token is refused (and nothing is sent).
        forged = page.request.post(
            f"{base}/referral/hl-a/{rid}/status",
            form={"status": "ACCEPTED"},
        )
        assert forged.status == 403

        # Open it; accept it, send a takedown notice, mark one item REMOVED.
        first.locator("a").click()
        page.wait_for_url(re.compile(rf".*/referral/hl-a/{rid}$"))
        assert page.inner_text("#current-status") == "RECEIVED"
        for step in ("ACCEPTED", "NTD_SENT"):
            page.click(f'button.status-action[data-status="{step}"]')
            page.wait_for_selector("#notice")
            assert page.inner_text("#current-status") == step
        item_rows = page.locator("#items tbody tr")
        assert item_rows.count() == 2
        removed_item = item_rows.first.get_attribute("data-item")
        item_rows.first.locator('button[data-outcome="REMOVED"]').click()
        page.wait_for_selector("#notice")
        assert page.inner_text("#current-status") == "STILL_ONLINE"
        row = page.locator(f'#items tr[data-item="{removed_item}"]')
        assert "REMOVED" in row.inner_text()
        # The other item is still online, moved to a host in Germany.
        moved = page.locator("#items tbody tr").nth(1)
        moved_item = moved.get_attribute("data-item")
        moved.locator("input[name=moved_to]").fill("de")
        moved.locator('button[data-outcome="STILL_ONLINE"]').click()
        page.wait_for_selector("#notice")
        moved_row = page.locator(f'#items tr[data-item="{moved_item}"]').inner_text()
        assert "STILL_ONLINE" in moved_row
        assert "moved to DE" in moved_row

        # The origin sees it: the signed update with the item's outcome reached its status folder.
        def item_removed() -> bool:
            return any(
                line["status"] == "STILL_ONLINE"
                and any(
                    o["item_id"] == removed_item and o["outcome"] == "REMOVED"
                    for o in line.get("item_outcomes") or ()
                )
                for line in _status_lines(settings, "hl-a", rid)
            )

        def item_moved() -> bool:
            return any(
                (o.get("hosting") or {}).get("country") == "DE"
                for line in _status_lines(settings, "hl-a", rid)
                for o in line.get("item_outcomes") or ()
                if o["item_id"] == moved_item
            )

        wait_for(item_removed, 60, "the origin to hear of the removed item")
        wait_for(item_moved, 30, "the origin to hear where the other item moved")
        assert origin.status_log.status_state(rid, "police-nl") == "STILL_ONLINE"

        # The origin re-referred the moved item: the referral page names the child (no reload
        # of content: the page shows ids, versions and links only).
        def child_linked() -> bool:
            page.goto(f"{base}/referral/hl-a/{rid}")
            return bool(page.locator("#children").count() == 1)

        wait_for(child_linked, 30, "the re-referral on the referral page", step=1)
        assert "moved to DE" in page.inner_text("#children")
        assert page.inner_text("#version").startswith("v1")
        # TLP AMBER+STRICT: the content needs a typed reason, and the access is recorded.
        page.fill("#reason", "takedown check")
        page.click("#reveal")
        page.wait_for_selector("td.content")
        assert urgent["body"]["items"][0]["url"] in page.inner_text("#items")
        page.screenshot(path=str(shots / "referral.png"), full_page=True)
        _narrow_shot(page, shots / "referral-800.png")

        # CLOSED is final: the first click asks (nothing sent), the second sends.
        page.click('button.status-action[data-status="CLOSED"]')
        page.wait_for_selector("#confirm")
        assert "CLOSED is final" in page.inner_text("#confirm")
        assert origin.status_log.status_state(rid, "police-nl") == "STILL_ONLINE"
        page.click("#confirm-final")
        page.wait_for_selector("#notice")
        assert page.inner_text("#current-status") == "CLOSED"
        assert page.locator("button.status-action").count() == 0
        wait_for(
            lambda: origin.status_log.status_state(rid, "police-nl") == "CLOSED",
            30,
            "the origin to hear CLOSED",
        )

        assert page.request.get(f"{base}/static/favicon.svg").status == 200
        assert not [e for e in errors if "404" in e], errors

        # The operator: flows, the trace's swim lanes with the hop, no case content anywhere.
        page.click("header .logout button")
        page.wait_for_url(re.compile(r".*/login$"))
        page.fill("#token", OPERATOR_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/operator$"))
        assert page.locator("svg.heatmap").count() == 1
        assert "hl-a" in page.inner_text("#flows")
        page.wait_for_selector("#flows[data-refreshed]")  # refreshed in place, no reload
        page.screenshot(path=str(shots / "flows.png"), full_page=True)
        served = [page.content()]

        def trace_has_hop() -> bool:
            page.goto(f"{base}/operator/trace?id={rid[:8]}")
            text = page.inner_text("#hops")
            return "STATUS_SENT" in text and "ACCESSED" in text and "STILL_ONLINE" in text

        wait_for(trace_has_hop, 30, "the status hop in the trace", step=1)
        lanes = page.inner_html("#lanes")
        assert "police-nl" in lanes
        assert "hl-a" in lanes
        assert "STATUS SENT" in lanes
        page.screenshot(path=str(shots / "trace.png"), full_page=True)
        served.append(page.content())

        # A dead letter is replayed after a confirmation naming who replays.
        def dead_letter_listed() -> bool:
            page.goto(f"{base}/operator/deadletters")
            return bool(page.locator("#deadletters a.button").count() > 0)

        wait_for(dead_letter_listed, 30, "the broken record among the dead letters", step=1)
        page.click("#deadletters a.button")
        page.fill("#by", "Operator Test")
        page.check("input[name=confirm]")
        page.click("#replay")
        assert "replayed" in page.inner_text("#notice")
        assert "Operator Test" in page.inner_text("#replays")
        for path in ("/operator/deadletters", "/operator/ledger", "/operator/flows/rows"):
            page.goto(base + path)
            served.append(page.content())
        assert "ledger intact" in served[-2]
        for html in served:
            leaked = [s for s in secrets if s in html]
            assert not leaked, "the operator view shows case content"
        # The operator cannot open the liaison's pages.
        page.goto(f"{base}/referral/{rid}")
        assert page.url.endswith("/login")

    with LedgerStore.for_settings(settings) as store:
        accessed = [r for r in store.records(rid) if r.event == "ACCESSED"]
    assert accessed
    assert {r.actor for r in accessed} == {"police-nl"}
    reveals = [r.reason for r in accessed if (r.reason or "").startswith("console-reveal")]
    assert reveals == ["console-reveal: takedown check"]
    assert all((r.reason or "").startswith(("console-page", "console-reveal")) for r in accessed)


@pytest.fixture(autouse=True)
def _no_proxy() -> Iterator[None]:
    """Chromium talks to the loopback console directly."""
    old = os.environ.pop("HTTP_PROXY", None), os.environ.pop("http_proxy", None)
    yield
    for name, value in zip(("HTTP_PROXY", "http_proxy"), old, strict=True):
        if value is not None:
            os.environ[name] = value


def _narrow_shot(page: Any, path: Path) -> None:
    """A screenshot at 800 px wide (nothing wider than the window), then back to 1280."""
    page.set_viewport_size({"width": 800, "height": 900})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    assert overflow <= 0, f"{path.name}: the page is {overflow}px wider than 800 px"
