"""Routing rules, table-driven: pure function of an envelope and the network."""

from __future__ import annotations

from typing import Any

import pytest

from broker.errors import RoutingError
from broker.network import Network, parse_network
from broker.routing.decide import add_hosting_jurisdictions, country_of_ip, decide
from broker.wire.topics import TopicNames

NET = parse_network(
    """
[[organisations]]
id = "hl-nl"
name = "Hotline NL"
role = "hotline"
country = "NL"
[[organisations]]
id = "police-nl"
name = "Police NL"
role = "police"
country = "NL"
[[organisations]]
id = "police-de"
name = "Police DE"
role = "police"
country = "DE"
[[organisations]]
id = "police-fr"
name = "Police FR"
role = "police"
country = "FR"
[[organisations]]
id = "fb"
name = "Secretariat"
role = "fallback"
country = "BE"
[routing]
fallback = "fb"
[routing.jurisdictions]
NL = ["police-nl", "hl-nl"]
DE = ["police-de"]
FR = ["police-fr"]
"""
)


def env(*juris: tuple[str, str] | tuple[str, str, bool], **kw: Any) -> dict[str, Any]:
    handling = {
        "tlp": kw.pop("tlp", "AMBER"),
        "recipients": kw.pop("recipients", []),
        "handling_code": "H0",
    }
    return {
        "referral_id": "0b7e4f6c-0000-4000-8000-000000000001",
        "origin_org": "hl-nl",
        "priority": kw.pop("priority", "NORMAL"),
        "handling": handling,
        "jurisdictions": [
            {"country": j[0], "basis": j[1], "derived": j[2] if len(j) > 2 else False}
            for j in juris
        ],
        **kw,
    }


# (case, envelope, expected [(topic, orgs)], expected reason)
CASES: list[tuple[str, dict[str, Any], list[tuple[str, tuple[str, ...]]], str]] = [
    (
        "one served jurisdiction",
        env(("DE", "HOSTING")),
        [("referrals.to.DE", ("police-de",))],
        "DE:HOSTING->lane",
    ),
    (
        "fan-out to several jurisdictions, bases merged per country",
        env(("DE", "HOSTING"), ("FR", "VICTIM_LOCATION"), ("DE", "UPLOADER_LOCATION")),
        [("referrals.to.DE", ("police-de",)), ("referrals.to.FR", ("police-fr",))],
        "DE:HOSTING,UPLOADER_LOCATION->lane; FR:VICTIM_LOCATION->lane",
    ),
    (
        "urgent goes to the urgent lane",
        env(("FR", "HOSTING"), priority="URGENT"),
        [("referrals.to.FR.urgent", ("police-fr",))],
        "FR:HOSTING->urgent",
    ),
    (
        "HIGH priority stays on the ordinary lane",
        env(("FR", "HOSTING"), priority="HIGH"),
        [("referrals.to.FR", ("police-fr",))],
        "FR:HOSTING->lane",
    ),
    (
        "unserved jurisdictions share the unassigned topic for the fallback",
        env(("US", "HOSTING", True), ("JP", "OFFENDER_LOCATION"), ("DE", "HOSTING")),
        [("referrals.to.DE", ("police-de",)), ("referrals.unassigned", ("fb",))],
        "DE:HOSTING->lane; US:HOSTING(derived)+JP:OFFENDER_LOCATION->unassigned",
    ),
    (
        "codes are normalised",
        env((" de ", "HOSTING"), ("De", "SERVICE_PROVIDER")),
        [("referrals.to.DE", ("police-de",))],
        "DE:HOSTING,SERVICE_PROVIDER->lane",
    ),
    (
        "several receivers of one jurisdiction",
        env(("NL", "HOSTING")),
        [("referrals.to.NL", ("police-nl", "hl-nl"))],
        "NL:HOSTING->lane",
    ),
    (
        "RED reaches only named recipients",
        env(("NL", "HOSTING"), ("DE", "HOSTING"), tlp="RED", recipients=["police-nl"]),
        [("referrals.to.NL", ("police-nl",))],
        "NL:HOSTING->lane; RED-excluded:DE",
    ),
    (
        "RED to the fallback only when named",
        env(("US", "HOSTING"), ("FR", "HOSTING"), tlp="RED", recipients=["fb", "police-fr"]),
        [("referrals.to.FR", ("police-fr",)), ("referrals.unassigned", ("fb",))],
        "FR:HOSTING->lane; US:HOSTING->unassigned",
    ),
]


@pytest.mark.parametrize(
    ("case", "envelope", "expected", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_routing_rules(
    case: str, envelope: dict[str, Any], expected: list[tuple[str, tuple[str, ...]]], reason: str
) -> None:
    decision = decide(envelope, NET)
    assert [(d.topic, d.orgs) for d in decision.destinations] == expected
    assert decision.reason == reason


ERRORS = [
    ("unknown code", env(("XX", "HOSTING")), "jurisdictions[0].country: unknown country code 'XX'"),
    ("no jurisdiction", env(), "no derivable jurisdiction"),
    ("RED without recipients", env(("DE", "HOSTING"), tlp="RED"), "TLP RED without named"),
    (
        "RED to an unknown organisation",
        env(("DE", "HOSTING"), tlp="RED", recipients=["ghost"]),
        "not in the network",
    ),
    (
        "RED whose recipients serve none of the jurisdictions",
        env(("DE", "HOSTING"), tlp="RED", recipients=["police-fr"]),
        "none of the named recipients",
    ),
    (
        "long garbage code is not echoed",
        env(("https://x.example.org/secret-path", "HOSTING")),
        "(not a country code)",
    ),
]


@pytest.mark.parametrize(("case", "envelope", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_routing_errors(case: str, envelope: dict[str, Any], message: str) -> None:
    with pytest.raises(RoutingError) as info:
        decide(envelope, NET)
    assert message in str(info.value)
    assert "secret-path" not in str(info.value)


def test_namespace_prefixes_every_topic() -> None:
    decision = decide(env(("US", "HOSTING"), ("DE", "HOSTING")), NET, TopicNames("ns."))
    assert [d.topic for d in decision.destinations] == [
        "ns.referrals.to.DE",
        "ns.referrals.unassigned",
    ]


def test_hosting_jurisdictions_from_country_and_offline_ip() -> None:
    items = [
        {"hosting": {"country": "fr", "ip": None}},
        {"hosting": {"country": None, "ip": "8.8.8.8"}},
        {"hosting": {"country": None, "ip": "192.0.2.7"}},  # documentation range: no country
        {"hosting": None},
        {"hosting": {"country": "FR", "ip": "8.8.4.4"}},  # duplicate FR hosting
    ]
    out = add_hosting_jurisdictions([{"country": "DE", "basis": "VICTIM_LOCATION"}], items)
    assert out == [
        {"country": "DE", "basis": "VICTIM_LOCATION"},
        {"country": "FR", "basis": "HOSTING", "derived": False},
        {"country": "US", "basis": "HOSTING", "derived": True},
    ]
    decision = decide({"referral_id": "r", "jurisdictions": out}, NET)
    assert decision.reason == (
        "DE:VICTIM_LOCATION->lane; FR:HOSTING->lane; US:HOSTING(derived)->unassigned"
    )


def test_country_of_ip_handles_garbage() -> None:
    assert country_of_ip("8.8.8.8") == "US"
    assert country_of_ip("not an ip") is None
    assert country_of_ip("198.51.100.1") is None


def test_decision_orgs_lists_every_recipient_once(network: Network) -> None:
    decision = decide(env(("DE", "HOSTING"), ("SE", "HOSTING"), ("US", "HOSTING")), network)
    assert decision.orgs == ("police-de", "hl-se", "secretariat")
