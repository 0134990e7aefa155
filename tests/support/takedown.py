"""Helpers of the takedown tests: a simulated clock, an SMTP inbox, scripted providers."""

from __future__ import annotations

import socket
import threading
import uuid
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from broker.takedown.providers import Provider, ProviderDirectory

HOUR = 3_600_000
DAY = 24 * HOUR
MINUTE = 60_000
#: 2026-01-05 00:00 UTC: the simulated clock's start.
T0 = 1_767_571_200_000


@dataclass
class SimClock:
    """A clock the test moves by hand (milliseconds since the epoch)."""

    now: int = T0

    def __call__(self) -> int:
        return self.now


@dataclass
class Inbox:
    """An aiosmtpd handler keeping every message it accepts (bytes, in order)."""

    messages: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append(bytes(content))
        return "250 OK"

    def take(self) -> list[bytes]:
        """The messages received since the last take."""
        with self.lock:
            out, self.messages = self.messages, []
        return out


def start_smtp() -> tuple[Controller, Inbox]:
    """A real SMTP server on a free loopback port and its inbox."""
    inbox = Inbox()
    with socket.socket() as probe:  # aiosmtpd's start-up check needs the real port
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, inbox


def smtp_port(controller: Controller) -> int:
    """The port the controller's server listens on."""
    return int(controller.port)


#: Provider kinds of the script: how long after a notice the item is removed (None: never)
#: and how much later the provider reports it.
@dataclass(frozen=True)
class Script:
    """What a scripted provider does on a first notice."""

    kind: str
    removes_after_ms: int | None
    reports_after_ms: int = 0


def scripted_providers(count: int = 20) -> tuple[ProviderDirectory, dict[str, Script]]:
    """``count`` providers: 8 fast (link, minutes-hours), 6 slow (API, 30 h+), 6 silent."""
    providers, scripts = [], {}
    for i in range(count):
        pid = f"host-{i:02d}"
        providers.append(
            Provider(
                pid,
                f"Hosting {i}",
                ("NL", "DE", "FR", "US")[i % 4],
                f"abuse@{pid}.invalid",
                escalate_to="police-nl",
                escalate_email=f"upstream@{pid}.invalid",
            )
        )
        if i < 8:
            scripts[pid] = Script("fast", (i + 1) * 45 * MINUTE)
        elif i < 14:
            scripts[pid] = Script("slow", 30 * HOUR + (i - 8) * 2 * HOUR, 90 * MINUTE)
        else:
            scripts[pid] = Script("silent", None)
    return ProviderDirectory(providers), scripts


def synthetic_id(seed: str) -> str:
    """A UUID derived from ``seed`` (stable test ids)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:takedown-test:{seed}"))
