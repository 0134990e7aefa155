"""Erasing a received referral from every store of its recipient, by rule or on request.

With keys, the erasure also shreds the referral's period keys
(:class:`broker.security.shredding.Shredder`): its sealed copies on the topics no
longer open for anyone, the recipient included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from broker.config import Settings
from broker.contracts import Sink
from broker.errors import ConfigError
from broker.network import Network
from broker.receiver.inbox import Inbox
from broker.retention import Due, Retention, due
from broker.security.keys import key_dir, trust_file_path
from broker.security.rules import HandlingLog
from broker.security.shredding import PeriodKeys, Shredder

__all__ = ["Erased", "ReceiverEraser", "RetentionSweep", "period_keys", "shredder_for"]

log = logging.getLogger("referral.receiver.erasure")


@dataclass(frozen=True)
class Erased:
    """What one erasure removed, per store (counts only)."""

    origin_org: str
    referral_id: str
    removed: dict[str, int] = field(default_factory=dict)


def shredder_for(
    settings: Settings,
    network: Network,
    org_id: str,
    clock: Callable[[], float] | None = None,
) -> Shredder | None:
    """The shredder of an organisation with keys (None: it has none, nothing is sealed)."""
    directory = key_dir(settings, org_id)
    if not (directory / "keys.json").is_file():
        return None
    trust = trust_file_path(network, settings.network_file)
    grace = network.retention.key_destroy_grace_seconds
    return Shredder(directory, org_id, trust, clock or time.time, grace)


def period_keys(
    settings: Settings,
    network: Network,
    org_id: str,
    clock: Callable[[], float] | None = None,
) -> PeriodKeys | None:
    """The period-key rotation of ``[retention] key_period_days`` (None: no keys)."""
    shredder = shredder_for(settings, network, org_id, clock)
    if shredder is None:
        return None
    retention = network.retention
    return PeriodKeys(shredder, retention.key_period_days, retention.longest_days)


class ReceiverEraser:
    """Removes one referral from the organisation's sinks, handling log and inbox, and
    shreds its period keys (with ``shredder``)."""

    def __init__(
        self,
        settings: Settings,
        org_id: str,
        sinks: Sequence[Sink],
        inbox: Inbox,
        shredder: Shredder | None = None,
        keys_changed: Callable[[], None] | None = None,
    ):
        self.settings = settings
        self.org_id = org_id
        self.sinks = list(sinks)
        self.inbox = inbox
        self.shredder = shredder
        #: Called after period keys were destroyed (a running receiver drops them at once).
        self.keys_changed = keys_changed

    def erase(self, origin_org: str, referral_id: str, why: str) -> Erased:
        """Erase everywhere; the inbox last, so a failure part-way is retried whole.

        ``why`` is a code (``retention:30d``, ``request``), never free text about the case.
        """
        removed = {s.kind: s.erase(origin_org, referral_id) for s in self.sinks}
        handling = HandlingLog.for_org(self.settings, self.org_id)
        try:
            removed["handling_log"] = handling.erase(origin_org, referral_id)
        finally:
            handling.close()
        if self.shredder is not None:
            removed["period_keys"] = self._shred(origin_org, referral_id)
        removed["inbox"] = self.inbox.erase(origin_org, referral_id, why)
        log.info("erased referral %s of %s at %s (%s)", referral_id, origin_org, self.org_id, why)
        return Erased(origin_org, referral_id, removed)

    def _shred(self, origin_org: str, referral_id: str) -> int:
        """Shred the referral's period keys; how many. A key that cannot be (no trust file
        to rotate the current one to) is left and said in the log: the stores are erased."""
        assert self.shredder is not None
        try:
            shredded = len(self.shredder.erase_referral(origin_org, referral_id))
        except ConfigError as exc:
            log.warning(
                "%s: referral %s erased, its period key not shredded: %s",
                self.org_id,
                referral_id,
                str(exc).splitlines()[0],
            )
            return 0
        if self.keys_changed is not None:
            self.keys_changed()
        return shredded


class RetentionSweep:
    """Applies the network's retention rules to what one organisation received."""

    def __init__(
        self,
        eraser: ReceiverEraser,
        retention: Retention,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.eraser = eraser
        self.retention = retention
        self.clock = clock

    def due(self) -> list[Due]:
        """What the rules make due now."""
        return due(self.eraser.inbox.retention_candidates(), self.retention, self.clock())

    def sweep(self) -> list[Erased]:
        """Erase everything due now; what was erased."""
        out = []
        for d in self.due():
            c = d.candidate
            why = f"retention:{d.rule.after_days:g}d"
            out.append(self.eraser.erase(c.origin_org, c.referral_id, why))
        return out
