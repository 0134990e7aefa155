"""The request topics are part of what the network needs (``referral topics provision``)."""

from __future__ import annotations

from broker.network import load_network, parse_network
from broker.wire.topics import TopicNames
from tests.broker.test_network import GOOD
from tests.conftest import EXAMPLE_NETWORK


def test_the_example_network_needs_the_request_topics_of_its_seven_points_of_contact() -> None:
    topics = load_network(EXAMPLE_NETWORK).required_topics(TopicNames("x."))
    wanted = {"x.requests.intake", "x.requests.deadletter"}
    wanted |= {f"x.requests.to.police-{cc}" for cc in ("nl", "de", "fr", "se", "no", "dk", "fi")}
    assert wanted <= set(topics)
    assert sum(t.startswith("x.requests.") for t in topics) == 9


def test_one_country_alone_needs_no_request_topics() -> None:
    network = parse_network(GOOD, "net.toml")  # one police organisation, in DE
    assert not any("requests." in t for t in network.required_topics())
