"""The network file's [known] table: the evaluator must be a member; its topics are provisioned."""

from __future__ import annotations

import pytest

from broker.errors import NetworkFileError
from broker.network import load_network, parse_network
from broker.wire.topics import TopicNames
from tests.conftest import EXAMPLE_NETWORK


def test_the_demo_network_names_the_secretariat_as_evaluator_and_its_topics() -> None:
    network = load_network(EXAMPLE_NETWORK)
    assert network.known is not None
    assert network.known.evaluator == "secretariat"
    topics = network.required_topics(TopicNames("x."))
    assert {"x.known.evaluate", "x.known.evaluated", "x.match.tokens"} <= set(topics)
    assert network.topic_config("match.tokens") == {"cleanup.policy": "compact"}
    assert network.topic_config("known.evaluate") == {}


def test_an_evaluator_that_is_not_a_member_is_named() -> None:
    text = EXAMPLE_NETWORK.read_text().replace('evaluator = "secretariat"', 'evaluator = "nobody"')
    with pytest.raises(NetworkFileError, match=r"known\.evaluator: unknown organisation 'nobody'"):
        parse_network(text, "net.toml")


def test_without_known_there_are_no_known_topics() -> None:
    text = EXAMPLE_NETWORK.read_text()
    text = text[: text.index("# --- known content")]
    network = parse_network(text, "net.toml")
    assert network.known is None
    assert not any("known" in t or "match" in t for t in network.required_topics())
