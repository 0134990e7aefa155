"""The one place that names topics and message headers.

Every other module asks this one for a topic name; changing the contract means
changing this file only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CHECKPOINTS",
    "DEADLETTER",
    "EVALUATE",
    "EVALUATED",
    "HEADER_DLQ_PREFIX",
    "INTAKE",
    "LEDGER",
    "MATCH_TOKENS",
    "STATUS_INTAKE",
    "UNASSIGNED",
    "Headers",
    "TopicNames",
    "is_jurisdiction_topic",
    "jurisdiction_of",
    "jurisdiction_topic",
    "status_topic",
    "urgent_topic",
]

#: Hotlines publish every new referral here.
INTAKE = "referrals.intake"
#: Referrals for jurisdictions no organisation serves, for the fallback recipient.
UNASSIGNED = "referrals.unassigned"
#: What cannot be decoded, validated or routed, with its original bytes.
DEADLETTER = "referrals.deadletter"
#: Receipts and status updates from every organisation.
STATUS_INTAKE = "status.intake"
#: Every handover event of every hop.
LEDGER = "handover.ledger"
#: Signed checkpoints (entry count + chain head) of the ledger, published by the router.
CHECKPOINTS = "handover.checkpoints"
#: Blinded elements for the match-token evaluator (``broker.known``), signed by the requester.
EVALUATE = "known.evaluate"
#: The evaluator's signed answers (evaluated elements or a refusal), keyed by the requester.
EVALUATED = "known.evaluated"
#: Match tokens with holder, classification, case status and handling label (compacted).
MATCH_TOKENS = "match.tokens"

_PREFIX_TO = "referrals.to."
_SUFFIX_URGENT = ".urgent"
_PREFIX_STATUS = "status.to."
_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_JURISDICTION_TOPIC = re.compile(r"^referrals\.to\.([A-Z]{2})(\.urgent)?$")


def _check_country(code: str) -> str:
    if len(code) != 2 or not code.isascii() or not code.isalpha() or not code.isupper():
        raise ValueError(f"not an upper-case ISO 3166-1 alpha-2 code: {code!r}")
    return code


def jurisdiction_topic(country: str) -> str:
    """The topic of a jurisdiction's ordinary lane, e.g. ``referrals.to.DE``."""
    return _PREFIX_TO + _check_country(country)


def urgent_topic(country: str) -> str:
    """The topic of a jurisdiction's urgent lane, e.g. ``referrals.to.DE.urgent``."""
    return _PREFIX_TO + _check_country(country) + _SUFFIX_URGENT


def status_topic(org_id: str) -> str:
    """The topic where an organisation receives status updates of its referrals."""
    if not _ORG_ID.match(org_id):
        raise ValueError(f"not a valid organisation id: {org_id!r}")
    return _PREFIX_STATUS + org_id


def is_jurisdiction_topic(topic: str) -> bool:
    """True for ``referrals.to.<CC>`` and ``referrals.to.<CC>.urgent``."""
    return _JURISDICTION_TOPIC.match(topic) is not None


def jurisdiction_of(topic: str) -> str | None:
    """The country code of a jurisdiction topic, or None for any other topic."""
    m = _JURISDICTION_TOPIC.match(topic)
    return m.group(1) if m else None


@dataclass(frozen=True)
class TopicNames:
    """Topic names under an optional prefix (a namespace on a shared cluster).

    ``TopicNames()`` gives the plain contract names above; ``TopicNames("acme.")``
    gives ``acme.referrals.intake`` and so on. Tests use a unique prefix each.
    """

    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix and not _PREFIX.match(self.prefix):
            raise ValueError(f"topic prefix must match {_PREFIX.pattern}: {self.prefix!r}")

    @property
    def intake(self) -> str:
        """Where hotlines publish new referrals."""
        return self.prefix + INTAKE

    @property
    def unassigned(self) -> str:
        """Referrals for unserved jurisdictions (the fallback recipient's)."""
        return self.prefix + UNASSIGNED

    @property
    def deadletter(self) -> str:
        """Undecodable, invalid or unroutable records with their original bytes."""
        return self.prefix + DEADLETTER

    @property
    def status_intake(self) -> str:
        """Receipts and status updates from every organisation."""
        return self.prefix + STATUS_INTAKE

    @property
    def ledger(self) -> str:
        """Handover events of every hop."""
        return self.prefix + LEDGER

    @property
    def checkpoints(self) -> str:
        """Signed checkpoints of the ledger."""
        return self.prefix + CHECKPOINTS

    @property
    def evaluate(self) -> str:
        """Blinded elements for the match-token evaluator."""
        return self.prefix + EVALUATE

    @property
    def evaluated(self) -> str:
        """The evaluator's signed answers."""
        return self.prefix + EVALUATED

    @property
    def match_tokens(self) -> str:
        """The compacted topic of match tokens every member indexes."""
        return self.prefix + MATCH_TOKENS

    def jurisdiction(self, country: str) -> str:
        """A jurisdiction's ordinary lane."""
        return self.prefix + jurisdiction_topic(country)

    def urgent(self, country: str) -> str:
        """A jurisdiction's urgent lane."""
        return self.prefix + urgent_topic(country)

    def status(self, org_id: str) -> str:
        """An organisation's status topic."""
        return self.prefix + status_topic(org_id)

    def strip(self, topic: str) -> str | None:
        """``topic`` without this prefix, or None if it is not under the prefix."""
        return topic[len(self.prefix) :] if topic.startswith(self.prefix) else None

    def jurisdiction_of(self, topic: str) -> str | None:
        """The country code of one of this namespace's jurisdiction topics."""
        bare = self.strip(topic)
        return jurisdiction_of(bare) if bare is not None else None

    def is_status(self, topic: str) -> bool:
        """True for an organisation's status topic (``status.to.<org>``) of this namespace."""
        bare = self.strip(topic)
        return bare is not None and bare.startswith(_PREFIX_STATUS)

    def is_urgent(self, topic: str) -> bool:
        """True for an urgent-lane topic of this namespace."""
        bare = self.strip(topic)
        return bare is not None and is_jurisdiction_topic(bare) and bare.endswith(_SUFFIX_URGENT)


class Headers:
    """Kafka header names used on every hop (values are UTF-8 bytes)."""

    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
    REFERRAL_ID = "referral.id"
    CASE_ID = "referral.case_id"
    ORIGIN = "referral.origin"
    ROUTE_REASON = "referral.route.reason"
    DESTINATION_ORGS = "referral.route.orgs"
    RECORD_KIND = "referral.kind"


#: Record headers as a producer takes them.
HeaderList = list[tuple[str, bytes]]
#: Record headers as a consumer hands them (a value may be None; the list may be missing).
RecordHeaders = Sequence[tuple[str, bytes | None]] | None


def header_values(headers: RecordHeaders, name: str) -> list[bytes]:
    """Every value of header ``name``, in record order (a missing value reads as empty)."""
    return [value or b"" for key, value in headers or () if key == name]


def header(headers: RecordHeaders, name: str) -> str | None:
    """The first value of header ``name`` as text (undecodable bytes replaced), or None."""
    found = header_values(headers, name)
    return found[0].decode("utf-8", "replace") if found else None


#: Kafka Connect-style error headers on dead letters start with this prefix.
HEADER_DLQ_PREFIX = "__connect.errors."
