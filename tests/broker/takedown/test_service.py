"""The desk as a service: statuses in, notices over real SMTP, answers over real HTTP, restart."""

from __future__ import annotations

import http.client
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker.contracts import StatusDelivery, jsonable
from broker.origin.outbox import Outbox, ReferralFacts
from broker.outcomes import ItemRef
from broker.takedown.desk import Cadence, TakedownDesk
from broker.takedown.desk_store import DESK_FILE, DeskStore
from broker.takedown.intake import TakedownIntake
from broker.takedown.notices import SmtpSender, parse_notice
from broker.takedown.providers import parse_directory
from broker.takedown.service import TakedownService
from broker.takedown.trail import TrailWriter, fact_of
from connectors.runtime import KINDS
from connectors.takedown_desk import TakedownConfig
from tests.support.factories import make_referral
from tests.support.takedown import DAY, MINUTE, Inbox, SimClock, smtp_port, start_smtp

SECRET = b"test-secret-not-for-production"
DIRECTORY = parse_directory(
    '[providers.host-a]\nname = "Example Hosting A"\ncountry = "NL"\n'
    'abuse_email = "abuse@host-a.example.org"\n'
)
ROLES = {"police-nl": "police"}


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    controller, inbox = start_smtp()
    try:
        yield smtp_port(controller), inbox
    finally:
        controller.stop()


def _service(tmp: Path, port: int, clock: SimClock, events: list[Any], box: Outbox) -> Any:
    sender = SmtpSender("127.0.0.1", port, secret=SECRET, answer_base="https://desk.hl-nl.invalid")
    desk = TakedownDesk(
        TrailWriter(events.append, "hl-nl", clock),
        DIRECTORY,
        sender,
        secret=SECRET,
        sender_address="desk@hl-nl.invalid",
        notifier="hl-nl",
        cadence=Cadence(clearance_required=True),
        store=DeskStore(tmp / DESK_FILE),
    )
    return TakedownService(TakedownIntake(desk, box.get, ROLES.get), SECRET, tick_every_s=600)


def _status(rid: str, status: str, at: int) -> StatusDelivery:
    doc = {
        "referral_id": rid,
        "emitted_by": "police-nl",
        "status": status,
        "emitted_at": datetime.fromtimestamp(at / 1000, UTC),
    }
    return StatusDelivery(rid, status, "police-nl", jsonable(doc))


def test_statuses_to_notice_to_answer_link_across_a_restart(
    tmp_path: Path, smtp: tuple[int, Inbox]
) -> None:
    """Cleared by police: one mail within a minute; its link POSTed: REMOVED; restart: quiet."""
    port, inbox = smtp
    clock = SimClock()
    events: list[dict[str, Any]] = []
    url = f"https://files.example.org/{secrets.token_hex(8)}"
    item = {"url": url, "media_type": "IMAGE", "hosting": {"provider": "Example Hosting A"}}
    referral = make_referral(items=[item])
    box = Outbox(tmp_path / "outbox.sqlite3")
    facts = ReferralFacts(
        items=(ItemRef(str(referral.body.items[0].item_id)),),  # type: ignore[union-attr]
        document=jsonable(referral.to_avro()),
    )
    rid = referral.referral_id
    box.add(rid, referral.envelope.case_id, "t", b"v", [], ["police-nl"], about=facts)
    service = _service(tmp_path, port, clock, events, box)
    service.open()
    try:
        service.deliver_status(_status(rid, "RECEIVED", clock.now))
        service.deliver_status(_status(rid, "ACCEPTED", clock.now))
        clock.now += MINUTE
        assert len(service.tick()) == 1
        [raw] = inbox.take()
        notice = parse_notice(raw)
        [(item_id, location)] = notice.items.items()
        assert location == url
        token = notice.tokens[(item_id, "removed")]
        conn = http.client.HTTPConnection("127.0.0.1", service.answers.port, timeout=10)
        conn.request("POST", f"/takedown/answer/{token}")
        response = conn.getresponse()
        assert (response.status, response.read()) == (
            200,
            f"recorded: removed for item {item_id}\n".encode(),
        )
        conn.close()
    finally:
        service.close()
    again = _service(tmp_path, port, clock, events, box)
    again.open()
    try:
        clock.now += 2 * DAY
        assert again.tick() == []
        assert inbox.take() == []
        assert again.desk.get(item_id).answered
    finally:
        again.close()
    steps = [fact_of(e["event_id"], "", "", None, e["reason"], e["at"]) for e in events]
    assert [f.step.value for f in steps if f] == [
        "OPENED",
        "POLICE_INFORMED",
        "LEA_CLEARED",
        "NOTICE_SENT",
        "PROVIDER_ANSWERED",
        "REMOVED",
    ]


def test_the_takedown_kind_is_a_status_sink_with_checked_settings() -> None:
    """``connectors.takedown`` in the network file: a status sink; bad settings refused."""
    spec = KINDS["takedown"]
    assert spec.role == "status"
    config = spec.config.model_validate(
        {"sender": "desk@hl-nl.invalid", "answer_base": "https://desk.hl-nl.invalid"}
    )
    assert isinstance(config, TakedownConfig)
    assert config.tick_seconds == 60.0
    with pytest.raises(ValueError, match="answer_base"):
        spec.config.model_validate({"sender": "desk@hl-nl.invalid", "answer_base": "ftp://x"})


def test_start_up_check_names_a_missing_secret_and_an_unreadable_directory(
    tmp_path: Path,
) -> None:
    """Before anything starts: the link secret's variable and the provider directory."""
    from types import SimpleNamespace

    from broker.config import Settings
    from broker.errors import ConfigError
    from connectors.takedown_desk import check_takedown

    config = TakedownConfig(sender="desk@hl-nl.invalid", answer_base="https://desk.hl-nl.invalid")
    rt = SimpleNamespace(settings=Settings(state_dir=tmp_path), env={})
    with pytest.raises(ConfigError, match=r"takedown\.secret_env: environment variable"):
        check_takedown(rt, "takedown", config)
    rt.env = {"TAKEDOWN_LINK_SECRET": "x" * 32}
    with pytest.raises(ConfigError, match="cannot read the provider directory"):
        check_takedown(rt, "takedown", config)
    (tmp_path / "providers.toml").write_text(
        '[providers.host-a]\nname = "A"\ncountry = "NL"\nabuse_email = "abuse@a.example.org"\n'
    )
    check_takedown(rt, "takedown", config)
