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
        "x.handover.checkpoints",
        "x.referrals.to.DE",
        "x.referrals.to.DE.urgent",
        "x.status.to.hl-aa",
        "x.status.to.pol-bb",
        "x.status.to.fb",
    }
    assert req["x.handover.ledger"] == 1
    assert req["x.handover.checkpoints"] == 1
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


# -- receivers by role and the role rules ----------------------------------------------------

RULE = """
[[routing.rules]]
from = "hotline"
basis = ["HOSTING"]
where = "abroad"
to = ["hotline", "police"]
"""


def test_receivers_by_role_from_a_table_or_a_list() -> None:
    table = parse_network(GOOD.replace('DE = ["pol-bb"]', 'DE = { police = ["pol-bb"] }'))
    listed = parse_network(GOOD)
    for net in (table, listed):
        assert net.receivers("DE") == ["pol-bb"]
        assert net.receivers("DE", "police") == ["pol-bb"]
        assert net.receivers("DE", "hotline") == []
        assert net.subscriptions("pol-bb") == ["referrals.to.DE", "referrals.to.DE.urgent"]
    assert not listed.by_role
    with_rules = parse_network(GOOD + RULE)
    assert with_rules.by_role
    rules = with_rules.routing.rules
    assert rules is not None
    assert rules[0].label() == "hotline/HOSTING/abroad -> hotline,police"
    assert with_rules.role_of("hl-aa") == "hotline"
    assert with_rules.role_of("ghost") is None


def test_the_example_network_serves_by_role() -> None:
    from broker.network import load_network

    net = load_network(EXAMPLE_NETWORK)
    assert net.by_role
    assert net.receivers("SE", "hotline") == ["hl-se"]
    assert net.receivers("SE", "police") == ["police-se"]
    for cc in ("NO", "DK", "FI"):
        assert net.receivers(cc, "police") == [f"police-{cc.lower()}"]
        assert net.receivers(cc, "hotline") == []
    assert net.fallback.id == "secretariat"
    assert "secretariat" not in {o for cc in net.served() for o in net.receivers(cc)}


# (case, replaced, replacement, the one expected problem)
ROUTING_PROBLEMS = [
    (
        "an organisation under another role",
        'DE = ["pol-bb"]',
        'DE = { hotline = ["pol-bb"] }',
        "routing.jurisdictions.DE.hotline: 'pol-bb' has role police, not hotline",
    ),
    (
        "an unknown role",
        'DE = ["pol-bb"]',
        'DE = { sheriff = ["pol-bb"] }',
        "routing.jurisdictions.DE.sheriff: unknown role (known: hotline, police, fallback)",
    ),
    (
        "neither a list nor a table",
        'DE = ["pol-bb"]',
        'DE = "pol-bb"',
        "routing.jurisdictions.DE: must be a list of organisation ids or a table of "
        "role = [organisation ids]",
    ),
    (
        "a role's receivers not a list",
        'DE = ["pol-bb"]',
        'DE = { police = "pol-bb" }',
        "routing.jurisdictions.DE.police: must be a list of organisation ids",
    ),
    (
        "an unknown organisation in a role table",
        'DE = ["pol-bb"]',
        'DE = { police = ["pol-bb", "ghost"] }',
        "routing.jurisdictions.DE.police: unknown organisation 'ghost'",
    ),
    (
        "an organisation listed twice",
        'DE = ["pol-bb"]',
        'DE = { police = ["pol-bb", "pol-bb"] }',
        "routing.jurisdictions.DE: an organisation is listed twice",
    ),
    (
        "an unknown sender role",
        RULE,
        RULE.replace('from = "hotline"', 'from = "sheriff"'),
        "routing.rules[0].from: Input should be 'hotline', 'police', 'fallback' or 'any'",
    ),
    (
        "an unknown basis",
        RULE,
        RULE.replace('"HOSTING"', '"HOSTING", "TELEPATHY"'),
        "routing.rules[0].basis: Input should be 'HOSTING', 'UPLOADER_LOCATION', "
        "'VICTIM_LOCATION', 'OFFENDER_LOCATION' or 'SERVICE_PROVIDER'",
    ),
    (
        "an unknown scope",
        RULE,
        RULE.replace('"abroad"', '"moon"'),
        "routing.rules[0].where: Input should be 'home', 'abroad' or 'any'",
    ),
    (
        "no receiving role",
        RULE,
        RULE.replace('to = ["hotline", "police"]', "to = []"),
        "routing.rules[0].to: Tuple should have at least 1 item after validation, not 0",
    ),
    (
        "a role twice",
        RULE,
        RULE.replace('to = ["hotline", "police"]', 'to = ["police", "police"]'),
        "routing.rules[0].to: a value is listed twice",
    ),
    (
        "an unknown key in a rule",
        RULE,
        RULE + 'colour = "red"\n',
        "routing.rules[0].colour: unknown key",
    ),
    (
        "a rule hidden by an earlier one",
        RULE,
        '[[routing.rules]]\nfrom = "any"\nto = ["police"]\n' + RULE,
        "routing.rules[1]: never used: routing.rules[0] already matches every referral it matches",
    ),
    (
        "a receiver no rule reaches",
        RULE,
        RULE.replace('to = ["hotline", "police"]', 'to = ["hotline"]'),
        "routing.jurisdictions.DE: 'pol-bb' never receives anything: no rule routes to role police",
    ),
    (
        "empty rules",
        RULE,
        "",
        "routing.rules: empty: every referral would go to the fallback",
    ),
]


@pytest.mark.parametrize(
    ("case", "old", "new", "problem"), ROUTING_PROBLEMS, ids=[p[0] for p in ROUTING_PROBLEMS]
)
def test_routing_problems_one_line_each(case: str, old: str, new: str, problem: str) -> None:
    text = (GOOD + RULE).replace(old, new)
    if case == "empty rules":
        text = text.replace("[routing]\n", "[routing]\nrules = []\n")
    assert problems_of(text) == [f"net.toml: {problem}"]
