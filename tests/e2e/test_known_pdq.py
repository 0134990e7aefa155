"""PDQ near-duplicates across two hotlines on the real broker (issue 24, the PDQ must-show).

hl-a publishes images by their PDQ hash; hl-b later publishes copies with 0–31 flipped
bits and others with 40 or more (new exact hashes, new URLs: only PDQ can match).
police-fr receives both: it holds both hashes, so it confirms each candidate with the real
Hamming distance — the near copies are marked near-duplicate with their distance, the far
ones not at all. hl-b holds only its own hashes: it is told "possible near-duplicate held
by hl-a — ask them", never "previously assessed". No PDQ hash is on any topic.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.known_net import RECEIVER, _Net, _publisher, _receive, _sync, _topic_bytes
from broker.config import Settings
from broker.kafka import clients
from broker.known.index import NEAR, POSSIBLE
from broker.routing.router import Router
from broker.wire.codec import Codec
from cli.main import app
from tests.support.kafka import cli_env
from tests.support.known import known_network, running_evaluator

pytestmark = pytest.mark.slow

NEAR_BITS = list(range(32))  # 0..31 flipped bits: near-duplicates
FAR_BITS = [40, 41, 44, 48, 56, 64, 80, 96, 112, 128]  # 40 or more: not


def _flip(rng: random.Random, pdq: bytes, bits: int) -> bytes:
    mask = sum(1 << p for p in rng.sample(range(256), bits))
    return (int.from_bytes(pdq, "big") ^ mask).to_bytes(32, "big")


def _document(org: str, country: str, pdqs: list[bytes], legal: str) -> dict[str, Any]:
    items = []
    for pdq in pdqs:
        seed = uuid.uuid4().bytes
        items.append(
            {
                "url": f"https://img.example.org/p/{seed.hex()}",
                "media_type": "IMAGE",
                "hashes": [
                    {"algorithm": "PDQ", "value": pdq.hex()},
                    {"algorithm": "SHA256", "value": hashlib.sha256(seed).hexdigest()},
                ],
                "hosting": {"country": "FR"},
            }
        )
    stamp = "2026-12-07T10:00:00.000Z" if org == "hl-a" else "2026-12-07T11:00:00.000Z"
    return {
        "envelope": {
            "case_id": f"pdq-{org}-{uuid.uuid4().hex[:8]}",
            "origin_org": org,
            "origin_country": country,
            "jurisdictions": [{"country": "FR", "basis": "HOSTING", "derived": False}],
            "priority": "NORMAL",
            "handling": {"tlp": "AMBER", "recipients": [], "handling_code": "H0"},
            "created_at": stamp,
        },
        "body": {
            "items": items,
            "classification": {
                "legal_status": legal,
                "assessed_under": None,
                "incident_type": "CSAM_IMAGERY",
                "annotations": [],
                "victim_age_group": "PREPUBESCENT",
            },
            "timeline": {"received_at": stamp, "assessed_at": stamp},
            "prior_actions": {},
            "summary": "Synthetic PDQ referral.",
        },
    }


def _chunks(xs: list[Any], n: int = 10) -> Iterator[list[Any]]:
    for at in range(0, len(xs), n):
        yield xs[at : at + n]


def test_pdq_copies_within_31_bits_are_marked_near_duplicates_and_40_plus_are_not(
    settings: Settings, tmp_path: Path
) -> None:
    settings, network = known_network(settings, connectors=True)
    rng = random.Random(2024)
    bits = NEAR_BITS + FAR_BITS
    originals = [rng.randbytes(32) for _ in bits]
    copies = [_flip(rng, o, b) for o, b in zip(originals, bits, strict=True)]
    codec = Codec.from_settings(settings)
    a_docs = [_document("hl-a", "NL", c, "BASELINE") for c in _chunks(originals)]
    b_docs = [_document("hl-b", "DE", c, "NOT_ILLEGAL") for c in _chunks(copies)]
    with ExitStack() as stack:
        stack.enter_context(running_evaluator(settings, network))
        router = Router(settings, network, codec, checkpoint_every=None)
        stop = threading.Event()
        thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
        thread.start()
        stack.callback(thread.join, 30)
        stack.callback(stop.set)
        producer = clients.producer(settings, role="pdq-e2e")
        stack.callback(producer.close)
        net = _Net(settings, network, codec, producer)
        for org in ("hl-a", "hl-b"):
            net.publishers[org] = _publisher(net, org, known=True)
            stack.callback(net.publishers[org].close)
        first = net.publishers["hl-a"].publish([(str(n), d) for n, d in enumerate(a_docs)])
        assert first.ok
        assert not first.known
        _sync(net, "hl-b")
        # hl-b's check before publishing: candidates it cannot confirm, only "ask hl-a".
        checked = tmp_path / "copies.jsonl"
        checked.write_text("".join(json.dumps(d) + "\n" for d in b_docs[:1]))
        check = CliRunner().invoke(
            app, ["check", str(checked), "--as", "hl-b"], env=cli_env(settings)
        )
        assert check.exit_code == 0, check.output
        assert "may hold known content: possible near-duplicate held by hl-a \u2014 ask them" in (
            check.output
        )
        assert "previously assessed" not in check.output
        second = net.publishers["hl-b"].publish([(str(n), d) for n, d in enumerate(b_docs)])
        assert second.ok
        told = list(second.known.values())
        assert told, "hl-b was told nothing of hl-a's near-duplicates"
        assert all(h.kind == POSSIBLE and h.holder == "hl-a" for h in told)
        assert all("previously assessed" not in h.line() for h in told)
        _receive(net, len(a_docs) + len(b_docs), 120).close()
        _sync(net, RECEIVER)
        for client in net.clients:
            client.close()
        for index in net.indexes.values():
            index.close()
        pdq_hex = {p.hex() for p in originals + copies}
        on_topics = sum(h.encode() in blob for blob in _topic_bytes(settings) for h in pdq_hex)
    assert on_topics == 0

    # police-fr holds both hashes: every near copy confirmed with its distance, no far copy.
    state = str(settings.state_dir)
    shown = CliRunner().invoke(app, ["--state-dir", state, "inbox", RECEIVER, "--json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output)
    marks = [m for r in rows for m in r["previously_assessed"]]
    assert all(m["kind"] == NEAR and m["holder"] == "hl-a" for m in marks)
    assert all(m["classification"] == "BASELINE" for m in marks)
    assert sorted(m["distance"] for m in marks) == NEAR_BITS  # 32 of 32; none of the far ten
    table = CliRunner().invoke(app, ["--state-dir", state, "inbox", RECEIVER])
    said = " ".join(table.output.split())  # the terminal wraps long lines
    assert "near-duplicate (distance 31 of 256) of an item previously assessed by hl-a" in said
    # referral show: the near-duplicate item of one of hl-b's referrals.
    b_rid = next(r["referral_id"] for r in rows if r["previously_assessed"])
    one = CliRunner().invoke(
        app, ["show", b_rid, "--as", RECEIVER, "--json"], env=cli_env(settings)
    )
    assert one.exit_code == 0, one.output
    items = json.loads(one.output)["items"]
    near = [i["previously_assessed"] for i in items if i["previously_assessed"]]
    assert near
    assert all(n["kind"] == NEAR and isinstance(n["distance"], int) for n in near)

    # Hidden from view, the liaison's choice: hl-b's first three referrals are near copies
    # only (0-29 bits); the fourth mixes near and far copies and stays; hl-a's five stay.
    hide = CliRunner().invoke(
        app, ["--state-dir", state, "inbox", RECEIVER, "--json", "--hide-known"]
    )
    assert hide.exit_code == 0, hide.output
    kept = json.loads(hide.stdout)
    assert len(rows) == 10
    assert len(kept) == 7
    assert "3 referral(s) holding only content assessed before hidden" in hide.stderr
    mixed = next(r for r in kept if r["previously_assessed"])  # 30, 31 near; 40+ far
    assert sorted(m["distance"] for m in mixed["previously_assessed"]) == [30, 31]
    hidden_show = CliRunner().invoke(
        app,
        ["show", mixed["referral_id"], "--as", RECEIVER, "--hide-known"],
        env=cli_env(settings),
    )
    assert hidden_show.exit_code == 0, hidden_show.output
    assert "2 item(s) assessed before hidden (--hide-known)" in hidden_show.output
    whole = CliRunner().invoke(
        app, ["show", mixed["referral_id"], "--as", RECEIVER, "--json"], env=cli_env(settings)
    )
    listed = json.loads(whole.output)
    near_ids = {i["item_id"] for i in listed["items"] if i["previously_assessed"]}
    assert len(near_ids) == 2
    cut = CliRunner().invoke(
        app,
        ["show", mixed["referral_id"], "--as", RECEIVER, "--json", "--hide-known"],
        env=cli_env(settings),
    )
    cut_json = json.loads(cut.stdout)
    assert cut_json["known_items_hidden"] == 2
    assert {i["item_id"] for i in cut_json["items"]} == (
        {i["item_id"] for i in listed["items"]} - near_ids
    )
    assert all(
        i["item_id"] not in hidden_show.output for i in listed["items"] if i["item_id"] in near_ids
    )
