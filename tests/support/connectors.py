"""Shared helpers of the connector tests: a test network, synthetic referrals, a webhook server.

Everything is synthetic (``example.org`` / ``.invalid`` hosts, random hashes).
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.network import Network, parse_network
from broker.wire.codec import Codec
from tests.support.factories import make_referral

WEBHOOK_SECRET = "synthetic-webhook-secret"
TOKEN = "synthetic-bearer-token"

#: A small network: two hotlines, three police sinks of three kinds, a fallback.
NETWORK_TOML = """
[network]
name = "connector test network"

[topics]
partitions = 2

[[organisations]]
id = "hl-a"
name = "Test Hotline A"
role = "hotline"
country = "NL"
[organisations.connectors.drop_folder]
path = "orgs/hl-a/drop"
poll_interval = 0.2
settle_seconds = 0
[organisations.connectors.status_folder]
path = "orgs/hl-a/status"
[organisations.connectors.outbox]
republish_after = {republish_after}
check_interval = 0.5

[[organisations]]
id = "hl-b"
name = "Test Hotline B"
role = "hotline"
country = "DE"
[organisations.connectors.http_intake]
host = "127.0.0.1"
port = 0
token_env = "TEST_TOKEN_HL_B"
[organisations.connectors.status_folder]
path = "orgs/hl-b/status"
[organisations.connectors.outbox]
republish_after = {republish_after}
check_interval = 0.5

[[organisations]]
id = "police-nl"
name = "Test Police NL"
role = "police"
country = "NL"
[organisations.connectors.inbox_folder]
path = "orgs/police-nl/inbox"

[[organisations]]
id = "police-de"
name = "Test Police DE"
role = "police"
country = "DE"
[organisations.connectors.sqlite]
path = "orgs/police-de/cases.sqlite3"

[[organisations]]
id = "police-fr"
name = "Test Police FR"
role = "police"
country = "FR"
[organisations.connectors.webhook]
url = "{webhook_url}"
secret_env = "TEST_WEBHOOK_SECRET"
timeout = 2.0
max_attempts = 3
backoff_initial = 0.05
backoff_max = 0.2

[[organisations]]
id = "secretariat"
name = "Test Secretariat"
role = "fallback"
country = "NL"
[organisations.connectors.inbox_folder]
path = "orgs/secretariat/inbox"

[routing]
fallback = "secretariat"
[routing.jurisdictions]
NL = ["police-nl"]
DE = ["police-de"]
FR = ["police-fr"]
"""

ENV = {"TEST_TOKEN_HL_B": TOKEN, "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}


def network_text(webhook_url: str = "http://127.0.0.1:9/hook", republish_after: float = 300) -> str:
    """The test network's TOML with the webhook pointing at ``webhook_url``."""
    return NETWORK_TOML.replace("{webhook_url}", webhook_url).replace(
        "{republish_after}", str(republish_after)
    )


def make_network(
    webhook_url: str = "http://127.0.0.1:9/hook", republish_after: float = 300
) -> Network:
    """The test network with the webhook pointing at ``webhook_url``."""
    return parse_network(network_text(webhook_url, republish_after), "test-network.toml")


def cli_env_for(settings: Settings, directory: Path) -> dict[str, str]:
    """Environment for ``referral`` under CliRunner: the test network (written to
    ``directory/network.toml``), the session broker, this test's namespace and state."""
    network_file = directory / "network.toml"
    network_file.write_text(network_text())
    return {
        "REFERRAL_BOOTSTRAP_SERVERS": str(settings.bootstrap_servers),
        "REFERRAL_TOPIC_PREFIX": settings.topic_prefix,
        "REFERRAL_NETWORK_FILE": str(network_file),
        "REFERRAL_STATE_DIR": str(settings.state_dir),
    }


def codec_for(settings: Settings) -> Codec:
    """The codec on the embedded registry."""
    return Codec.from_settings(settings)


def referral_json(org: str, country: str = "NL", **overrides: Any) -> dict[str, Any]:
    """A valid synthetic referral of ``org`` concerning (and hosted in) ``country``, as JSON."""
    n = secrets.randbelow(10**6)
    host = f"host-{n}.example.org"
    fields: dict[str, Any] = {
        "origin_org": org,
        "jurisdictions": [{"country": country, "basis": "HOSTING", "derived": False}],
        "items": [
            {
                "url": f"https://{host}/item/{n}",
                "media_type": "IMAGE",
                "hashes": [{"algorithm": "SHA256", "value": secrets.token_hex(32)}],
                "hosting": {"country": country, "provider": "Example Hosting"},
            }
        ],
    }
    fields.update(overrides)
    data: dict[str, Any] = make_referral(**fields).model_dump(mode="json")
    return data


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    assert predicate(), f"timed out after {timeout:.0f}s waiting for {what}"


@dataclass
class HookServer:
    """A loopback HTTP server recording webhook requests; ``script`` sets the answers."""

    server: http.server.ThreadingHTTPServer
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Status codes to answer, in order; when exhausted, 200.
    script: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Referral ids answered 400 every time (a case system that refuses them for good).
    refuse: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def referral_ids(self) -> list[str]:
        with self.lock:
            return [r["id"] for r in self.requests if r["status"] == 200]


@contextmanager
def hook_server(secret: str = WEBHOOK_SECRET) -> Iterator[HookServer]:
    """Run a :class:`HookServer` on a free loopback port."""
    holder: dict[str, HookServer] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hook = holder["hook"]
            want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            with hook.lock:
                rid = self.headers.get("X-Referral-Id")
                code = 400 if rid in hook.refuse else hook.script.pop(0) if hook.script else 200
                hook.requests.append(
                    {
                        "id": self.headers.get("X-Referral-Id"),
                        "signed": hmac.compare_digest(
                            want, self.headers.get("X-Referral-Signature", "")
                        ),
                        "status": code,
                        "body": json.loads(body),
                    }
                )
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = HookServer(server)
    holder["hook"] = hook
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def inbox_files(settings: Settings, org: str) -> list[Path]:
    """The referral files in an inbox folder of the test network."""
    folder = Path(settings.state_dir) / "orgs" / org / "inbox"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []
