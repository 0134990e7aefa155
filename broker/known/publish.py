"""Known content at the origin and at the receiver: items → tokens → index and ``match.tokens``.

:class:`KnownPublisher` (the origin) tokenises the exact hashes (MD5, SHA-1,
SHA-256) and the normalised URL of each item of the referrals it published, looks
them up in its index (what ``referral check`` reports), remembers them and publishes
one signed :class:`~broker.known.wire.MatchRecord` per token to ``match.tokens``.
Under TLP RED the record names only the holder (whom to ask).

:class:`KnownSink` (the receiver) is a sink: each referral delivered is tokenised
once, when the batch is made durable, so its inbox can show what was known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from broker.contracts import Delivery, Sink
from broker.errors import ReferralError, ValidationFailed
from broker.known.client import EvaluationClient
from broker.known.errors import BadMatchInput
from broker.known.index import MatchIndex, OwnPdq, OwnToken, PreviouslyAssessed
from broker.known.normalise import hash_input, url_input
from broker.known.pdq import (
    CHUNKS,
    chunk_inputs,
    chunk_kind,
    group_reference,
    is_chunk_kind,
    parse_pdq,
)
from broker.known.pending import Untokenised
from broker.known.wire import MatchRecord, encode_match, reference, sign_known
from broker.origin.outbox import Outbox
from broker.origin.status_log import StatusLog
from broker.security.keys import LiveKeys

__all__ = ["ItemInput", "KnownPublisher", "KnownSink", "item_inputs", "item_pdqs"]

log = logging.getLogger("referral.known")

_EXACT = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256"}


@dataclass(frozen=True)
class ItemInput:
    """One OPRF input of one item: which item, which kind (md5, sha1, sha256, url), the bytes."""

    item_id: str
    kind: str
    data: bytes

    def __repr__(self) -> str:
        return f"ItemInput({self.item_id}, {self.kind})"


def _ms(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def item_pdqs(document: Mapping[str, Any]) -> dict[str, bytes]:
    """Item id → its PDQ hash (the first well-formed one), for the items that carry one."""
    out: dict[str, bytes] = {}
    for item in (document.get("body") or {}).get("items") or ():
        item_id = str(item.get("item_id") or "")
        for h in item.get("hashes") or ():
            if item_id and item_id not in out and str(h.get("algorithm", "")) == "PDQ":
                try:
                    out[item_id] = parse_pdq(str(h.get("value", "")))
                except BadMatchInput:
                    continue
    return out


def item_inputs(document: Mapping[str, Any]) -> list[ItemInput]:
    """The exact hashes, the URL and the 32 PDQ chunks of every item of a plain referral
    document (chunk kinds ``pdq:00`` … ``pdq:31``)."""
    out: list[ItemInput] = []
    pdqs = item_pdqs(document)
    for item in (document.get("body") or {}).get("items") or ():
        item_id = str(item.get("item_id") or "")
        if not item_id:
            continue
        if item_id in pdqs:
            chunks = chunk_inputs(pdqs[item_id])
            out += [ItemInput(item_id, chunk_kind(n), c) for n, c in enumerate(chunks)]
        for h in item.get("hashes") or ():
            kind = _EXACT.get(str(h.get("algorithm", "")))
            if kind is None:
                continue
            try:
                out.append(ItemInput(item_id, kind, hash_input(kind, str(h.get("value", "")))))
            except ValidationFailed:
                continue
        try:
            out.append(ItemInput(item_id, "url", url_input(str(item.get("url", "")))))
        except ValidationFailed:
            continue
    return out


def _labels(document: Mapping[str, Any]) -> tuple[str, int, dict[str, str | None]]:
    envelope = document.get("envelope") or {}
    body = document.get("body") or {}
    tlp = str((envelope.get("handling") or {}).get("tlp") or "CLEAR")
    at_ms = _ms(envelope.get("created_at", 0))
    default = (body.get("classification") or {}).get("legal_status")
    per_item: dict[str, str | None] = {}
    for item in body.get("items") or ():
        own = (item.get("classification") or {}).get("legal_status")
        per_item[str(item.get("item_id") or "")] = str(own or default) if own or default else None
    return tlp, at_ms, per_item


def _chunk_refs(own: Sequence[OwnToken]) -> dict[tuple[str, str, str], str]:
    """(referral id, item id, key id) → the reference of the item's 32 chunk entries."""
    chunks: dict[tuple[str, str, str], list[tuple[str, bytes]]] = {}
    for t in own:
        if is_chunk_kind(t.kind):
            chunks.setdefault((t.referral_id, t.item_id, t.key_id), []).append((t.kind, t.token))
    return {
        key: group_reference([v for _, v in sorted(c)], key[0], key[1])
        for key, c in chunks.items()
        if len(c) == CHUNKS
    }


def _entry_ref(t: OwnToken, groups: Mapping[tuple[str, str, str], str]) -> str | None:
    """The reference of an own token's match entry (None: a chunk of an incomplete PDQ)."""
    if is_chunk_kind(t.kind):
        return groups.get((t.referral_id, t.item_id, t.key_id))
    return reference(t.token, t.referral_id, t.item_id)


def _own_pdqs(rid: str, pdqs: Mapping[str, bytes], own: Sequence[OwnToken]) -> list[OwnPdq]:
    return [
        OwnPdq(rid, item_id, key_id, ref, pdqs[item_id])
        for (_, item_id, key_id), ref in _chunk_refs(own).items()
        if item_id in pdqs
    ]


#: Referrals tried at once when retrying (the evaluator's rate is per organisation).
RETRY_BATCH = 200


class _Tokeniser:
    """Tokenises referral documents through the evaluator and remembers the tokens."""

    side = "received"

    def __init__(
        self,
        client: EvaluationClient,
        index: MatchIndex,
        queue: Untokenised | None = None,
        *,
        retry_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.index = index
        #: Where referrals wait that could not be tokenised (None: they are only logged).
        self.queue = queue
        self.retry_s = retry_s
        self.clock = clock
        self._retry_at = 0.0

    def _work(self, referrals: Sequence[tuple[str, Mapping[str, Any]]]) -> object:
        return self.tokenise(referrals)

    def back_off(self) -> None:
        """The evaluator just failed: the next retry waits ``retry_s``."""
        self._retry_at = self.clock() + self.retry_s

    def retry(self, *, force: bool = False) -> int:
        """Tokenise queued referrals (at most every ``retry_s`` unless ``force``); how many."""
        if self.queue is None or (not force and self.clock() < self._retry_at):
            return 0
        waiting = self.queue.waiting(self.side)[:RETRY_BATCH]
        if not waiting:
            return 0
        try:
            self._work(waiting)
        except (ReferralError, KafkaError) as exc:
            self.back_off()
            log.warning(
                "known content: %d referrals still not tokenised: %s",
                self.queue.count(self.side),
                type(exc).__name__,
            )
            return 0
        self.queue.done(self.side, [rid for rid, _ in waiting])
        return len(waiting)

    def tokenise(
        self, referrals: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[tuple[str, Mapping[str, Any], list[ItemInput], list[OwnToken]]]:
        jobs = [(rid, doc, item_inputs(doc)) for rid, doc in referrals]
        flat = [i.data for _, _, inputs in jobs for i in inputs]
        tokens = iter(self.client.tokens(flat))
        out = []
        own: list[OwnToken] = []
        hashes: list[OwnPdq] = []
        for rid, doc, inputs in jobs:
            at_ms = _labels(doc)[1]
            mine = []
            for inp in inputs:
                token = next(tokens)
                mine.append(OwnToken(rid, inp.item_id, inp.kind, token.key_id, token.value, at_ms))
            own += mine
            hashes += _own_pdqs(rid, item_pdqs(doc), mine)
            out.append((rid, doc, inputs, mine))
        self.index.add_own(own)
        self.index.add_own_pdq(hashes)
        return out


class KnownPublisher(_Tokeniser):
    """The origin's side: tokenise what it published and put the tokens on ``match.tokens``."""

    side = "sent"

    def __init__(
        self,
        client: EvaluationClient,
        index: MatchIndex,
        producer: KafkaProducer,
        keys: LiveKeys,
        *,
        case_status: str | None = None,
        queue: Untokenised | None = None,
    ) -> None:
        super().__init__(client, index, queue)
        self.producer = producer
        self.keys = keys
        self.topic = client.names.match_tokens
        self.holder = client.org_id
        self.case_status = case_status

    def publish(
        self,
        referrals: Sequence[tuple[str, Mapping[str, Any]]],
        statuses: Mapping[tuple[str, str], str] | None = None,
    ) -> dict[tuple[str, str], PreviouslyAssessed]:
        """Tokenise and publish; what was known before, by (referral id, item id).

        ``statuses``: each item's case status (its latest outcome), by (referral id, item id).
        """
        statuses = statuses or {}
        known: dict[tuple[str, str], PreviouslyAssessed] = {}
        records: list[MatchRecord] = []
        for rid, doc, _, own in self.tokenise(referrals):
            records += self._records(rid, doc, own, statuses)
            for item_id in dict.fromkeys(t.item_id for t in own):
                hit = self.index.lookup(rid, item_id)
                if hit is not None:
                    known[(rid, item_id)] = hit
        self._send(records)
        return known

    def restatus(
        self,
        referrals: Sequence[tuple[str, Mapping[str, Any]]],
        statuses: Mapping[tuple[str, str], str],
    ) -> int:
        """Publish the entries of referrals tokenised before again, with each item's case
        status from ``statuses`` (no new evaluation); the entries sent."""
        records: list[MatchRecord] = []
        for rid, doc in referrals:
            records += self._records(rid, doc, self.index.own_tokens([rid]), statuses)
        self._send(records)
        return len(records)

    def _records(
        self,
        rid: str,
        doc: Mapping[str, Any],
        own: Sequence[OwnToken],
        statuses: Mapping[tuple[str, str], str],
    ) -> list[MatchRecord]:
        tlp, at_ms, classes = _labels(doc)
        red = tlp == "RED"
        groups = _chunk_refs(own)
        return [
            MatchRecord(
                t.key_id,
                t.token.hex(),
                self.holder,
                ref,
                "pdq" if is_chunk_kind(t.kind) else t.kind,
                tlp,
                at_ms,
                None if red else classes.get(t.item_id),
                None if red else statuses.get((rid, t.item_id), self.case_status),
            )
            for t in own
            if (ref := _entry_ref(t, groups)) is not None
        ]

    def _send(self, records: Sequence[MatchRecord]) -> None:
        if not records:
            return
        keys = self.keys.current()
        for record in records:
            value = encode_match(record)
            self.producer.send(
                self.topic,
                key=record.record_key(),
                value=value,
                headers=sign_known(keys, "token", value),
            )
        self.producer.flush(self.client.timeout)
        self.index.add(records)

    def _work(self, referrals: Sequence[tuple[str, Mapping[str, Any]]]) -> object:
        return self.publish(referrals)

    def publish_or_keep(
        self, referrals: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> dict[tuple[str, str], PreviouslyAssessed]:
        """:meth:`publish`; on failure the referrals are queued for :meth:`retry` (raises)."""
        try:
            return self.publish(referrals)
        except (ReferralError, KafkaError):
            if self.queue is not None:
                self.queue.keep(self.side, referrals)
                self.back_off()
            raise

    def rederive(self, outbox: Outbox, status_log: StatusLog | None = None) -> int:
        """After a key rotation: tokens of every referral the outbox keeps, under the current
        key, published (with each item's latest outcome from ``status_log`` as its case
        status); the entries of older keys removed (tombstones). Referrals redone."""
        docs: list[tuple[str, Mapping[str, Any]]] = []
        for pending in outbox.all():
            entry = outbox.get(pending.referral_id)
            if entry is not None and entry.document is not None:
                docs.append((entry.referral_id, entry.document))
        if not docs:
            return 0
        before = self.index.own_tokens([rid for rid, _ in docs])
        statuses = {}
        if status_log is not None:  # item_states is oldest first: the latest wins
            for state in status_log.item_states():
                statuses[(state.referral_id, state.item_id)] = state.outcome.outcome.value
        self.publish(docs, statuses)
        current = {t.key_id for t in self.index.own_tokens([docs[0][0]])} - {
            t.key_id for t in before
        }
        if not current:
            return len(docs)  # no new key: the same tokens again
        stale = [t for t in before if t.key_id not in current]
        groups = _chunk_refs(stale)
        keys = [
            f"{t.key_id}:{t.token.hex()}:{self.holder}:{ref}"
            for t in stale
            if (ref := _entry_ref(t, groups)) is not None
        ]
        for key in keys:
            self.producer.send(self.topic, key=key.encode("ascii"), value=None)
        self.producer.flush(self.client.timeout)
        self.index.drop_own(stale, keys)
        return len(docs)


class KnownSink(Sink):
    """A receiver's sink that tokenises each delivered referral (once, at flush)."""

    kind = "known"

    def __init__(
        self,
        client: EvaluationClient,
        index: MatchIndex,
        queue: Untokenised | None = None,
        *,
        retry_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokeniser = _Tokeniser(client, index, queue, retry_s=retry_s, clock=clock)
        self._pending: list[tuple[str, Mapping[str, Any]]] = []

    def deliver(self, delivery: Delivery) -> None:
        """Hold the referral's items for the batch's one evaluation."""
        self._pending.append((delivery.referral_id, delivery.document))

    def flush(self) -> None:
        """Tokenise what was delivered; an unreachable evaluator is logged, never fatal (with
        a queue, what was not tokenised waits there for :meth:`retry`)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        queue = self._tokeniser.queue
        try:
            self._tokeniser.tokenise(pending)
        except (ReferralError, KafkaError) as exc:
            log.warning(
                "known content: %d referrals not tokenised: %s", len(pending), type(exc).__name__
            )
            if queue is not None:  # only what failed is kept (the content stays in one place)
                queue.keep(self._tokeniser.side, pending)
                self._tokeniser.back_off()
            return
        if queue is not None and queue.count(self._tokeniser.side):
            self._tokeniser.retry()  # the evaluator answers again: what waits, on its cadence

    def retry(self, *, force: bool = False) -> int:
        """Tokenise the referrals queued earlier (see :meth:`_Tokeniser.retry`); how many."""
        return self._tokeniser.retry(force=force)

    def erase(self, origin_org: str, referral_id: str) -> int:
        """Drop the referral's queued document (if its tokenising failed) and its own tokens;
        1 if a document was queued, else 0."""
        self._pending = [(rid, doc) for rid, doc in self._pending if rid != referral_id]
        self._tokeniser.index.forget_own(referral_id)
        queue = self._tokeniser.queue
        return queue.done(self._tokeniser.side, [referral_id]) if queue is not None else 0

    def close(self) -> None:
        """Close the evaluation client."""
        self._tokeniser.client.close()
