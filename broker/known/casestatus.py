"""The case status of known content kept current: a verified status re-publishes the entries.

:class:`CaseStatusSink` is an origin's status sink (the status feed hands it each
verified status update). For every referral whose items got an outcome, its
``match.tokens`` entries are published again with each item's latest outcome as
the case status (from the status log, then this update's), without a new
evaluation: the tokens are the ones the index already holds.
"""

from __future__ import annotations

import logging

from kafka.errors import KafkaError

from broker.contracts import StatusDelivery, StatusSink
from broker.errors import ReferralError
from broker.known.publish import KnownPublisher
from broker.origin.outbox import Outbox
from broker.origin.status_log import StatusLog
from broker.wire.models import ItemOutcome

__all__ = ["CaseStatusSink"]

log = logging.getLogger("referral.known")


class CaseStatusSink(StatusSink):
    """Re-publishes a referral's match entries when a verified status brings item outcomes."""

    kind = "known"

    def __init__(self, publisher: KnownPublisher, outbox: Outbox, status_log: StatusLog) -> None:
        self.publisher = publisher
        self.outbox = outbox
        self.status_log = status_log
        self._new: dict[tuple[str, str], str] = {}  # (referral, item) -> outcome, in order

    def deliver_status(self, status: StatusDelivery) -> None:
        """Note the update's item outcomes (published at flush, with the batch)."""
        for raw in status.document.get("item_outcomes") or ():
            try:
                outcome = ItemOutcome.model_validate(raw)
            except ValueError:
                continue
            self._new[(status.referral_id, outcome.item_id)] = outcome.outcome.value

    def flush(self) -> None:
        """Publish the noted referrals' entries with their new case status (failures logged)."""
        new, self._new = self._new, {}
        rids = list(dict.fromkeys(rid for rid, _ in new))
        if not rids:
            return
        statuses: dict[tuple[str, str], str] = {}
        docs = []
        for rid in rids:
            entry = self.outbox.get(rid)
            if entry is None or entry.document is None or not self.publisher.index.has_own(rid):
                continue
            for state in self.status_log.item_states(rid):  # oldest first: the latest wins
                statuses[(rid, state.item_id)] = state.outcome.outcome.value
            docs.append((rid, entry.document))
        statuses.update(new)
        try:
            self.publisher.restatus(docs, statuses)
        except (ReferralError, KafkaError) as exc:
            log.warning(
                "known content: case status of %d referrals not published: %s",
                len(docs),
                type(exc).__name__,
            )
