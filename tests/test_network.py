"""The network file: the demo validates; every kind of problem is reported with its place."""

from __future__ import annotations

import pytest

from broker.errors import NetworkFileError
from broker.network import Network, parse_network
from broker.wire import topics
from tests.conftest import EXAMPLE_NETWORK

GOOD = """
[[organisations]]
id = "hl-aa"
name = "Hotline A"
role = "hotline"
country = "NL"

[[organisations]]
id = "pol-bb"
name = "Police B"
role = "police"
country = "DE"

[[organisations]]
id = "fb"
name = "Fallback"
role = "fallback"
country = "BE"

[routing]
fallback = "fb"
[routing.jurisdictions]
DE = ["pol-bb"]
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(NetworkFileError) as info:
        parse_network(text, "net.toml")
    return info.value.problems


def test_demo_network_is_valid_and_has_the_required_members(network: Network) -> None:
    roles = [o.role for o in network.organisations]
    assert roles.count("hotline") >= 3
    assert roles.count("police") >= 3
    assert network.fallback.role == "fallback"
    police_countries = {o.country for o in network.organisations if o.role == "police"}
    assert len(police_countries) >= 3


def test_minimal_network_parses() -> None:
    net = parse_network(GOOD)
    assert net.served() == ["DE"]
    assert net.receivers("DE") == ["pol-bb"]
    assert net.receivers("FR") == []
    assert net.subscriptions("fb") == [topics.UNASSIGNED]
    assert net.subscriptions("pol-bb") == ["referrals.to.DE", "referrals.to.DE.urgent"]


def test_required_topics_cover_every_lane_and_status_topic() -> None:
    net = parse_network(GOOD)
    req = net.required_topics(topics.TopicNames("x."))
    assert set(req) == {
        "x.referrals.intake",
        "x.referrals.unassigned",
        "x.referrals.deadletter",
        "x.status.intake",
        "x.handover.ledger",
        "x.referrals.to.DE",
        "x.referrals.to.DE.urgent",
        "x.status.to.hl-aa",
        "x.status.to.pol-bb",
        "x.status.to.fb",
    }
    assert req["x.handover.ledger"] == 1
    assert req["x.referrals.intake"] == 3


def test_bad_country_code_is_named_with_its_place() -> None:
    found = problems_of(GOOD.replace('country = "DE"', 'country = "XX"'))
    assert found == [
        "net.toml: organisations[1] (pol-bb).country: unknown ISO 3166-1 alpha-2 country code 'XX'"
    ]


def test_unknown_organisation_in_route() -> None:
    found = problems_of(GOOD.replace('DE = ["pol-bb"]', 'DE = ["pol-bb", "ghost"]'))
    assert found == ["net.toml: routing.jurisdictions.DE: unknown organisation 'ghost'"]


def test_duplicate_id() -> None:
    found = problems_of(GOOD.replace('id = "fb"', 'id = "hl-aa"'))
    assert found == [
        "net.toml: organisations[2] (hl-aa).id: duplicate organisation id 'hl-aa' "
        "(first at organisations[0])",
        "net.toml: routing.fallback: unknown organisation 'fb'",
    ]


def test_missing_fallback() -> None:
    found = problems_of(GOOD.replace('fallback = "fb"', ""))
    assert any("routing.fallback" in p and "fallback" in p for p in found)


def test_unknown_jurisdiction_code_in_routing() -> None:
    found = problems_of(GOOD.replace('DE = ["pol-bb"]', 'ZZ = ["pol-bb"]'))
    assert found == [
        "net.toml: routing.jurisdictions.ZZ: unknown ISO 3166-1 alpha-2 country code 'ZZ'"
    ]


def test_every_problem_is_reported_in_one_run() -> None:
    broken = (
        GOOD.replace('country = "DE"', 'country = "XX"')
        .replace('DE = ["pol-bb"]', 'DE = ["ghost"]')
        .replace('id = "fb"', 'id = "hl-aa"')
        .replace('role = "police"', 'role = "sheriff"')
    )
    found = problems_of(broken)
    joined = "\n".join(found)
    assert "country code 'XX'" in joined
    assert "unknown organisation 'ghost'" in joined
    assert "duplicate organisation id 'hl-aa'" in joined
    assert "organisations[1] (pol-bb).role" in joined
    assert len(found) >= 4
    assert all(p.startswith("net.toml: ") for p in found)


def test_not_toml_is_one_problem() -> None:
    found = problems_of("[[organisations]\nid=")
    assert len(found) == 1
    assert found[0].startswith("net.toml: not valid TOML")


def test_example_file_path_is_shipped() -> None:
    assert EXAMPLE_NETWORK.is_file()
