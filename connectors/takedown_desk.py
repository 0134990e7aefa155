"""The ``takedown`` connector kind: the hotline's takedown desk inside ``referral connector run``.

In the network file::

    [organisations.connectors.takedown]
    smtp_host = "127.0.0.1"
    smtp_port = 25
    sender = "takedown@hotline.example.org"
    answer_base = "https://takedown.hotline.example.org"   # the public face of the endpoint
    answer_port = 8425                                      # loopback port of the endpoint
    secret_env = "TAKEDOWN_LINK_SECRET"                     # signs the one-click links
    providers = "providers.toml"                            # under the state dir unless absolute
    clearance_required = true                               # wait for police clearance

The desk's state is ``<state dir>/orgs/<org>/takedown.sqlite3`` (private); its
trail goes to the ledger signed by the organisation.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from broker.contracts import StatusDelivery, StatusSink
from broker.errors import DeliveryError
from broker.private import private_dir
from broker.takedown.desk import DAY_MS, Cadence, TakedownDesk
from broker.takedown.desk_store import DESK_FILE, DeskStore
from broker.takedown.intake import TakedownIntake
from broker.takedown.notices import SmtpSender
from broker.takedown.providers import DEFAULT_FILE, load_directory
from broker.takedown.service import TakedownService
from broker.takedown.trail import TrailWriter
from connectors.base import ConnectorConfig, resolve_path, secret_from_env

__all__ = ["TakedownConfig", "TakedownSink", "build_takedown", "check_takedown", "make_service"]


class TakedownConfig(ConnectorConfig):
    """Settings of the takedown desk."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    sender: str = Field(min_length=3)
    answer_base: str = Field(pattern=r"^https?://")
    answer_port: int = Field(0, ge=0, le=65535)
    secret_env: str = "TAKEDOWN_LINK_SECRET"
    providers: str = DEFAULT_FILE
    clearance_required: bool = False
    repeat_hours: float = Field(24.0, gt=0)
    escalate_at_step: int = Field(3, ge=1)
    tick_seconds: float = Field(60.0, gt=0, le=60)


def check_takedown(rt: Any, kind: str, config: TakedownConfig) -> None:
    """At start-up: the link secret is set and the provider directory reads."""
    secret_from_env(rt.env, config.secret_env, f"{kind}.secret_env")
    load_directory(resolve_path(rt.settings, config.providers))


class TakedownSink(StatusSink):
    """The desk as a status sink, built when opened (the runtime's publisher exists by then)."""

    kind = "takedown"

    def __init__(self, rt: Any, config: TakedownConfig) -> None:
        self._rt, self._config = rt, config
        self.service: TakedownService | None = None

    def open(self) -> None:
        """Build the desk and start its ticker and answer endpoint."""
        self.service = make_service(self._rt, self._config)
        self.service.open()

    def deliver_status(self, status: StatusDelivery) -> None:
        """Hand one verified status to the desk."""
        if self.service is None:
            raise DeliveryError("the takedown desk is not open")
        self.service.deliver_status(status)

    def close(self) -> None:
        """Stop the desk."""
        if self.service is not None:
            self.service.close()
            self.service = None


def build_takedown(rt: Any, config: TakedownConfig) -> TakedownSink:
    """The desk of the runtime's organisation, fed by its status feed (built when opened)."""
    return TakedownSink(rt, config)


def make_service(rt: Any, config: TakedownConfig) -> TakedownService:
    """The desk of ``rt``'s organisation: trail to its ledger, state in its folder."""
    publisher = rt.publisher
    org = publisher.org.id
    secret = secret_from_env(rt.env, config.secret_env, "takedown.secret_env")
    key = secret.get_secret_value().encode()
    folder = rt.settings.org_dir(org)
    private_dir(folder, "takedown")
    trail = TrailWriter(publisher.ledger.emit, org, _now_ms)
    desk = TakedownDesk(
        trail,
        load_directory(resolve_path(rt.settings, config.providers)),
        SmtpSender(config.smtp_host, config.smtp_port, secret=key, answer_base=config.answer_base),
        secret=key,
        sender_address=config.sender,
        notifier=org,
        cadence=Cadence(
            repeat_every_ms=int(config.repeat_hours * DAY_MS / 24),
            escalate_at_step=config.escalate_at_step,
            clearance_required=config.clearance_required,
        ),
        store=DeskStore(folder / DESK_FILE),
    )
    network = publisher.network
    intake = TakedownIntake(
        desk, publisher.outbox.get, network.role_of, fallback=network.routing.fallback
    )
    return TakedownService(
        intake, key, answer_port=config.answer_port, tick_every_s=config.tick_seconds
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
