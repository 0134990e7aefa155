"""Console logins under attack: weak tokens refused at start-up, failures slowed then locked.

A real console server (uvicorn on loopback) and real sockets: the attacker
connects from 127.0.0.1, the liaison from 127.0.0.2 (loopback answers the whole
127/8). The lockout clock is simulated; the page is checked in headless Chromium.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.network import Network
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from cli.main import app
from console.auth import OPERATOR, token_env
from console.server import ConsoleServer, make_console
from console.throttle import LOCK_SECONDS, LoginThrottle
from tests.console.test_browser import CHROMIUM, CHROMIUM_ARGS, _browser_or_fail

ORG = "police-nl"
LIAISON_TOKEN = "synthetic-liaison-token-" + "n" * 20
OPERATOR_TOKEN = "synthetic-operator-token-" + "o" * 20
WRONG = "synthetic-wrong-guess-"


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served(tmp_path: Path, network: Network) -> Iterator[tuple[str, Clock]]:
    """A console for police-nl on a free loopback port, its lockout on a simulated clock."""
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    env = {token_env(ORG): LIAISON_TOKEN, token_env(OPERATOR): OPERATOR_TOKEN}
    web = make_console(settings, network, ORG, env=env, codec=Codec(EmbeddedRegistry()))
    clock = Clock()
    web.throttle = LoginThrottle(clock)
    server = ConsoleServer(web, port=0).start()
    try:
        yield server.url.rstrip("/"), clock
    finally:
        server.stop()


def _client(base: str, source: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=base, transport=transport, follow_redirects=False, timeout=10)


def _login(client: httpx.Client, token: str) -> httpx.Response:
    page = client.get("/login")
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found, "no CSRF token on the login page"
    return client.post("/login", data={"csrf": found.group(1), "token": token})


def test_weak_console_tokens_are_refused_at_start_up(tmp_path: Path) -> None:
    env = {token_env(ORG): "1234", token_env(OPERATOR): OPERATOR_TOKEN}
    result = CliRunner().invoke(
        app, ["--state-dir", str(tmp_path), "console", "--org", ORG, "--port", "0"], env=env
    )
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "REFERRAL_CONSOLE_TOKEN_POLICE_NL" in lines[0]
    assert "at least 32 characters" in lines[0]
    assert "secrets.token_urlsafe(32)" in lines[0]
    assert "1234" not in lines[0]
    assert "Traceback" not in result.output


def test_300_wrong_logins_lock_the_address_out_and_are_logged(
    served: tuple[str, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    base, clock = served
    caplog.set_level(logging.WARNING, logger="referral.console")
    answers = []
    with _client(base, "127.0.0.1") as attacker:
        for n in range(300):
            answers.append(_login(attacker, f"{WRONG}{n}").status_code)
        # Locked: the right token from this address is not even checked.
        assert _login(attacker, LIAISON_TOKEN).status_code == 429
        assert answers[:5] == [401] * 5, "the first few failures are only refused"
        assert answers[-1] == 429
        assert answers.count(401) < 20, "after the slowdown no guess is checked"
        locked = _login(attacker, f"{WRONG}x")
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) > LOCK_SECONDS - 60
        assert "Too many failed logins" in locked.text

        # Another address logs in at once.
        with _client(base, "127.0.0.2") as liaison:
            ok = _login(liaison, LIAISON_TOKEN)
            assert ok.status_code == 303
            assert ok.headers["location"] == "/inbox"
            assert liaison.get("/inbox").status_code == 200

        failed = [r for r in caplog.records if "console login" in r.getMessage()]
        assert len(failed) >= 300
        for record in failed:
            line = record.getMessage()
            assert "127.0.0.1" in line
            assert WRONG not in line
            assert LIAISON_TOKEN not in line
        assert any("locked out for 15 min" in r.getMessage() for r in failed)
        assert not any("127.0.0.2" in r.getMessage() for r in failed)

        # The lockout ends after 15 minutes (simulated) and the address starts afresh.
        clock.now += LOCK_SECONDS + 1
        assert _login(attacker, f"{WRONG}late").status_code == 401


def test_the_lockout_in_a_real_browser(served: tuple[str, Clock]) -> None:
    sync_playwright = _browser_or_fail()
    base, clock = served
    with ExitStack() as stack:
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        page = browser.new_page()
        page.set_default_timeout(20_000)
        for n in range(25):
            page.goto(f"{base}/login")
            page.fill("#token", f"{WRONG}{n}")
            page.click("button[type=submit]")
        assert "Too many failed logins from this address" in page.inner_text("#error")
        page.goto(f"{base}/login")
        page.fill("#token", LIAISON_TOKEN)
        page.click("button[type=submit]")
        assert "Too many failed logins" in page.inner_text("#error")
        assert not page.url.endswith("/inbox")

        clock.now += LOCK_SECONDS + 1
        page.goto(f"{base}/login")
        page.fill("#token", LIAISON_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/inbox$"))
