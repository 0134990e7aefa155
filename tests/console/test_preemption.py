"""A member publishing under another origin's referral id does not reach the console's pages.

Issue 23: hl-b (the decoy, a hotline of the network) publishes under hl-a's
referral id, before hl-a does or after delivery as its "version 2". police-nl's
console, served over its own HTTP client on the embedded broker with the real
router and connectors, shows hl-a's case on hl-a's page, and an ACCEPTED (with
its note) sent from that page goes to hl-a; nothing of it reaches hl-b.
"""

from __future__ import annotations

import re
import secrets
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.ledger.store import LedgerStore
from broker.network import Network
from broker.wire.codec import Codec
from connectors.runtime import ConnectorRuntime
from console.app import build_app
from console.auth import OPERATOR, token_env
from console.server import make_console
from tests.console.test_browser import LIAISON_TOKEN, OPERATOR_TOKEN, _status_lines, keyed
from tests.support.connectors import ENV, referral_json, wait_for
from tests.support.kafka import start_router

with warnings.catch_warnings():  # starlette's notice about httpx, not about this code
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.slow

__all__ = ["keyed"]  # the sealed and signed network of the browser test


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def _client(settings: Settings, network: Network, codec: Codec) -> TestClient:
    env = {token_env("police-nl"): LIAISON_TOKEN, token_env(OPERATOR): OPERATOR_TOKEN}
    app = build_app(make_console(settings, network, "police-nl", env=env, codec=codec))
    client = TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)
    r = client.post(
        "/login", data={"csrf": _csrf(client.get("/login").text), "token": LIAISON_TOKEN}
    )
    assert r.status_code == 303, r.text
    return client


@pytest.fixture
def runtimes(keyed: tuple[Settings, Network]) -> Iterator[dict[str, ConnectorRuntime]]:
    """The router and the connectors of hl-a (the real origin), hl-b (the decoy), police-nl."""
    settings, network = keyed
    codec = Codec.from_settings(settings)
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        out = {}
        for org in ("hl-a", "hl-b", "police-nl"):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(rt.stop)
            out[org] = rt.start()
        yield out


def _publish(rt: ConnectorRuntime, data: dict[str, Any], *, amend: bool = False) -> None:
    assert rt.publisher.publish([("row", data)], amend=amend).published[0].sent


@pytest.mark.parametrize("order", ["decoy-first", "decoy-version-2-after-delivery"])
def test_the_console_keys_every_page_and_action_by_origin_and_referral_id(
    keyed: tuple[Settings, Network], runtimes: dict[str, ConnectorRuntime], order: str
) -> None:
    settings, network = keyed
    rid = str(uuid.uuid4())
    real = referral_json("hl-a", "NL", referral_id=rid, case_id=f"real-{secrets.token_hex(4)}")
    decoy = referral_json("hl-b", "NL", referral_id=rid, case_id=f"decoy-{secrets.token_hex(4)}")
    police = runtimes["police-nl"].inbox

    def delivered(*origins: str) -> None:
        wait_for(lambda: police.origins_of(rid) == list(origins), 60, f"{origins} delivered")

    if order == "decoy-first":
        _publish(runtimes["hl-b"], decoy)
        delivered("hl-b")
        _publish(runtimes["hl-a"], real)
        delivered("hl-b", "hl-a")
    else:
        _publish(runtimes["hl-a"], real)
        delivered("hl-a")
        _publish(runtimes["hl-b"], decoy)
        amended = {**decoy, "body": {**decoy["body"], "summary": "decoy, amended"}}
        _publish(runtimes["hl-b"], amended, amend=True)
        delivered("hl-a", "hl-b")
        wait_for(lambda: police.version("hl-b", rid, "inbox_folder") == 2, 60, "decoy v2")
    real_case, decoy_case = real["envelope"]["case_id"], decoy["envelope"]["case_id"]

    client = _client(settings, network, runtimes["police-nl"].codec)
    # The inbox lists both, each linking to its origin's page.
    rows = client.get("/inbox/rows").text
    assert f'href="/referral/hl-a/{rid}"' in rows
    assert f'href="/referral/hl-b/{rid}"' in rows
    # The id alone names no one referral: the page lists the origins that used it.
    chooser = client.get(f"/referral/{rid}")
    assert chooser.status_code == 300
    assert f'href="/referral/hl-a/{rid}"' in chooser.text
    assert f'href="/referral/hl-b/{rid}"' in chooser.text
    # hl-a's page shows hl-a's case, not the decoy.
    html = client.get(f"/referral/hl-a/{rid}").text
    assert real_case in html
    assert decoy_case not in html
    assert f'action="/referral/hl-a/{rid}/status"' in html
    assert "/referral/hl-b/" not in html
    # The old action path (no origin) is gone: it could only guess the origin.
    assert client.post(f"/referral/{rid}/status", data={"csrf": _csrf(html)}).status_code == 405

    # ACCEPTED, with a note, from hl-a's page.
    note = f"note-canary-{secrets.token_hex(6)}"
    sent = client.post(
        f"/referral/hl-a/{rid}/status",
        data={"csrf": _csrf(html), "status": "ACCEPTED", "note": note},
    )
    assert sent.status_code == 303, sent.text
    assert sent.headers["location"].startswith(f"/referral/hl-a/{rid}?")
    after = client.get(sent.headers["location"]).text
    assert 'id="current-status">ACCEPTED' in after
    # The decoy's page is unchanged: its lifecycle is its own.
    assert 'id="current-status">RECEIVED' in client.get(f"/referral/hl-b/{rid}").text
    assert police.sent_statuses("hl-b", rid) == []
    assert police.sent_statuses("hl-a", rid) == ["ACCEPTED"]

    def accepted(origin: str) -> bool:
        return any(
            line["status"] == "ACCEPTED" and line.get("note") == note
            for line in _status_lines(settings, origin, rid)
        )

    wait_for(lambda: accepted("hl-a"), 60, "hl-a to hear of the ACCEPTED")
    log = runtimes["hl-a"].status_log  # settled when the feed's batch commits
    wait_for(lambda: log.status_state(rid, "police-nl") == "ACCEPTED", 30, "hl-a's status log")
    # The one ACCEPTED the console sent went to hl-a: the ledger's STATUS_SENT says so, and
    # hl-b's status folder has no ACCEPTED (a status names one origin; it was hl-a).
    assert not accepted("hl-b")
    assert runtimes["hl-b"].status_log.status_state(rid, "police-nl") != "ACCEPTED"
    with LedgerStore.for_settings(settings) as store:
        store.sync(settings, runtimes["police-nl"].codec)
        status_sent = [
            r for r in store.records(rid) if r.event == "STATUS_SENT" and r.reason == "ACCEPTED"
        ]
    assert [(r.actor, r.to_party) for r in status_sent] == [("police-nl", "hl-a")]


def test_an_unknown_origin_in_the_path_is_a_one_line_refusal(
    keyed: tuple[Settings, Network], tmp_path: Path
) -> None:
    settings, network = keyed
    client = _client(settings, network, Codec.from_settings(settings))
    r = client.get(f"/referral/hl-zz/{uuid.uuid4()}")
    assert r.status_code in (400, 404)
    assert "hl-zz" in r.text
    assert "Traceback" not in r.text
