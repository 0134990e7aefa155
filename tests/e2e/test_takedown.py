"""The takedown desk inside ``referral connector run``, on the embedded broker (issue 25).

``hl-a`` (its ``takedown`` connector) refers an item hosted in DE to ``police-de``;
police-de's signed RECEIVED puts it on hl-a's desk (police informed), the ticker
mails the hosting provider's abuse contact (a real SMTP server, the mail parsed),
police-de's verified REMOVED outcome ends its cadence, and ``referral takedown
status`` lists it answered; the trail is in the ledger, without its URL.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.ids import short_id
from broker.network import parse_network
from broker.security.keys import ROUTER
from broker.takedown.notices import parse_notice
from connectors.runtime import ConnectorRuntime
from tests.e2e.test_outcomes import cli, env_for, item_ids
from tests.support.connectors import (
    ENV,
    NETWORK_TOML,
    codec_for,
    referral_json,
    wait_for,
)
from tests.support.kafka import provision_network, start_router
from tests.support.security import give_keys
from tests.support.takedown import Inbox, smtp_port, start_smtp

pytestmark = pytest.mark.slow

PROVIDERS = """
[providers.example-hosting]
name = "Example Hosting"
country = "DE"
abuse_email = "abuse@hosting.example.org"
"""


@pytest.fixture
def smtp() -> Any:
    controller, inbox = start_smtp()
    try:
        yield smtp_port(controller), inbox
    finally:
        controller.stop()


def test_a_police_receipt_puts_the_item_on_the_desk_and_its_removal_ends_it(
    settings: Settings, tmp_path: Path, smtp: tuple[int, Inbox]
) -> None:
    port, inbox = smtp
    trust = tmp_path / "trust.toml"
    give_keys(settings, trust, "hl-a", "police-de", "police-fr", ROUTER)
    desk = (
        'path = "orgs/hl-a/status"\n[organisations.connectors.takedown]\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\nsender = "takedown@hl-a.invalid"\n'
        'answer_base = "https://takedown.hl-a.invalid"\ntick_seconds = 0.2\n'
    )
    text = (
        NETWORK_TOML.replace("{webhook_url}", "http://127.0.0.1:9/hook")
        .replace("{republish_after}", "1")
        .replace(
            'name = "connector test network"',
            f'name = "takedown test network"\nallow_plain = false\ntrust_file = "{trust}"',
        )
        .replace('path = "orgs/hl-a/status"\n', desk, 1)
    )
    (tmp_path / "network.toml").write_text(text)
    network = parse_network(text, "network.toml")
    provision_network(settings, network)
    (Path(settings.state_dir) / "providers.toml").write_text(PROVIDERS)
    env = env_for(settings, tmp_path)
    rt_env = {**ENV, "TAKEDOWN_LINK_SECRET": "test-link-secret-not-for-production"}
    codec = codec_for(settings)
    raw = referral_json("hl-a", "DE")
    rid = str(raw["envelope"]["referral_id"])
    [item_id] = item_ids(raw)
    url = raw["body"]["items"][0]["url"]
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        rts = {}
        for org in ("hl-a", "police-de"):
            rt = ConnectorRuntime(settings, network, org, codec, env=rt_env, republish_after=1)
            stack.callback(rt.stop)
            rts[org] = rt.start()
        assert rts["hl-a"].publisher.publish([("row 1", raw)]).ok
        mails: list[bytes] = []

        def mailed() -> bool:
            mails.extend(inbox.take())
            return bool(mails)

        wait_for(mailed, 60, "the notice mailed")
        notice = parse_notice(mails[0])
        assert notice.provider_id == "example-hosting"
        assert notice.items == {item_id: url}
        cli(env, "status", "police-de", rid[:8], "ACCEPTED")
        cli(
            env,
            "status",
            "police-de",
            rid[:8],
            "NTD_SENT",
            "--item",
            f"{short_id(item_id)}=REMOVED",
        )

        def answered() -> bool:
            rows = json.loads(cli(env, "takedown", "status", "hl-a", "--json"))
            return [r["step"] for r in rows] == ["answered"]

        wait_for(answered, 60, "the verified removal on the desk")
        rows = json.loads(cli(env, "takedown", "status", "hl-a", "--json"))
        trail: list[str] = []

        def traced() -> bool:
            trail[:] = [cli(env, "trace", rid, "--json")]
            return (
                f"NOTICE_SENT item={item_id}" in trail[0] and f"REMOVED item={item_id}" in trail[0]
            )

        wait_for(traced, 60, "the trail in the ledger")
    assert url not in trail[0]
    assert rows[0]["item_id"] == item_id
    assert rows[0]["provider"] == "example-hosting"
    assert url not in json.dumps(rows)
