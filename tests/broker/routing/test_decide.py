"""Routing rules, table-driven: pure function of an envelope and the network.

``NET`` routes flat (no ``[[routing.rules]]``: every listed receiver gets everything);
the shipped example network routes by role, rule by rule (``ROLE_CASES``).
"""

from __future__ import annotations

from typing import Any

import pytest

from broker.errors import RoutingError
from broker.network import Network, load_network, parse_network
from broker.routing.decide import DecisionCache, add_hosting_jurisdictions, country_of_ip, decide
from broker.wire.models import JurisdictionBasis
from broker.wire.topics import TopicNames
from tests.conftest import EXAMPLE_NETWORK

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
        "origin_org": kw.pop("origin_org", "hl-nl"),
        "origin_country": kw.pop("origin_country", "NL"),
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
        env(("NL", "HOSTING"), origin_org="police-de"),
        [("referrals.to.NL", ("police-nl", "hl-nl"))],
        "NL:HOSTING->lane",
    ),
    (
        "the sender never receives its own referral",
        env(("NL", "HOSTING"), ("DE", "HOSTING")),
        [("referrals.to.NL", ("police-nl",)), ("referrals.to.DE", ("police-de",))],
        "NL:HOSTING->lane; DE:HOSTING->lane",
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
    decision = decide(
        env(("DE", "HOSTING"), ("SE", "HOSTING"), ("US", "HOSTING"), ("DE", "VICTIM_LOCATION")),
        network,
    )
    assert decision.orgs == ("hl-de", "police-de", "hl-se", "secretariat")


# -- routing by role: the shipped example network's rules ------------------------------------

EXAMPLE = load_network(EXAMPLE_NETWORK)

# (case, envelope, expected [(topic, orgs)], expected reason)
ROLE_CASES: list[tuple[str, dict[str, Any], list[tuple[str, tuple[str, ...]]], str]] = [
    (
        "rule 1: hotline, hosted at home -> its own police",
        env(("NL", "HOSTING")),
        [("referrals.to.NL", ("police-nl",))],
        "NL:HOSTING->lane (rule 1)",
    ),
    (
        "rule 1: hotline, service provider at home -> its own police",
        env(("SE", "SERVICE_PROVIDER"), origin_org="hl-se", origin_country="SE"),
        [("referrals.to.SE", ("police-se",))],
        "SE:SERVICE_PROVIDER->lane (rule 1)",
    ),
    (
        "rule 2: hotline, hosted abroad -> the hosting country's hotline, not its police",
        env(("DE", "HOSTING")),
        [("referrals.to.DE", ("hl-de",))],
        "DE:HOSTING->lane (rule 2)",
    ),
    (
        "rule 2: hotline, hosting derived from an IP abroad -> that country's hotline",
        env(("SE", "HOSTING", True), origin_org="hl-de", origin_country="DE"),
        [("referrals.to.SE", ("hl-se",))],
        "SE:HOSTING(derived)->lane (rule 2)",
    ),
    (
        "rule 2: hosted where no hotline is -> the fallback, though the police serve the country",
        env(("FR", "HOSTING")),
        [("referrals.unassigned", ("secretariat",))],
        "FR:HOSTING->unassigned (rule 2)",
    ),
    (
        "rule 2: hosted in a country nobody serves -> the fallback",
        env(("US", "HOSTING", True), origin_org="hl-de", origin_country="DE"),
        [("referrals.unassigned", ("secretariat",))],
        "US:HOSTING(derived)->unassigned (rule 2)",
    ),
    (
        "rule 3: hotline, victim located abroad -> that country's police",
        env(("NO", "VICTIM_LOCATION")),
        [("referrals.to.NO", ("police-no",))],
        "NO:VICTIM_LOCATION->lane (rule 3)",
    ),
    (
        "rule 3: hotline, offender located at home -> its own police",
        env(("SE", "OFFENDER_LOCATION"), origin_org="hl-se", origin_country="SE"),
        [("referrals.to.SE", ("police-se",))],
        "SE:OFFENDER_LOCATION->lane (rule 3)",
    ),
    (
        "rule 3: hotline, uploader located abroad -> that country's police",
        env(("FI", "UPLOADER_LOCATION"), origin_org="hl-de", origin_country="DE"),
        [("referrals.to.FI", ("police-fi",))],
        "FI:UPLOADER_LOCATION->lane (rule 3)",
    ),
    (
        "rules 2+3: hosting and victim in one country share its topic",
        env(("DE", "HOSTING"), ("DE", "VICTIM_LOCATION")),
        [("referrals.to.DE", ("hl-de", "police-de"))],
        "DE:HOSTING,VICTIM_LOCATION->lane (rule 2,3)",
    ),
    (
        "rules 2+3: victim to the police, hosting to the fallback, in one country",
        env(("FR", "HOSTING"), ("FR", "VICTIM_LOCATION")),
        [("referrals.to.FR", ("police-fr",)), ("referrals.unassigned", ("secretariat",))],
        "FR:VICTIM_LOCATION->lane (rule 3); FR:HOSTING->unassigned (rule 2)",
    ),
    (
        "rule 4: police -> police, whatever the basis (not the hotline)",
        env(("DE", "HOSTING"), origin_org="police-fr", origin_country="FR"),
        [("referrals.to.DE", ("police-de",))],
        "DE:HOSTING->lane (rule 4)",
    ),
    (
        "rule 4: police <-> police among the Nordic points of contact",
        env(
            ("NO", "OFFENDER_LOCATION"),
            ("DK", "VICTIM_LOCATION"),
            origin_org="police-se",
            origin_country="SE",
        ),
        [("referrals.to.NO", ("police-no",)), ("referrals.to.DK", ("police-dk",))],
        "NO:OFFENDER_LOCATION->lane (rule 4); DK:VICTIM_LOCATION->lane (rule 4)",
    ),
    (
        "rule 4: the sender's own country stays with the sender",
        env(
            ("SE", "VICTIM_LOCATION"),
            ("FI", "OFFENDER_LOCATION"),
            origin_org="police-se",
            origin_country="SE",
        ),
        [("referrals.to.FI", ("police-fi",))],
        "FI:OFFENDER_LOCATION->lane (rule 4); sender-kept:SE",
    ),
    (
        "rule 4: police, a country without police -> the fallback",
        env(("US", "OFFENDER_LOCATION"), origin_org="police-nl"),
        [("referrals.unassigned", ("secretariat",))],
        "US:OFFENDER_LOCATION->unassigned (rule 4)",
    ),
    (
        "rule 5: the fallback passes hosting on to the hotline, else the police",
        env(("SE", "HOSTING"), ("FR", "HOSTING"), origin_org="secretariat"),
        [("referrals.to.SE", ("hl-se",)), ("referrals.to.FR", ("police-fr",))],
        "SE:HOSTING->lane (rule 5); FR:HOSTING->lane (rule 5)",
    ),
    (
        "rule 6: the fallback, anything else -> the police; unserved stays with it",
        env(("DK", "VICTIM_LOCATION"), ("US", "HOSTING"), origin_org="secretariat"),
        [("referrals.to.DK", ("police-dk",))],
        "DK:VICTIM_LOCATION->lane (rule 6); sender-kept:US",
    ),
    (
        "urgent: the role's receivers on the urgent lane",
        env(("DE", "HOSTING"), priority="URGENT"),
        [("referrals.to.DE.urgent", ("hl-de",))],
        "DE:HOSTING->urgent (rule 2)",
    ),
    (
        "RED: only named recipients among the role's receivers",
        env(("NL", "VICTIM_LOCATION"), ("DE", "HOSTING"), tlp="RED", recipients=["police-nl"]),
        [("referrals.to.NL", ("police-nl",))],
        "NL:VICTIM_LOCATION->lane (rule 3); RED-excluded:DE",
    ),
    (
        "an origin not in the network has no role: no rule matches, the fallback decides",
        env(("DE", "HOSTING"), origin_org="ghost-org"),
        [("referrals.unassigned", ("secretariat",))],
        "DE:HOSTING->unassigned",
    ),
]


@pytest.mark.parametrize(
    ("case", "envelope", "expected", "reason"), ROLE_CASES, ids=[c[0] for c in ROLE_CASES]
)
def test_role_rules(
    case: str, envelope: dict[str, Any], expected: list[tuple[str, tuple[str, ...]]], reason: str
) -> None:
    decision = decide(envelope, EXAMPLE)
    assert [(d.topic, d.orgs) for d in decision.destinations] == expected
    assert decision.reason == reason
    assert envelope["origin_org"] not in decision.orgs


def test_every_sender_role_and_basis_is_covered_by_a_rule_of_the_example() -> None:
    rules = EXAMPLE.routing.rules
    assert rules is not None
    for role in ("hotline", "police", "fallback"):
        for basis in JurisdictionBasis:
            for home in (True, False):
                assert any(r.matches(role, basis.value, home) for r in rules), (role, basis, home)


def test_a_referral_only_about_the_senders_own_country_is_not_routable() -> None:
    with pytest.raises(RoutingError, match="served by its sender"):
        decide(env(("SE", "VICTIM_LOCATION"), origin_org="police-se", origin_country="SE"), EXAMPLE)


RULES_NET = parse_network(
    """
[[organisations]]
id = "hl-aa"
name = "Hotline AA"
role = "hotline"
country = "NL"
[[organisations]]
id = "hl-bb"
name = "Hotline BB"
role = "hotline"
country = "DE"
[[organisations]]
id = "pol-bb"
name = "Police BB"
role = "police"
country = "DE"
[[organisations]]
id = "pol-cc"
name = "Police CC"
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
DE = ["hl-bb", "pol-bb"]
FR = ["pol-cc"]
[[routing.rules]]
from = "hotline"
basis = ["HOSTING"]
to = ["hotline", "police"]
[[routing.rules]]
from = "any"
basis = ["VICTIM_LOCATION"]
where = "abroad"
to = ["police"]
"""
)

# (case, envelope, expected [(topic, orgs)], expected reason)
MECHANICS: list[tuple[str, dict[str, Any], list[tuple[str, tuple[str, ...]]], str]] = [
    (
        "a list of receivers is read by each organisation's role",
        env(("DE", "HOSTING"), origin_org="hl-aa"),
        [("referrals.to.DE", ("hl-bb",))],
        "DE:HOSTING->lane (rule 1)",
    ),
    (
        "the next role in 'to' where the first has nobody",
        env(("FR", "HOSTING"), origin_org="hl-aa"),
        [("referrals.to.FR", ("pol-cc",))],
        "FR:HOSTING->lane (rule 1)",
    ),
    (
        "no rule for the basis: the fallback",
        env(("DE", "OFFENDER_LOCATION"), origin_org="hl-aa"),
        [("referrals.unassigned", ("fb",))],
        "DE:OFFENDER_LOCATION->unassigned",
    ),
    (
        "'any' sender matches an origin that is not in the network; abroad by origin_country",
        env(("DE", "VICTIM_LOCATION"), origin_org="ghost-org", origin_country="NL"),
        [("referrals.to.DE", ("pol-bb",))],
        "DE:VICTIM_LOCATION->lane (rule 2)",
    ),
    (
        "'abroad' does not match the sender's own country",
        env(("DE", "VICTIM_LOCATION"), origin_org="hl-bb", origin_country="DE"),
        [("referrals.unassigned", ("fb",))],
        "DE:VICTIM_LOCATION->unassigned",
    ),
    (
        "the sender's own part is kept while another basis of its country goes on",
        env(("DE", "HOSTING"), ("DE", "VICTIM_LOCATION"), origin_org="hl-bb", origin_country="DE"),
        [("referrals.unassigned", ("fb",))],
        "DE:VICTIM_LOCATION->unassigned; sender-kept:DE",
    ),
    (
        "the network's country of the sender wins over the envelope's origin_country",
        env(("DE", "VICTIM_LOCATION"), origin_org="hl-bb", origin_country="NL"),
        [("referrals.unassigned", ("fb",))],
        "DE:VICTIM_LOCATION->unassigned",
    ),
]


@pytest.mark.parametrize(
    ("case", "envelope", "expected", "reason"), MECHANICS, ids=[c[0] for c in MECHANICS]
)
def test_rule_mechanics(
    case: str, envelope: dict[str, Any], expected: list[tuple[str, tuple[str, ...]]], reason: str
) -> None:
    decision = decide(envelope, RULES_NET)
    assert [(d.topic, d.orgs) for d in decision.destinations] == expected
    assert decision.reason == reason


def test_the_decision_cache_keys_on_the_sender() -> None:
    cache = DecisionCache(EXAMPLE, TopicNames())
    from_hotline = cache.decide(env(("DE", "HOSTING")))
    from_police = cache.decide(env(("DE", "HOSTING"), origin_org="police-fr"))
    assert from_hotline.orgs == ("hl-de",)
    assert from_police.orgs == ("police-de",)
    assert cache.decide(env(("DE", "HOSTING"))) is from_hotline
