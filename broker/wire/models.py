"""Pydantic models mirroring the Avro schemas, with the semantic checks Avro cannot express."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from broker.errors import ValidationFailed
from broker.validation import validation_problems
from broker.wire.countries import is_country
from broker.wire.registry import HANDOVER_BATCH, HANDOVER_EVENT, REFERRAL, STATUS_UPDATE, full_name

__all__ = [
    "CLOCK_SKEW",
    "HASH_HEX_LENGTHS",
    "ITEM_ID_NAMESPACE",
    "MODEL_BY_RECORD",
    "Annotation",
    "CaseBody",
    "Classification",
    "ExternalReference",
    "ExternalSystem",
    "Handling",
    "HandlingCode",
    "HandoverBatch",
    "HandoverEvent",
    "HandoverEventType",
    "HandoverRoute",
    "Hash",
    "HashAlgorithm",
    "HostingEvidence",
    "IncidentType",
    "ItemOutcome",
    "ItemOutcomeKind",
    "Jurisdiction",
    "JurisdictionBasis",
    "LegalStatus",
    "MediaType",
    "PackedHandovers",
    "PriorActions",
    "Priority",
    "Referral",
    "ReferralEnvelope",
    "ReferralStatus",
    "ReportedItem",
    "SealedBody",
    "SealedRecipient",
    "StatusUpdate",
    "Timeline",
    "Tlp",
    "VictimAgeGroup",
    "derive_item_id",
    "model_from_avro",
    "normalise_url",
    "parse_handover_event",
    "parse_model",
    "parse_referral",
    "parse_status_update",
    "problems_of",
    "utc_now_ms",
]

#: How far in the future a timestamp may lie (clock skew between organisations).
CLOCK_SKEW = timedelta(minutes=5)

# -- enums (symbols = the Avro enum symbols) -------------------------------------------------


class JurisdictionBasis(StrEnum):
    """The link between a referral and a country."""

    HOSTING = "HOSTING"
    UPLOADER_LOCATION = "UPLOADER_LOCATION"
    VICTIM_LOCATION = "VICTIM_LOCATION"
    OFFENDER_LOCATION = "OFFENDER_LOCATION"
    SERVICE_PROVIDER = "SERVICE_PROVIDER"


class Priority(StrEnum):
    """Handling priority; URGENT uses the urgent lane."""

    URGENT = "URGENT"
    HIGH = "HIGH"
    NORMAL = "NORMAL"


class Tlp(StrEnum):
    """Traffic Light Protocol 2.0 labels."""

    CLEAR = "CLEAR"
    GREEN = "GREEN"
    AMBER = "AMBER"
    AMBER_STRICT = "AMBER_STRICT"
    RED = "RED"


class HandlingCode(StrEnum):
    """SIENA handling codes H0-H3."""

    H0 = "H0"
    H1 = "H1"
    H2 = "H2"
    H3 = "H3"


class ExternalSystem(StrEnum):
    """Systems a case is cross-referenced with."""

    ICCAM = "ICCAM"
    NCMEC = "NCMEC"
    SIENA = "SIENA"
    ICSE = "ICSE"
    OTHER = "OTHER"


class MediaType(StrEnum):
    """Kind of reported content."""

    IMAGE = "IMAGE"
    VIDEO = "VIDEO"
    WEBPAGE = "WEBPAGE"
    ARCHIVE = "ARCHIVE"
    STREAM = "STREAM"
    TEXT = "TEXT"
    OTHER = "OTHER"


class HashAlgorithm(StrEnum):
    """Exact (MD5, SHA1, SHA256) and perceptual (PHOTODNA, PDQ) hashes."""

    MD5 = "MD5"
    SHA1 = "SHA1"
    SHA256 = "SHA256"
    PHOTODNA = "PHOTODNA"
    PDQ = "PDQ"


class LegalStatus(StrEnum):
    """Legal assessment used across hotlines."""

    BASELINE = "BASELINE"
    NATIONAL = "NATIONAL"
    NOT_ILLEGAL = "NOT_ILLEGAL"
    UNASSESSED = "UNASSESSED"


class IncidentType(StrEnum):
    """Incident types."""

    CSAM_IMAGERY = "CSAM_IMAGERY"
    CSAM_VIDEO = "CSAM_VIDEO"
    GROOMING = "GROOMING"
    SEXTORTION = "SEXTORTION"
    LIVE_STREAMING = "LIVE_STREAMING"
    OTHER = "OTHER"


class Annotation(StrEnum):
    """Content annotations."""

    GENERATIVE_AI = "GENERATIVE_AI"
    LIVE_STREAMING = "LIVE_STREAMING"
    SELF_GENERATED = "SELF_GENERATED"
    VIRTUAL_OR_DRAWN = "VIRTUAL_OR_DRAWN"
    OTHER = "OTHER"


class VictimAgeGroup(StrEnum):
    """Victim age groups."""

    INFANT_TODDLER = "INFANT_TODDLER"
    PREPUBESCENT = "PREPUBESCENT"
    PUBESCENT = "PUBESCENT"
    UNKNOWN = "UNKNOWN"


class ReferralStatus(StrEnum):
    """Life cycle of a referral at its destination."""

    RECEIVED = "RECEIVED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    REROUTED = "REROUTED"
    ASSESSED = "ASSESSED"
    NTD_SENT = "NTD_SENT"
    REMOVED = "REMOVED"
    STILL_ONLINE = "STILL_ONLINE"
    REFERRED_TO_LE = "REFERRED_TO_LE"
    DELAYED = "DELAYED"
    CLOSED = "CLOSED"


class ItemOutcomeKind(StrEnum):
    """What became of one reported item at the receiving organisation."""

    REMOVED = "REMOVED"
    STILL_ONLINE = "STILL_ONLINE"
    NOT_FOUND = "NOT_FOUND"
    NOT_ILLEGAL = "NOT_ILLEGAL"


class HandoverEventType(StrEnum):
    """Kinds of handover events in the ledger."""

    PUBLISHED = "PUBLISHED"
    ROUTED = "ROUTED"
    DEAD_LETTERED = "DEAD_LETTERED"
    DELIVERED = "DELIVERED"
    DUPLICATE_SKIPPED = "DUPLICATE_SKIPPED"
    STATUS_SENT = "STATUS_SENT"
    STATUS_ROUTED = "STATUS_ROUTED"
    REPUBLISHED = "REPUBLISHED"
    REJECTED = "REJECTED"
    ACCESSED = "ACCESSED"
    #: a delivery that succeeded after earlier dead-lettered (transient) failures: those are stale
    RESOLVED = "RESOLVED"
    #: the origin published a new version of a referral it had sent (``reason``: ``version <n>``)
    AMENDED = "AMENDED"
    #: a moved item was referred on in a child referral (recorded on the parent and the child)
    REROUTED = "REROUTED"
    #: police-to-police requests for information (:mod:`broker.requests`); ``referral_id``
    #: holds the request id, ``reason`` codes only (urgency, ground, delay), never content
    REQUEST_SENT = "REQUEST_SENT"
    REQUEST_ROUTED = "REQUEST_ROUTED"
    REQUEST_RECEIVED = "REQUEST_RECEIVED"
    REQUEST_ANSWERED = "REQUEST_ANSWERED"
    REQUEST_REFUSED = "REQUEST_REFUSED"
    REQUEST_CLARIFICATION_ASKED = "REQUEST_CLARIFICATION_ASKED"
    REQUEST_CLARIFICATION_GIVEN = "REQUEST_CLARIFICATION_GIVEN"
    REQUEST_DELAYED = "REQUEST_DELAYED"
    REQUEST_OVERDUE = "REQUEST_OVERDUE"
    #: one step of an item's takedown trail (``reason``: the step and ids, :mod:`broker.takedown`)
    TAKEDOWN = "TAKEDOWN"
    #: the match-token evaluator evaluated a batch of blinded elements (``reason``: the count)
    EVALUATED = "EVALUATED"
    #: the evaluator refused an organisation's batch (over its rate, unknown key, bad element)
    EVALUATION_REFUSED = "EVALUATION_REFUSED"


# -- constrained scalar types ----------------------------------------------------------------

#: Hex digits per hash algorithm (PHOTODNA: 144 bytes).
HASH_HEX_LENGTHS: dict[HashAlgorithm, int] = {
    HashAlgorithm.MD5: 32,
    HashAlgorithm.SHA1: 40,
    HashAlgorithm.SHA256: 64,
    HashAlgorithm.PDQ: 64,
    HashAlgorithm.PHOTODNA: 288,
}
_HEX = re.compile(r"^[0-9a-f]+$")
_ORG_ID = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_TRACE_ID = r"^[0-9a-f]{32}$"
_SPAN_ID = r"^[0-9a-f]{16}$"
_VISIBLE = r"^[\x21-\x7e]+$"  # printable ASCII, no spaces


def _country(value: str) -> str:
    if not is_country(value):
        raise ValueError("not an assigned upper-case ISO 3166-1 alpha-2 country code")
    return value


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise ValueError("not a UUID") from None


def _utc_ms(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def utc_now_ms() -> datetime:
    """The current UTC time, truncated to the milliseconds Avro ``timestamp-millis`` keeps."""
    return _utc_ms(datetime.now(UTC))


def _past(value: datetime) -> datetime:
    value = _utc_ms(value)
    if value > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError(f"timestamp lies in the future (more than {CLOCK_SKEW} ahead)")
    return value


def _url(value: str) -> str:
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("URL contains whitespace or control characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("URL scheme must be http or https")
    if not host:
        raise ValueError("URL has no host")
    return value


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("not an IPv4 or IPv6 address") from None


#: Namespace of derived item ids: ``uuid5(NAMESPACE_URL, "urn:referral-broker:item")``.
ITEM_ID_NAMESPACE = uuid.UUID("49e4fcec-fd83-55cc-b6f9-4b8fc1237890")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_url(url: str) -> str:
    """The URL as item ids are derived from it (ValueError if it is no http(s) URL).

    Scheme and host in lower case, the default port and any user info dropped, an
    empty path as ``/``, the fragment dropped; path and query as given.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError("not an http(s) URL with a host")
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != _DEFAULT_PORTS[scheme]:
        netloc += f":{parts.port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def derive_item_id(referral_id: str, url: str, occurrence: int = 1) -> str:
    """The item id of the ``occurrence``-th item with ``url`` in referral ``referral_id``.

    ``uuid5(ITEM_ID_NAMESPACE, "<referral id>\\n<normalised url>")``, with
    ``"\\n<occurrence>"`` appended from the second item with the same URL on.
    """
    name = f"{uuid.UUID(referral_id)}\n{normalise_url(url)}"
    if occurrence > 1:
        name += f"\n{occurrence}"
    return str(uuid.uuid5(ITEM_ID_NAMESPACE, name))


OrgId = Annotated[str, Field(pattern=_ORG_ID)]
#: One or more organisation ids, comma-separated (a destination with several receivers).
OrgIdList = Annotated[
    str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}(,[a-z0-9][a-z0-9._-]{0,62})*$")
]
Country = Annotated[str, AfterValidator(_country)]
UuidStr = Annotated[str, AfterValidator(_uuid)]
PastTimestamp = Annotated[datetime, AfterValidator(_past)]
Timestamp = Annotated[datetime, AfterValidator(_utc_ms)]
Url = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_url)]
Ip = Annotated[str, AfterValidator(_ip)]
CaseId = Annotated[str, Field(min_length=1, max_length=128, pattern=_VISIBLE)]
ShortText = Annotated[str, Field(min_length=1, max_length=500)]
LongText = Annotated[str, Field(min_length=1, max_length=8000)]
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=_VISIBLE)]


# -- base ------------------------------------------------------------------------------------


def _to_avro_value(value: Any) -> Any:
    if isinstance(value, _AvroModel):
        return value.to_avro()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_to_avro_value(v) for v in value]
    return value


M = TypeVar("M", bound="_AvroModel")


class _AvroModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_avro(self) -> dict[str, Any]:
        """The Avro datum (a dict fastavro can write with this record's schema)."""
        return {name: _to_avro_value(getattr(self, name)) for name in type(self).model_fields}

    @classmethod
    def from_avro(cls, datum: Mapping[str, Any]) -> Self:
        """Build and validate from a decoded Avro datum (ValidationFailed on problems)."""
        return parse_model(cls, datum)


#: Union tags left out of problem locations (``body.items.0.url``, not ``body.CaseBody...``).
_UNION_TAGS = frozenset({"CaseBody", "SealedBody"})


def problems_of(exc: ValidationError) -> list[str]:
    """``field.path: message`` lines for a pydantic error, never quoting input values."""
    problems = validation_problems(exc, skip=_UNION_TAGS)
    return list(dict.fromkeys(f"{where or '(record)'}: {msg}" for where, msg in problems))


def parse_model(cls: type[M], data: Mapping[str, Any]) -> M:
    """Validate ``data`` as ``cls``; raise ValidationFailed listing every problem."""
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        problems = problems_of(exc)
        raise ValidationFailed(
            f"invalid {cls.__name__}: {len(problems)} problem(s)\n" + "\n".join(problems), problems
        ) from None


# -- envelope --------------------------------------------------------------------------------


class Jurisdiction(_AvroModel):
    """One country a referral concerns, and why."""

    country: Country
    basis: JurisdictionBasis
    derived: bool = False


class Handling(_AvroModel):
    """TLP 2.0 label, named recipients and SIENA handling code."""

    tlp: Tlp
    recipients: tuple[OrgId, ...] = ()
    handling_code: HandlingCode

    @model_validator(mode="after")
    def _red_needs_recipients(self) -> Self:
        if self.tlp is Tlp.RED and not self.recipients:
            raise ValueError("TLP:RED needs at least one named recipient")
        if len(set(self.recipients)) != len(self.recipients):
            raise ValueError("a recipient is listed twice")
        return self


class ExternalReference(_AvroModel):
    """An id of the same case in another system."""

    system: ExternalSystem
    id: Annotated[str, Field(min_length=1, max_length=200)]


class ReferralEnvelope(_AvroModel):
    """The routing envelope: everything the router may read."""

    referral_id: UuidStr
    case_id: CaseId
    origin_org: OrgId
    origin_country: Country
    jurisdictions: tuple[Jurisdiction, ...]
    priority: Priority
    urgency_reason: ShortText | None = None
    handling: Handling
    created_at: PastTimestamp
    external_refs: tuple[ExternalReference, ...] = ()
    #: 1 as first published; each amendment by the origin is the next version.
    version: Annotated[int, Field(ge=1, le=2_147_483_647)] = 1
    #: The referral a re-referral (of a moved item) came from.
    parent_referral_id: UuidStr | None = None

    @model_validator(mode="after")
    def _distinct_jurisdictions(self) -> Self:
        pairs = [(j.country, j.basis) for j in self.jurisdictions]
        if len(set(pairs)) != len(pairs):
            raise ValueError("a jurisdiction (country, basis) is listed twice")
        if self.parent_referral_id == self.referral_id:
            raise ValueError("a referral cannot be its own parent")
        return self


# -- body ------------------------------------------------------------------------------------


class Hash(_AvroModel):
    """A content hash as lower-case hex of the algorithm's length."""

    algorithm: HashAlgorithm
    value: Annotated[str, Field(min_length=1, max_length=512)]

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("value"), str):
            return {**data, "value": data["value"].lower()}
        return data

    @model_validator(mode="after")
    def _shape(self) -> Self:
        want = HASH_HEX_LENGTHS[self.algorithm]
        if len(self.value) != want or not _HEX.match(self.value):
            raise ValueError(f"{self.algorithm.value} hash must be {want} hex digits")
        return self


class HostingEvidence(_AvroModel):
    """Where a reported item was hosted when assessed."""

    ip: Ip | None = None
    asn: Annotated[int, Field(ge=0, le=4_294_967_295)] | None = None
    provider: ShortText | None = None
    country: Country | None = None


class Classification(_AvroModel):
    """The analyst's assessment (of a referral, or of one item)."""

    legal_status: LegalStatus
    assessed_under: Country | None = None
    incident_type: IncidentType
    annotations: tuple[Annotation, ...] = ()
    victim_age_group: VictimAgeGroup

    @model_validator(mode="after")
    def _national_needs_country(self) -> Self:
        if self.legal_status is LegalStatus.NATIONAL and self.assessed_under is None:
            raise ValueError("legal_status NATIONAL needs assessed_under (whose law)")
        return self


class ReportedItem(_AvroModel):
    """One reported URL with its hashes, hosting trace, id and (optionally) own assessment.

    ``item_id`` is None only outside a :class:`Referral` (which fills it in);
    ``classification`` None means the referral's applies.
    """

    url: Url
    media_type: MediaType
    hashes: tuple[Hash, ...] = ()
    hosting: HostingEvidence | None = None
    item_id: UuidStr | None = None
    classification: Classification | None = None


class Timeline(_AvroModel):
    """Incident, receipt and assessment times."""

    incident_at: PastTimestamp | None = None
    received_at: PastTimestamp
    assessed_at: PastTimestamp | None = None


class PriorActions(_AvroModel):
    """What the origin already did."""

    ntd_sent_at: PastTimestamp | None = None
    reported_to_le_at: PastTimestamp | None = None


class CaseBody(_AvroModel):
    """The case content (the router never reads it)."""

    items: tuple[ReportedItem, ...]
    classification: Classification
    timeline: Timeline
    prior_actions: PriorActions
    duplicate_of: UuidStr | None = None
    summary: LongText | None = None

    @model_validator(mode="after")
    def _has_items(self) -> Self:
        if not self.items:
            raise ValueError("needs at least one reported item")
        first: dict[str, int] = {}
        for i, item in enumerate(self.items):
            if item.item_id is None:
                continue
            if item.item_id in first:
                raise ValueError(f"items {first[item.item_id]} and {i} have the same item_id")
            first[item.item_id] = i
        return self

    def classification_of(self, item: ReportedItem) -> Classification:
        """The item's own classification, or the referral's where it has none."""
        return item.classification or self.classification

    def item(self, item_id: str) -> ReportedItem:
        """The item with ``item_id`` (KeyError if there is none)."""
        for item in self.items:
            if item.item_id == item_id:
                return item
        raise KeyError(item_id)


def _body_kind(value: Any) -> str:
    """Which branch of the body union ``value`` is: sealed bodies carry a ciphertext."""
    if isinstance(value, SealedBody) or (isinstance(value, Mapping) and "ciphertext" in value):
        return "SealedBody"
    return "CaseBody"


class SealedRecipient(_AvroModel):
    """The content key of a sealed body, wrapped for one organisation's encryption key."""

    org: OrgId
    key_id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    wrapped_key: Annotated[bytes, Field(min_length=1, max_length=1024)]


class SealedBody(_AvroModel):
    """A case body encrypted for its recipients (see :mod:`broker.security.sealing`)."""

    suite: Annotated[str, Field(min_length=1, max_length=100)]
    recipients: tuple[SealedRecipient, ...]
    nonce: Annotated[bytes, Field(min_length=12, max_length=12)]
    ciphertext: Annotated[bytes, Field(min_length=16)]

    @model_validator(mode="after")
    def _has_recipients(self) -> Self:
        if not self.recipients:
            raise ValueError("a sealed body needs at least one recipient")
        orgs = [r.org for r in self.recipients]
        if len(set(orgs)) != len(orgs):
            raise ValueError("a recipient organisation is listed twice")
        return self


def _with_item_ids(referral_id: str, items: list[Any] | tuple[Any, ...]) -> list[Any] | None:
    """``items`` with derived ids where missing (None: nothing to fill, or input pydantic
    must reject first: a bad referral id or URL)."""
    seen: dict[str, int] = {}
    out: list[Any] = []
    changed = False
    for item in items:
        is_model = isinstance(item, ReportedItem)
        url = item.url if is_model else (item.get("url") if isinstance(item, Mapping) else None)
        given = (
            item.item_id
            if is_model
            else (item.get("item_id") if isinstance(item, Mapping) else None)
        )
        if not isinstance(url, str):
            out.append(item)
            continue
        try:
            key = normalise_url(url)
        except ValueError:
            out.append(item)
            continue
        seen[key] = seen.get(key, 0) + 1
        if given is not None:
            out.append(item)
            continue
        try:
            item_id = derive_item_id(referral_id, url, seen[key])
        except ValueError:
            return None
        changed = True
        if is_model:
            out.append(item.model_copy(update={"item_id": item_id}))
        else:
            out.append({**item, "item_id": item_id})
    return out if changed else None


class Referral(_AvroModel):
    """A whole referral: envelope first, body last (the wire layout depends on it).

    The body is plain (:class:`CaseBody`) or sealed for its recipients
    (:class:`SealedBody`); a sealed referral must name its jurisdictions in the
    envelope, since nobody on the way can read the items' hosting evidence.
    """

    envelope: ReferralEnvelope
    body: Annotated[
        Annotated[CaseBody, Tag("CaseBody")] | Annotated[SealedBody, Tag("SealedBody")],
        Discriminator(_body_kind),
    ]

    @property
    def sealed(self) -> bool:
        """True if the body is sealed."""
        return isinstance(self.body, SealedBody)

    @model_validator(mode="before")
    @classmethod
    def _item_ids(cls, data: Any) -> Any:
        """Give every item of a plain body without an ``item_id`` its derived one."""
        if not isinstance(data, Mapping):
            return data
        envelope, body = data.get("envelope"), data.get("body")
        referral_id = (
            envelope.get("referral_id")
            if isinstance(envelope, Mapping)
            else getattr(envelope, "referral_id", None)
        )
        if isinstance(body, CaseBody):
            items: Any = body.items
        elif isinstance(body, Mapping) and "ciphertext" not in body:
            items = body.get("items")
        else:
            return data
        if not isinstance(referral_id, str) or not isinstance(items, (list, tuple)):
            return data
        filled = _with_item_ids(referral_id, items)
        if filled is None:
            return data
        if isinstance(body, CaseBody):
            return {**data, "body": body.model_copy(update={"items": tuple(filled)})}
        return {**data, "body": {**body, "items": filled}}

    @model_validator(mode="after")
    def _routable(self) -> Self:
        items = self.body.items if isinstance(self.body, CaseBody) else ()
        traced = any(i.hosting is not None and (i.hosting.country or i.hosting.ip) for i in items)
        if not self.envelope.jurisdictions and not traced:
            raise ValueError(
                "needs at least one jurisdiction or one item with hosting evidence (ip or country)"
            )
        return self

    @property
    def referral_id(self) -> str:
        """Shortcut to ``envelope.referral_id``."""
        return self.envelope.referral_id


# -- status and ledger -----------------------------------------------------------------------


class ItemOutcome(_AvroModel):
    """What became of one reported item: removed, still online (moved?), not found, not illegal.

    ``observed_at`` is when it was removed, checked or assessed; ``hosting`` (only
    for STILL_ONLINE) says where a moved item is hosted now; ``assessed_under``
    (only for NOT_ILLEGAL) names whose law it is not illegal under.
    """

    item_id: UuidStr
    outcome: ItemOutcomeKind
    observed_at: PastTimestamp
    hosting: HostingEvidence | None = None
    assessed_under: Country | None = None

    @property
    def moved(self) -> bool:
        """True if the item is still online at another host."""
        return self.hosting is not None

    @model_validator(mode="after")
    def _outcome_rules(self) -> Self:
        if self.hosting is not None:
            if self.outcome is not ItemOutcomeKind.STILL_ONLINE:
                raise ValueError("hosting is only for STILL_ONLINE (where a moved item is now)")
            if not (self.hosting.ip or self.hosting.country):
                raise ValueError("a moved item's hosting needs an ip or a country")
        if self.outcome is ItemOutcomeKind.NOT_ILLEGAL and self.assessed_under is None:
            raise ValueError("NOT_ILLEGAL needs assessed_under (whose law)")
        if self.assessed_under is not None and self.outcome is not ItemOutcomeKind.NOT_ILLEGAL:
            raise ValueError("assessed_under is only for NOT_ILLEGAL")
        return self


class StatusUpdate(_AvroModel):
    """A receipt or status update about one referral, routed back to its origin.

    ``item_outcomes`` (empty: about the referral as a whole) report items one by one.
    """

    referral_id: UuidStr
    case_id: CaseId
    emitted_by: OrgId
    emitted_at: PastTimestamp
    status: ReferralStatus
    reason_code: Code | None = None
    note: LongText | None = None
    next_update_due: Timestamp | None = None
    destination_org: OrgId | None = None
    origin_org: OrgId
    item_outcomes: tuple[ItemOutcome, ...] = ()
    #: The version of the referral this update is about (None: version 1).
    referral_version: Annotated[int, Field(ge=1, le=2_147_483_647)] | None = None
    #: What the update says, sealed for its origin (:mod:`broker.security.status_seal`).
    sealed: SealedBody | None = None

    @model_validator(mode="after")
    def _status_rules(self) -> Self:
        # Sealed, the content (destination, reason) is inside: only its origin checks it.
        if self.sealed is not None:
            return self
        if self.status is ReferralStatus.REROUTED and self.destination_org is None:
            raise ValueError("REROUTED needs destination_org")
        if self.status is ReferralStatus.DELAYED and self.reason_code is None:
            raise ValueError("DELAYED needs a reason_code (a delay must be announced with reasons)")
        ids = [o.item_id for o in self.item_outcomes]
        if len(set(ids)) != len(ids):
            raise ValueError("an item has two outcomes in one update")
        return self

    def outcome_of(self, item_id: str) -> ItemOutcome | None:
        """The outcome this update reports for ``item_id``, if any."""
        return next((o for o in self.item_outcomes if o.item_id == item_id), None)


class HandoverEvent(_AvroModel):
    """One hop on record; never carries payload content."""

    event_id: UuidStr
    referral_id: UuidStr
    case_id: CaseId
    event: HandoverEventType
    actor: OrgId
    from_party: OrgId | None = None
    to_party: OrgIdList | None = None
    topic: Annotated[str, Field(min_length=1, max_length=249)] | None = None
    partition: Annotated[int, Field(ge=0, le=2_147_483_647)] | None = None
    offset: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    reason: ShortText | None = None
    trace_id: Annotated[str, Field(pattern=_TRACE_ID)] | None = None
    span_id: Annotated[str, Field(pattern=_SPAN_ID)] | None = None
    at: PastTimestamp


class HandoverRoute(_AvroModel):
    """What several events of one packed batch have in common."""

    event: HandoverEventType
    from_party: str | None = None
    to_party: str | None = None
    topic: str | None = None
    reason: str | None = None


class PackedHandovers(_AvroModel):
    """A batch's handover events in columns: the distinct routes once, then one entry each."""

    routes: tuple[HandoverRoute, ...]
    route: tuple[int, ...]
    referral_id: tuple[str, ...]
    case_id: tuple[str, ...]
    partition: tuple[int, ...]
    offset: tuple[int, ...]
    trace_id: tuple[str | None, ...]
    at: tuple[int, ...]

    @model_validator(mode="after")
    def _columns_line_up(self) -> Self:
        n = len(self.route)
        columns = (self.referral_id, self.case_id, self.partition, self.offset, self.trace_id)
        if any(len(c) != n for c in (*columns, self.at)):
            raise ValueError("columns of unequal length")
        if any(not 0 <= r < len(self.routes) for r in self.route):
            raise ValueError("a route index outside routes")
        return self


class HandoverBatch(_AvroModel):
    """Several handover events of one actor in one ledger record (listed, or packed)."""

    actor: OrgId
    events: tuple[HandoverEvent, ...]
    packed: PackedHandovers | None = None


#: Record full name → model class.
MODEL_BY_RECORD: dict[str, type[_AvroModel]] = {
    REFERRAL: Referral,
    STATUS_UPDATE: StatusUpdate,
    HANDOVER_EVENT: HandoverEvent,
    HANDOVER_BATCH: HandoverBatch,
}


def model_from_avro(record_name: str, datum: Mapping[str, Any]) -> _AvroModel:
    """The model of a decoded datum, by record name (a ``Codec.deserializer`` hook)."""
    try:
        cls = MODEL_BY_RECORD[full_name(record_name)]
    except KeyError:
        raise ValidationFailed(f"no model for record {record_name}") from None
    return cls.from_avro(datum)


def parse_referral(data: Mapping[str, Any]) -> Referral:
    """Validate a referral dict (ValidationFailed with one line per problem)."""
    return parse_model(Referral, data)


def parse_status_update(data: Mapping[str, Any]) -> StatusUpdate:
    """Validate a status update dict."""
    return parse_model(StatusUpdate, data)


def parse_handover_event(data: Mapping[str, Any]) -> HandoverEvent:
    """Validate a handover event dict."""
    return parse_model(HandoverEvent, data)
