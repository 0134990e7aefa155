"""The one place that names topics and message headers.

Every other module asks this one for a topic name; changing the contract means
changing this file only.
"""

from __future__ import annotations

import re

__all__ = [
    "DEADLETTER",
    "HEADER_DLQ_PREFIX",
    "INTAKE",
    "LEDGER",
    "STATUS_INTAKE",
    "UNASSIGNED",
    "Headers",
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

_PREFIX_TO = "referrals.to."
_SUFFIX_URGENT = ".urgent"
_PREFIX_STATUS = "status.to."
_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
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


#: Kafka Connect-style error headers on dead letters start with this prefix.
HEADER_DLQ_PREFIX = "__connect.errors."
