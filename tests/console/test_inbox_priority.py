"""The console's inbox: HIGH priority after URGENT, before NORMAL, and marked; dates kept whole.

No broker: the inbox is a real inbox file, the desk the real one (its inbox page
reads only that file).
"""

from __future__ import annotations

import re
import warnings
from datetime import UTC, datetime
from pathlib import Path

from broker.config import Settings
from broker.network import Network
from broker.receiver.inbox import Inbox
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from console.app import Console, build_app
from console.auth import OPERATOR, Sessions, Tokens, token_env
from console.liaison import LiaisonDesk
from console.operator import OperatorDesk
from tests.console.test_app import _delivery, _login

with warnings.catch_warnings():  # starlette's notice about httpx, not about this code
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ORG = "police-nl"
TOKEN = "synthetic-liaison-token-priority-0123456789"
IDS = {
    "NORMAL": "0b7e4f6c-0000-4000-8000-0000000000c1",
    "HIGH": "0b7e4f6c-0000-4000-8000-0000000000c2",
    "URGENT": "0b7e4f6c-0000-4000-8000-0000000000c3",
}


def test_high_is_listed_after_urgent_before_normal_with_a_badge(
    tmp_path: Path, network: Network
) -> None:
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    now = datetime.now(UTC).timestamp()
    inbox = Inbox.for_org(settings, ORG)
    for age, (priority, rid) in enumerate(IDS.items()):  # NORMAL newest, URGENT oldest
        inbox.record(_delivery(rid, f"case-{priority}", priority), "inbox_folder", now - age)
    inbox.close()
    codec = Codec(EmbeddedRegistry())
    app = build_app(
        Console(
            Tokens.from_env({token_env(ORG): TOKEN, token_env(OPERATOR): "x" * 43}, ORG),
            LiaisonDesk(settings, network, ORG, codec),
            OperatorDesk(settings, network, codec),
            Sessions(),
        )
    )
    client = TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)
    _login(client, TOKEN)
    rows = client.get("/inbox/rows").text
    order = re.findall(r'data-referral="([^"]+)"', rows)
    assert order == [IDS["URGENT"], IDS["HIGH"], IDS["NORMAL"]]
    high_row = rows[rows.index(IDS["HIGH"]) : rows.index(IDS["NORMAL"])]
    assert '<span class="badge high">HIGH</span>' in high_row
    assert f'<tr class="high" data-referral="{IDS["HIGH"]}"' in rows
    # A date and its time are each one unbreakable piece (two lines at most at 800 px).
    assert re.search(r'<span class="when"><span>\d{4}-\d\d-\d\d</span> <span>', rows)
    page = client.get("/inbox").text
    assert 'rel="icon" href="/static/favicon.svg"' in page
    assert client.get("/static/favicon.svg").status_code == 200
