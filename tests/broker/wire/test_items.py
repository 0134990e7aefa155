"""Reported items with identities and their own classification; per-item outcomes in statuses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.errors import ValidationFailed
from broker.wire import models as m
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, STATUS_UPDATE, EmbeddedRegistry
from tests.support.factories import make_referral, make_status_update

RID = "0b7e4f6c-0000-4000-8000-000000000001"
HOST = "host-7.example.org"
#: Credentials in a URL, which normalisation drops.
USERINFO = "user:pw"
CODEC = Codec(EmbeddedRegistry())


def _item(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "media_type": "IMAGE", "hashes": [], "hosting": None, **extra}


def _body(referral: m.Referral) -> m.CaseBody:
    assert isinstance(referral.body, m.CaseBody)
    return referral.body


def _referral(*items: dict[str, Any], referral_id: str = RID) -> m.Referral:
    return make_referral(referral_id=referral_id, items=list(items))


# -- item ids --------------------------------------------------------------------------------


def test_item_id_is_uuid5_of_referral_id_and_normalised_url() -> None:
    url = f"https://{HOST}/gallery/1?page=2"
    referral = _referral(_item(url))
    expected = str(uuid.uuid5(m.ITEM_ID_NAMESPACE, f"{RID}\n{url}"))
    assert _body(referral).items[0].item_id == expected
    assert m.derive_item_id(RID, url) == expected
    assert uuid.UUID(expected).version == 5


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        (f"HTTPS://{HOST.upper()}/a", f"https://{HOST}/a"),
        (f"https://{HOST}:443/a", f"https://{HOST}/a"),
        (f"http://{HOST}:80/a", f"http://{HOST}/a"),
        (f"http://{HOST}:8080/a", f"http://{HOST}:8080/a"),
        (f"https://{HOST}/a#fragment", f"https://{HOST}/a"),
        (f"https://{USERINFO}@{HOST}/a", f"https://{HOST}/a"),
        (f"https://{HOST}", f"https://{HOST}/"),
        (f"https://{HOST}/A/b?Q=1", f"https://{HOST}/A/b?Q=1"),  # path and query kept as given
        ("http://[2001:DB8::1]:8080/x", "http://[2001:db8::1]:8080/x"),
    ],
)
def test_url_normalisation(given: str, normalised: str) -> None:
    assert m.normalise_url(given) == normalised
    assert m.derive_item_id(RID, given) == m.derive_item_id(RID, normalised)


def test_item_ids_are_stable_across_encodings_and_distinct_across_referrals() -> None:
    url = f"https://{HOST}/x"
    first = _referral(_item(url))
    again = m.Referral.from_avro(CODEC.decode(CODEC.encode(REFERRAL, first.to_avro()))[1])
    assert _body(again).items[0].item_id == _body(first).items[0].item_id
    other = _referral(_item(url), referral_id="0b7e4f6c-0000-4000-8000-000000000002")
    assert _body(other).items[0].item_id != _body(first).items[0].item_id


def test_the_same_url_twice_gets_distinct_ids_by_occurrence() -> None:
    url = f"https://{HOST}/same"
    body = _body(_referral(_item(url), _item(f"https://{HOST}/other"), _item(url + "#b")))
    ids = [i.item_id for i in body.items]
    assert len(set(ids)) == 3
    assert ids[0] == m.derive_item_id(RID, url)
    assert ids[2] == m.derive_item_id(RID, url, occurrence=2)


def test_a_given_item_id_is_kept_and_must_be_unique() -> None:
    given = "7d1f3a52-1111-4222-8333-444455556666"
    body = _body(_referral(_item(f"https://{HOST}/a", item_id=given)))
    assert body.items[0].item_id == given
    assert body.item(given).url == f"https://{HOST}/a"
    with pytest.raises(KeyError):
        body.item(RID)
    data = _referral(_item(f"https://{HOST}/a"), _item(f"https://{HOST}/b")).to_avro()
    for item in data["body"]["items"]:
        item["item_id"] = given
    with pytest.raises(ValidationFailed) as info:
        m.parse_referral(data)
    assert info.value.problems == ["body: items 0 and 1 have the same item_id"]


def test_item_id_must_be_a_uuid() -> None:
    data = _referral(_item(f"https://{HOST}/a")).to_avro()
    data["body"]["items"][0]["item_id"] = "item-1"
    with pytest.raises(ValidationFailed) as info:
        m.parse_referral(data)
    assert info.value.problems == ["body.items.0.item_id: not a UUID"]


def test_a_bad_url_is_reported_not_derived_from() -> None:
    data = _referral(_item(f"https://{HOST}/a")).to_avro()
    data["body"]["items"][0]["item_id"] = None
    data["body"]["items"][0]["url"] = "gopher://secret-host.invalid/x"
    with pytest.raises(ValidationFailed) as info:
        m.parse_referral(data)
    assert info.value.problems == ["body.items.0.url: URL scheme must be http or https"]
    assert "secret-host" not in str(info.value)


def test_a_body_outside_a_referral_keeps_missing_ids() -> None:
    body = m.CaseBody.model_validate(_referral(_item(f"https://{HOST}/a")).to_avro()["body"])
    bare = body.model_copy(update={"items": (body.items[0].model_copy(update={"item_id": None}),)})
    assert bare.items[0].item_id is None
    filled = m.Referral(envelope=make_referral(referral_id=RID).envelope, body=bare)
    assert _body(filled).items[0].item_id == body.items[0].item_id


# -- per-item classification ----------------------------------------------------------------


def test_an_item_without_classification_takes_the_referrals() -> None:
    own = {
        "legal_status": "NATIONAL",
        "assessed_under": "SE",
        "incident_type": "CSAM_VIDEO",
        "annotations": ["GENERATIVE_AI"],
        "victim_age_group": "PUBESCENT",
    }
    body = _body(
        _referral(_item(f"https://{HOST}/a"), _item(f"https://{HOST}/b", classification=own))
    )
    plain, assessed = body.items
    assert body.classification_of(plain) == body.classification
    assert body.classification_of(plain).legal_status is m.LegalStatus.BASELINE
    mine = body.classification_of(assessed)
    assert mine.legal_status is m.LegalStatus.NATIONAL
    assert mine.assessed_under == "SE"
    assert mine.annotations == (m.Annotation.GENERATIVE_AI,)


def test_an_items_classification_is_checked_like_the_referrals() -> None:
    data = _referral(_item(f"https://{HOST}/a")).to_avro()
    data["body"]["items"][0]["classification"] = {
        **data["body"]["classification"],
        "legal_status": "NATIONAL",
        "assessed_under": None,
    }
    with pytest.raises(ValidationFailed) as info:
        m.parse_referral(data)
    assert info.value.problems == [
        "body.items.0.classification: legal_status NATIONAL needs assessed_under (whose law)"
    ]


# -- per-item outcomes -----------------------------------------------------------------------

NOW = datetime.now(UTC) - timedelta(minutes=1)
ITEM = "7d1f3a52-1111-4222-8333-444455556666"


def _status(*outcomes: dict[str, Any]) -> m.StatusUpdate:
    return make_status_update(status="NTD_SENT", item_outcomes=list(outcomes))


def _outcome(kind: str, **extra: Any) -> dict[str, Any]:
    return {"item_id": ITEM, "outcome": kind, "observed_at": NOW, **extra}


def test_outcomes_of_three_items_round_trip_on_the_wire() -> None:
    referral = _referral(*(_item(f"https://{HOST}/{n}") for n in range(3)))
    a, b, c = (i.item_id for i in _body(referral).items)
    assert a is not None
    assert b is not None
    assert c is not None
    status = make_status_update(
        referral_id=referral.referral_id,
        status="NTD_SENT",
        item_outcomes=[
            {"item_id": a, "outcome": "REMOVED", "observed_at": NOW},
            {
                "item_id": b,
                "outcome": "STILL_ONLINE",
                "observed_at": NOW,
                "hosting": {"ip": "8.8.8.8", "country": "US"},
            },
            {"item_id": c, "outcome": "STILL_ONLINE", "observed_at": NOW},
        ],
    )
    data = CODEC.encode(STATUS_UPDATE, status.to_avro())
    back = m.StatusUpdate.from_avro(CODEC.decode(data, expected=STATUS_UPDATE)[1])
    assert back == status
    removed, moved, online = (back.outcome_of(i) for i in (a, b, c))
    assert removed is not None
    assert removed.outcome is m.ItemOutcomeKind.REMOVED
    assert moved is not None
    assert moved.moved
    assert moved.hosting is not None
    assert moved.hosting.country == "US"
    assert online is not None
    assert not online.moved
    assert back.outcome_of(RID) is None


@pytest.mark.parametrize(
    ("outcome", "problem"),
    [
        (
            _outcome("REMOVED", hosting={"country": "FR"}),
            "hosting is only for STILL_ONLINE (where a moved item is now)",
        ),
        (
            _outcome("STILL_ONLINE", hosting={"provider": "Example Hosting"}),
            "a moved item's hosting needs an ip or a country",
        ),
        (_outcome("NOT_ILLEGAL"), "NOT_ILLEGAL needs assessed_under (whose law)"),
        (_outcome("NOT_FOUND", assessed_under="DE"), "assessed_under is only for NOT_ILLEGAL"),
    ],
)
def test_outcome_rules(outcome: dict[str, Any], problem: str) -> None:
    data = _status().to_avro() | {"item_outcomes": [outcome]}
    with pytest.raises(ValidationFailed) as info:
        m.parse_status_update(data)
    assert info.value.problems == [f"item_outcomes.0: {problem}"]


def test_outcome_field_checks() -> None:
    data = _status().to_avro() | {
        "item_outcomes": [
            _outcome("REMOVED", item_id="item-1"),
            _outcome("NOT_ILLEGAL", assessed_under="XX"),
            _outcome("REMOVED", observed_at=datetime.now(UTC) + timedelta(days=1)),
        ]
    }
    with pytest.raises(ValidationFailed) as info:
        m.parse_status_update(data)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "item_outcomes.0.item_id",
        "item_outcomes.1.assessed_under",
        "item_outcomes.2.observed_at",
    ]


def test_one_outcome_per_item_and_update() -> None:
    data = _status().to_avro() | {
        "item_outcomes": [_outcome("REMOVED"), _outcome("NOT_FOUND")],
    }
    with pytest.raises(ValidationFailed) as info:
        m.parse_status_update(data)
    assert info.value.problems == ["(record): an item has two outcomes in one update"]
    ok = _status(_outcome("NOT_ILLEGAL", assessed_under="DE"))
    assert ok.item_outcomes[0].assessed_under == "DE"
    assert make_status_update().item_outcomes == ()


def test_a_sealed_bodys_item_ids_open_as_plain_strings() -> None:
    """The body codec of sealing reads item ids as ``str``, not ``uuid.UUID`` (sinks store JSON)."""
    from broker.security.rules import BodyCodec

    referral = _referral(_item(f"https://{HOST}/a"))
    codec = BodyCodec(EmbeddedRegistry())
    schema_id = codec.current_id()
    opened = codec.decode(schema_id, codec.encode(schema_id, referral.to_avro()["body"]))
    assert opened["items"][0]["item_id"] == _body(referral).items[0].item_id
    assert isinstance(opened["items"][0]["item_id"], str)
