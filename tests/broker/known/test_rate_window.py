"""The evaluator's rate window survives a restart (persisted per organisation)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from broker.config import Settings
from broker.kafka import clients
from broker.known.client import EvaluationClient
from broker.known.errors import EvaluationRefused
from broker.known.normalise import hash_input
from broker.known.ratestore import RateStore, rate_path
from tests.support.known import known_network, running_evaluator


def _inputs(n: int) -> list[bytes]:
    return [hash_input("sha256", hashlib.sha256(os.urandom(16)).hexdigest()) for _ in range(n)]


def test_a_restarted_evaluator_still_refuses_an_organisation_over_its_rate(
    settings: Settings,
) -> None:
    settings, network = known_network(settings, rate=50)
    producer = clients.producer(settings, role="test")
    client = EvaluationClient(settings, network, "hl-a", producer, timeout=30)
    with running_evaluator(settings, network):
        assert len(client.tokens(_inputs(40))) == 40
    # Restarted: hl-a has 10 left of its 50, not a fresh window.
    with running_evaluator(settings, network) as service:
        assert 9.9 < service.evaluator.allowance("hl-a") < 10.1
        with pytest.raises(EvaluationRefused, match="over its rate"):
            client.tokens(_inputs(20))
        assert len(client.tokens(_inputs(10))) == 10
    client.close()
    producer.close()
    path = rate_path(settings, "secretariat")
    rows = sqlite3.connect(path).execute("SELECT organisation FROM buckets").fetchall()
    assert rows == [("hl-a",)]  # counts and ids only


def test_the_store_round_trips_buckets(tmp_path: Path) -> None:
    store = RateStore(tmp_path / "r.sqlite3")
    store.save("hl-a", 12.5, 1000.0)
    store.save("hl-a", 2.0, 1001.0)
    store.save("hl-b", 7.0, 999.0)
    store.close()
    again = RateStore(tmp_path / "r.sqlite3")
    assert again.load() == {"hl-a": (2.0, 1001.0), "hl-b": (7.0, 999.0)}
    again.close()
