"""Synthetic test data: valid models and Hypothesis strategies built from the models.

Everything here is synthetic: hosts under ``example.org`` / ``.invalid``,
random hex hashes, neutral placeholder text.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from hypothesis import strategies as st

from broker.wire import models as m

__all__ = [
    "handover_events",
    "make_handover_event",
    "make_referral",
    "make_status_update",
    "referrals",
    "status_updates",
]


def _now_ms() -> datetime:
    now = datetime.now(UTC) - timedelta(minutes=1)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _host(n: int, domain: str = "example.org") -> str:
    """A synthetic host name under a reserved domain."""
    return f"host-{n}.{domain}"


def _hex(algorithm: m.HashAlgorithm) -> str:
    return secrets.token_hex(m.HASH_HEX_LENGTHS[algorithm] // 2)


def make_referral(**overrides: Any) -> m.Referral:
    """A valid synthetic Referral; keyword overrides replace envelope or body fields.

    Keys of :class:`~broker.wire.models.ReferralEnvelope` go to the envelope, keys of
    :class:`~broker.wire.models.CaseBody` to the body; ``envelope=``/``body=`` replace
    them whole.
    """
    now = _now_ms()
    n = secrets.randbelow(10_000)
    envelope: dict[str, Any] = {
        "referral_id": str(uuid.uuid4()),
        "case_id": f"case-{uuid.uuid4().hex[:12]}",
        # A member of the example network: its role decides where the referral goes.
        "origin_org": "hl-nl",
        "origin_country": "NL",
        "jurisdictions": [{"country": "DE", "basis": "HOSTING", "derived": False}],
        "priority": "NORMAL",
        "urgency_reason": None,
        "handling": {"tlp": "AMBER", "recipients": [], "handling_code": "H0"},
        "created_at": now,
        "external_refs": [{"system": "ICCAM", "id": f"iccam-{n}"}],
    }
    body: dict[str, Any] = {
        "items": [
            {
                "url": f"https://{_host(n)}/item/{n}",
                "media_type": "IMAGE",
                "hashes": [
                    {"algorithm": "SHA256", "value": _hex(m.HashAlgorithm.SHA256)},
                    {"algorithm": "MD5", "value": _hex(m.HashAlgorithm.MD5)},
                ],
                "hosting": {
                    "ip": "192.0.2.10",
                    "asn": 64500,
                    "provider": "Example Hosting",
                    "country": "DE",
                },
            }
        ],
        "classification": {
            "legal_status": "BASELINE",
            "assessed_under": None,
            "incident_type": "CSAM_IMAGERY",
            "annotations": [],
            "victim_age_group": "PREPUBESCENT",
        },
        "timeline": {"incident_at": None, "received_at": now, "assessed_at": now},
        "prior_actions": {"ntd_sent_at": None, "reported_to_le_at": None},
        "duplicate_of": None,
        "summary": "Synthetic test referral.",
    }
    env_keys = set(m.ReferralEnvelope.model_fields)
    body_keys = set(m.CaseBody.model_fields)
    data: dict[str, Any] = {"envelope": envelope, "body": body}
    for key, value in overrides.items():
        if key in ("envelope", "body"):
            data[key] = value.to_avro() if isinstance(value, m._AvroModel) else value
        elif key in env_keys:
            envelope[key] = value
        elif key in body_keys:
            body[key] = value
        else:
            raise KeyError(f"make_referral: unknown field {key}")
    return m.Referral.model_validate(data)


def make_status_update(**overrides: Any) -> m.StatusUpdate:
    """A valid synthetic RECEIVED receipt."""
    data: dict[str, Any] = {
        "referral_id": str(uuid.uuid4()),
        "case_id": f"case-{uuid.uuid4().hex[:12]}",
        "emitted_by": "police-de",
        "emitted_at": _now_ms(),
        "status": "RECEIVED",
        "origin_org": "hotline-nl",
        **overrides,
    }
    return m.StatusUpdate.model_validate(data)


def make_handover_event(**overrides: Any) -> m.HandoverEvent:
    """A valid synthetic ROUTED event."""
    data: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "referral_id": str(uuid.uuid4()),
        "case_id": f"case-{uuid.uuid4().hex[:12]}",
        "event": "ROUTED",
        "actor": "router",
        "from_party": "hotline-nl",
        "to_party": "police-de",
        "topic": "referrals.to.DE",
        "partition": 0,
        "offset": 42,
        "reason": "jurisdiction DE (HOSTING)",
        "trace_id": secrets.token_hex(16),
        "span_id": secrets.token_hex(8),
        "at": _now_ms(),
        **overrides,
    }
    return m.HandoverEvent.model_validate(data)


# -- Hypothesis strategies, built from the models -------------------------------------------

_COUNTRIES = ["DE", "NL", "FR", "US", "GB", "SE", "BR", "JP", "ZA", "AU", "IE", "PL"]
_ORGS = ["hotline-nl", "police-de", "police-fr", "secretariat", "router", "ecpat-se.hotline"]

countries = st.sampled_from(_COUNTRIES)
org_ids = st.sampled_from(_ORGS)
uuids = st.uuids().map(str)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2024, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=_SURROGATES), min_size=1, max_size=40
)
visible = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30
)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


hashes = st.sampled_from(list(m.HashAlgorithm)).flatmap(
    lambda a: st.builds(
        m.Hash,
        algorithm=st.just(a),
        value=st.binary(
            min_size=m.HASH_HEX_LENGTHS[a] // 2, max_size=m.HASH_HEX_LENGTHS[a] // 2
        ).map(bytes.hex),
    )
)
hosting = st.builds(
    m.HostingEvidence,
    ip=_opt(st.ip_addresses().map(str)),
    asn=_opt(st.integers(0, 4_294_967_295)),
    provider=_opt(text),
    country=_opt(countries),
)
classifications = st.builds(
    m.Classification,
    legal_status=st.sampled_from([s for s in m.LegalStatus if s is not m.LegalStatus.NATIONAL]),
    assessed_under=_opt(countries),
    incident_type=st.sampled_from(list(m.IncidentType)),
    annotations=st.lists(st.sampled_from(list(m.Annotation)), max_size=3).map(tuple),
    victim_age_group=st.sampled_from(list(m.VictimAgeGroup)),
)
items = st.builds(
    m.ReportedItem,
    url=st.builds(
        lambda n, path, tld: f"https://{_host(n, tld)}/{path}",
        st.integers(0, 10**6),
        st.from_regex(r"[a-z0-9/_.-]{0,30}", fullmatch=True),
        st.sampled_from(["example.org", "invalid"]),
    ),
    media_type=st.sampled_from(list(m.MediaType)),
    hashes=st.lists(hashes, max_size=3).map(tuple),
    hosting=_opt(hosting),
    # None: the referral derives the id (several items may share a URL; ids stay distinct).
    item_id=st.none() | st.uuids(version=4).map(str),
    classification=_opt(classifications),
)
handlings = st.builds(
    m.Handling,
    tlp=st.sampled_from(list(m.Tlp)),
    recipients=st.lists(org_ids, min_size=1, max_size=3, unique=True).map(tuple),
    handling_code=st.sampled_from(list(m.HandlingCode)),
)
jurisdictions = st.lists(
    st.builds(
        m.Jurisdiction,
        country=countries,
        basis=st.sampled_from(list(m.JurisdictionBasis)),
        derived=st.booleans(),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda j: (j.country, j.basis),
).map(tuple)
envelopes = st.builds(
    m.ReferralEnvelope,
    referral_id=uuids,
    case_id=visible,
    origin_org=org_ids,
    origin_country=countries,
    jurisdictions=jurisdictions,
    priority=st.sampled_from(list(m.Priority)),
    urgency_reason=_opt(text),
    handling=handlings,
    created_at=timestamps,
    external_refs=st.lists(
        st.builds(m.ExternalReference, system=st.sampled_from(list(m.ExternalSystem)), id=visible),
        max_size=2,
    ).map(tuple),
)
bodies = st.builds(
    m.CaseBody,
    items=st.lists(items, min_size=1, max_size=3).map(tuple),
    classification=classifications,
    timeline=st.builds(
        m.Timeline,
        incident_at=_opt(timestamps),
        received_at=timestamps,
        assessed_at=_opt(timestamps),
    ),
    prior_actions=st.builds(
        m.PriorActions, ntd_sent_at=_opt(timestamps), reported_to_le_at=_opt(timestamps)
    ),
    duplicate_of=_opt(uuids),
    summary=_opt(text),
)
referrals = st.builds(m.Referral, envelope=envelopes, body=bodies)
status_updates = st.builds(
    m.StatusUpdate,
    referral_id=uuids,
    case_id=visible,
    emitted_by=org_ids,
    emitted_at=timestamps,
    status=st.sampled_from(
        [
            s
            for s in m.ReferralStatus
            if s not in (m.ReferralStatus.REROUTED, m.ReferralStatus.DELAYED)
        ]
    ),
    reason_code=_opt(visible),
    note=_opt(text),
    next_update_due=_opt(timestamps),
    destination_org=_opt(org_ids),
    origin_org=org_ids,
    item_outcomes=st.lists(
        st.one_of(
            st.builds(
                m.ItemOutcome,
                item_id=uuids,
                outcome=st.sampled_from([m.ItemOutcomeKind.REMOVED, m.ItemOutcomeKind.NOT_FOUND]),
                observed_at=timestamps,
            ),
            st.builds(
                m.ItemOutcome,
                item_id=uuids,
                outcome=st.just(m.ItemOutcomeKind.STILL_ONLINE),
                observed_at=timestamps,
                hosting=_opt(hosting.filter(lambda h: bool(h.ip or h.country))),
            ),
            st.builds(
                m.ItemOutcome,
                item_id=uuids,
                outcome=st.just(m.ItemOutcomeKind.NOT_ILLEGAL),
                observed_at=timestamps,
                assessed_under=countries,
            ),
        ),
        max_size=3,
        unique_by=lambda o: o.item_id,
    ).map(tuple),
)
handover_events = st.builds(
    m.HandoverEvent,
    event_id=uuids,
    referral_id=uuids,
    case_id=visible,
    event=st.sampled_from(list(m.HandoverEventType)),
    actor=org_ids,
    from_party=_opt(org_ids),
    to_party=_opt(org_ids),
    topic=_opt(st.sampled_from(["referrals.intake", "referrals.to.DE", "status.to.hotline-nl"])),
    partition=_opt(st.integers(0, 2**31 - 1)),
    offset=_opt(st.integers(0, 2**63 - 1)),
    reason=_opt(text),
    trace_id=_opt(st.binary(min_size=16, max_size=16).map(bytes.hex)),
    span_id=_opt(st.binary(min_size=8, max_size=8).map(bytes.hex)),
    at=timestamps,
)
