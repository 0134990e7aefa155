"""The codes a police request carries and its time limits (EU Directive 2023/977, Art. 5 and 6)."""

from __future__ import annotations

from enum import StrEnum

from broker.wire.models import HandlingCode

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "Access",
    "DelayReason",
    "HandlingCode",
    "InfoAssessment",
    "MessageKind",
    "RefusalGround",
    "SourceReliability",
    "limit_ms",
]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class MessageKind(StrEnum):
    """Kinds of police-to-police messages (the PoliceMessageKind Avro enum)."""

    REQUEST = "REQUEST"
    ANSWER = "ANSWER"
    REFUSAL = "REFUSAL"
    CLARIFICATION_ASKED = "CLARIFICATION_ASKED"
    CLARIFICATION_GIVEN = "CLARIFICATION_GIVEN"
    DELAY = "DELAY"


class Access(StrEnum):
    """Whether the requested information is directly accessible to the requested SPOC."""

    DIRECT = "DIRECT"
    INDIRECT = "INDIRECT"


class RefusalGround(StrEnum):
    """The grounds of refusal of Art. 6(1) of Directive 2023/977 (letter in the comment)."""

    NOT_AVAILABLE = "NOT_AVAILABLE"  # (a) not available to the SPOC or competent authorities
    REQUIREMENTS_NOT_MET = "REQUIREMENTS_NOT_MET"  # (b) the request does not meet Art. 4
    JUDICIAL_AUTHORISATION_REFUSED = "JUDICIAL_AUTHORISATION_REFUSED"  # (c)
    PERSONAL_DATA_CATEGORY = "PERSONAL_DATA_CATEGORY"  # (d) data outside the Art. 10(b) categories
    INACCURATE_OR_OUTDATED = "INACCURATE_OR_OUTDATED"  # (e)
    NATIONAL_SECURITY = "NATIONAL_SECURITY"  # (f)(i) essential national security interests
    JEOPARDISES_INVESTIGATION = "JEOPARDISES_INVESTIGATION"  # (f)(ii)
    ENDANGERS_SAFETY = "ENDANGERS_SAFETY"  # (f)(iii) the safety of an individual
    HARMS_LEGAL_PERSON = "HARMS_LEGAL_PERSON"  # (f)(iv) protected interests of a legal person
    MINOR_OFFENCE = "MINOR_OFFENCE"  # (g) punishable by one year or less
    NOT_AN_OFFENCE = "NOT_AN_OFFENCE"  # (h) not a criminal offence in the requested state
    NO_CONSENT_OF_ORIGIN = "NO_CONSENT_OF_ORIGIN"  # (i) the state it came from did not consent


class DelayReason(StrEnum):
    """Why an answer comes after its time limit (Art. 5(2): announced, with reasons)."""

    JUDICIAL_AUTHORISATION = "JUDICIAL_AUTHORISATION"
    CONSENT_OF_ORIGIN = "CONSENT_OF_ORIGIN"
    VOLUME = "VOLUME"
    OTHER = "OTHER"


class SourceReliability(StrEnum):
    """SIENA's source evaluation (4x4): A reliable ... X cannot be judged."""

    A = "A"
    B = "B"
    C = "C"
    X = "X"


class InfoAssessment(StrEnum):
    """SIENA's information evaluation (4x4): 1 known true ... 4 cannot be judged."""

    KNOWN = "1"
    KNOWN_TO_SOURCE = "2"
    NOT_KNOWN = "3"
    CANNOT_JUDGE = "4"


def limit_ms(urgent: bool, access: Access) -> int:
    """The answer limit from receipt: 8 h urgent+direct, 3 days other urgent, 7 days the rest."""
    if urgent:
        return 8 * HOUR_MS if access is Access.DIRECT else 3 * DAY_MS
    return 7 * DAY_MS
