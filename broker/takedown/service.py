"""The takedown desk as a long-running part of ``referral connector run``.

A status sink of the origin's status feed (:class:`TakedownIntake` puts real
referrals on the desk), a ticker (the cadence, once a minute by default) and
the loopback answer endpoint, all around one desk under one lock. ``open``
starts the ticker and the endpoint; ``close`` stops them and closes the desk's
file. The tick's clock is the desk's; the ticker only decides how often to look.
"""

from __future__ import annotations

import logging
import threading

from broker.contracts import StatusDelivery, StatusSink
from broker.errors import ReferralError
from broker.takedown.answer_http import AnswerServer
from broker.takedown.desk import TakedownDesk
from broker.takedown.intake import TakedownIntake
from broker.takedown.notices import Notice

__all__ = ["TakedownService"]

log = logging.getLogger("referral.takedown")


class TakedownService(StatusSink):
    """One hotline's desk, fed by its status feed, ticking and answering links."""

    kind = "takedown"

    def __init__(
        self,
        intake: TakedownIntake,
        secret: bytes,
        *,
        answer_port: int = 0,
        tick_every_s: float = 60.0,
    ) -> None:
        self.intake = intake
        self.desk: TakedownDesk = intake.desk
        self.lock = threading.Lock()
        self._secret = secret
        self._answer_port = answer_port
        self.tick_every_s = tick_every_s
        self.answers: AnswerServer | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def open(self) -> None:
        """Start the answer endpoint and the ticker."""
        self.answers = AnswerServer(self.desk, self._secret, self.lock, port=self._answer_port)
        self.answers.start()
        self._ticker = threading.Thread(target=self._run, name="takedown-ticker", daemon=True)
        self._ticker.start()
        log.info("takedown desk: answers on 127.0.0.1:%d", self.answers.port)

    def deliver_status(self, status: StatusDelivery) -> None:
        """Hand one verified status to the intake (under the desk's lock)."""
        with self.lock:
            self.intake.deliver_status(status)

    def tick(self) -> list[Notice]:
        """One look at the cadence now; the notices sent."""
        with self.lock:
            return self.desk.tick()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except ReferralError as exc:
                log.warning("takedown tick: %s", str(exc).splitlines()[0])
            self._stop.wait(self.tick_every_s)

    def close(self) -> None:
        """Stop the ticker and the endpoint; close the desk's file."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=10)
        if self.answers is not None:
            self.answers.stop()
        if self.desk.store is not None:
            self.desk.store.close()
