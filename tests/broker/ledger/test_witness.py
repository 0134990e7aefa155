"""Witnesses on the test broker: members cosign the router's tree head only when their own copy
of the ledger gives it, a second head for the same size (a split view) is refused by each and
named by ``ledger verify``, and the receipt carries two members' cosignatures."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka import clients
from broker.ledger.checkpoint import HeadWatcher
from broker.ledger.events import LedgerEmitter, handover_event
from broker.ledger.receipt import LedgerTree, ledger_origin
from broker.ledger.store import LedgerStore
from broker.ledger.treehead import TreeHead, sign_tree_head
from broker.ledger.witness import (
    TREEHEAD_KIND,
    WitnessBook,
    WitnessParts,
    send_note,
    tree_head_note,
)
from broker.network import Network, parse_network
from broker.operator.views import witness_report
from broker.security.keys import ROUTER, LiveKeys, LiveTrust, OrgKeys, key_dir
from broker.security.signing import ledger_signer
from cli.main import app
from tests.support.connectors import NETWORK_TOML, codec_for
from tests.support.kafka import cli_env, provision_network
from tests.support.security import give_keys

ROOT = Path(__file__).resolve().parents[3]
MEMBERS = ("hl-a", "police-nl")


def _keyed(settings: Settings, tmp_path: Path) -> tuple[Settings, Network]:
    trust = tmp_path / "trust.toml"
    give_keys(settings, trust, "hl-a", "hl-b", "police-nl", "police-de", "police-fr", ROUTER)
    text = NETWORK_TOML.replace("{webhook_url}", "http://127.0.0.1:9/hook").replace(
        "{republish_after}", "300"
    )
    text = text.replace(
        'name = "connector test network"',
        f'name = "witness test network"\nallow_plain = false\ntrust_file = "{trust}"',
    )
    network_file = tmp_path / "network.toml"
    network_file.write_text(text, encoding="utf-8")
    keyed = Settings(**{**settings.model_dump(), "network_file": network_file})
    network = parse_network(text, str(network_file))
    provision_network(keyed, network)
    return keyed, network


def _router_keys(settings: Settings) -> OrgKeys:
    keys = OrgKeys.load(key_dir(settings, ROUTER), ROUTER)
    assert keys is not None
    return keys


def test_a_split_view_is_refused_by_every_member_and_named_by_verify(
    settings: Settings, tmp_path: Path
) -> None:
    settings, network = _keyed(settings, tmp_path)
    codec = codec_for(settings)
    names = settings.topic_names()
    producer = clients.producer(settings, role="test-witness")
    keys = LiveKeys(key_dir(settings, "hl-a"), "hl-a")
    emitter = LedgerEmitter(producer, codec, names.ledger, signer=ledger_signer(keys, "hl-a"))
    rid = str(uuid.uuid4())
    for n in range(6):
        emitter.emit(
            handover_event(
                "PUBLISHED", referral_id=rid, case_id="case-w", actor="hl-a", from_party="hl-a",
                to_party="police-nl", topic=names.intake, partition=0, offset=n,
            )
        )  # fmt: skip
    producer.flush(10)
    router_store = tmp_path / "router-ledger.sqlite3"
    with LedgerStore(router_store) as store:
        store.sync(settings, codec, checkpoints=False)
        tree = LedgerTree.of(store)
    assert len(tree.tree) == 6
    router = _router_keys(settings)
    true_head = tree_head_note(tree, names.ledger, router)
    # The test double of a lying checkpointer: another root for the same size, signed.
    forged = sign_tree_head(
        TreeHead(ledger_origin(names.ledger), 6, bytes(32)), ROUTER, router.signing
    )
    send_note(producer, names.checkpoints, TREEHEAD_KIND, ROUTER, forged)
    send_note(producer, names.checkpoints, TREEHEAD_KIND, ROUTER, true_head)
    producer.flush(10)
    trust = LiveTrust(network, settings.network_file)
    watchers = []
    for org in MEMBERS:
        book = WitnessBook(settings.org_dir(org) / "heads.sqlite3", org)
        parts = WitnessParts(settings, LiveKeys(key_dir(settings, org), org), producer, codec, book)
        watcher = HeadWatcher(settings, org, trust, witness=parts)
        watcher.poll_once()
        watchers.append(watcher)
        assert (parts.cosigned, parts.refused) == (1, 1), org
        ((_, why),) = book.evidence()
        assert why == "root at 6 entries is not the ledger's"
    for watcher in watchers:
        watcher.stop()
    producer.close(5)
    runner, env = CliRunner(), cli_env(settings)
    assert runner.invoke(app, ["ledger", "sync"], env=env).exit_code == 0
    report = witness_report(settings, network)
    (split,) = report.splits.values()
    assert {bytes(h.root) for h in split} == {bytes(32), tree.tree.root()}
    true = next(h for h in split if h.root == tree.tree.root())
    fake = next(h for h in split if h.root == bytes(32))
    assert true.cosigners == set(MEMBERS)
    assert fake.cosigners == set()
    assert fake.refused_by == set(MEMBERS)
    verified = runner.invoke(app, ["ledger", "verify"], env=env)
    assert verified.exit_code == 1, verified.output
    assert "split view at 6 entries: the router signed 2 roots" in verified.output
    assert "refused by hl-a, police-nl" in verified.output
    as_json = json.loads(runner.invoke(app, ["ledger", "verify", "--json"], env=env).output)
    assert as_json["split_views"] == [6]


def test_the_receipt_carries_a_head_two_other_members_cosigned_and_verifies_alone(
    settings: Settings, tmp_path: Path
) -> None:
    settings, network = _keyed(settings, tmp_path)
    codec = codec_for(settings)
    names = settings.topic_names()
    producer = clients.producer(settings, role="test-witness")
    keys = LiveKeys(key_dir(settings, "police-nl"), "police-nl")
    emitter = LedgerEmitter(producer, codec, names.ledger, signer=ledger_signer(keys, "police-nl"))
    rid = str(uuid.uuid4())
    emitter.emit(
        handover_event(
            "DELIVERED", referral_id=rid, case_id="case-r", actor="police-nl", from_party="hl-a",
            to_party="police-nl", topic=names.jurisdiction("NL"), partition=0, offset=3,
        )
    )  # fmt: skip
    # Its RECEIVED, delivered to the origin later: the receipt still proves the referral's
    # own delivery, not its status's.
    origin_keys = LiveKeys(key_dir(settings, "hl-a"), "hl-a")
    LedgerEmitter(producer, codec, names.ledger, signer=ledger_signer(origin_keys, "hl-a")).emit(
        handover_event(
            "DELIVERED", referral_id=rid, case_id="case-r", actor="hl-a", from_party="police-nl",
            to_party="hl-a", topic=names.status("hl-a"), partition=0, offset=1, reason="RECEIVED",
        )
    )  # fmt: skip
    producer.flush(10)
    with LedgerStore(tmp_path / "router.sqlite3") as store:
        store.sync(settings, codec, checkpoints=False)
        note = tree_head_note(LedgerTree.of(store), names.ledger, _router_keys(settings))
    send_note(producer, names.checkpoints, TREEHEAD_KIND, ROUTER, note)
    producer.flush(10)
    trust = LiveTrust(network, settings.network_file)
    for org in ("hl-a", "hl-b", "police-nl"):
        book = WitnessBook(settings.org_dir(org) / "heads.sqlite3", org)
        parts = WitnessParts(settings, LiveKeys(key_dir(settings, org), org), producer, codec, book)
        watcher = HeadWatcher(settings, org, trust, witness=parts)
        watcher.poll_once()
        watcher.stop()
    producer.close(5)
    out = tmp_path / "receipt.json"
    env = cli_env(settings)
    made = CliRunner().invoke(app, ["receipt", rid, "--out", str(out)], env=env)
    assert made.exit_code == 0, made.output
    doc = json.loads(out.read_text())
    assert (doc["entry"]["actor"], doc["entry"]["topic"]) == ("police-nl", names.jurisdiction("NL"))
    assert set(doc["keys"]) == {ROUTER, "hl-a", "hl-b", "police-nl"}  # the actor signed its record
    verifier = [sys.executable, "-I", str(ROOT / "schemas" / "verify_receipt.py"), str(out)]
    held = subprocess.run(verifier, capture_output=True, text=True, timeout=60)
    assert held.returncode == 0, held.stdout + held.stderr
    assert "cosigned by 2 (hl-a, hl-b)" in held.stdout
    data = bytearray(out.read_bytes())
    at = data.index(b"cosignature") if b"cosignature" in data else data.index(b'"checkpoint"') + 20
    data[at] ^= 1
    out.write_bytes(bytes(data))
    broken = subprocess.run(verifier, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1
