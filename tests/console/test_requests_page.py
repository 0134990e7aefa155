"""The console's Requests view: both sides, due soon first, overdue shown, no content."""

from __future__ import annotations

import re
import uuid
import warnings
from pathlib import Path

from broker.config import Settings
from broker.network import Network
from broker.requests.codes import HOUR_MS
from broker.requests.store import RequestStore
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from console.app import Console, build_app
from console.auth import OPERATOR, Sessions, Tokens, token_env
from console.liaison import LiaisonDesk
from console.operator import OperatorDesk

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ORG, TOKEN, T0 = "police-se", "synthetic-liaison-token-se", 1_767_600_000_000


def _login(client: TestClient, token: str) -> None:
    def csrf(html: str) -> str:
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
        assert found, "no CSRF token in the page"
        return found.group(1)

    r = client.post("/login", data={"csrf": csrf(client.get("/login").text), "token": token})
    assert r.status_code == 303, r.text


def _envelope(kind: str, rid: str, frm: str, to: str) -> dict[str, object]:
    return {
        "message_id": rid if kind == "REQUEST" else str(uuid.uuid4()),
        "request_id": rid,
        "case_id": "case-<b>x</b>",
        "referral_id": None,
        "kind": kind,
        "from_org": frm,
        "to_org": to,
    }


def test_requests_view_lists_both_sides_due_soon_first(tmp_path: Path, network: Network) -> None:
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    store = RequestStore(settings.org_dir(ORG) / "requests.sqlite3")
    slow, fast, mine = (str(uuid.uuid4()) for _ in range(3))
    body = {"purpose": "zq-secret-purpose", "items": ["zq-secret-item"]}
    store.record(
        _envelope("REQUEST", slow, "police-no", ORG),
        {**body, "urgent": False, "access": "DIRECT"},
        me=ORG,
        at=T0,
    )
    store.record(
        _envelope("REQUEST", fast, "police-fi", ORG),
        {**body, "urgent": True, "access": "DIRECT"},
        me=ORG,
        at=T0,
    )
    store.record(
        _envelope("REQUEST", mine, ORG, "police-dk"),
        {**body, "urgent": True, "access": "INDIRECT"},
        me=ORG,
        at=T0,
    )
    store.record(
        _envelope("DELAY", slow, ORG, "police-no"),
        {"reason": "JUDICIAL_AUTHORISATION", "expected_ms": T0 + 200 * HOUR_MS},
        me=ORG,
        at=T0 + HOUR_MS,
    )
    store.flag_overdue(T0 + 9 * HOUR_MS)
    store.close()
    codec = Codec(EmbeddedRegistry())
    console = Console(
        Tokens.from_env({token_env(ORG): TOKEN, token_env(OPERATOR): "o" * 24}, ORG),
        LiaisonDesk(settings, network, ORG, codec),
        OperatorDesk(settings, network, codec),
        Sessions(),
    )
    client = TestClient(build_app(console), base_url="http://127.0.0.1", follow_redirects=False)
    _login(client, TOKEN)
    html = client.get("/requests").text
    assert html.index(f'data-request="{fast}"') < html.index(f'data-request="{slow}"')
    assert html.index(f'data-request="{slow}"') < html.index(f'data-request="{mine}"')
    assert "OVERDUE since 2026-01-05 17:00" in html
    assert "JUDICIAL_AUTHORISATION until" in html
    assert "case-&lt;b&gt;x&lt;/b&gt;" in html
    assert "zq-secret" not in html
