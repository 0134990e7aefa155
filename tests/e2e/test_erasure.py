"""Erasure on request reaches every recipient, with proof (issue 27).

A signed network on the embedded broker: hotline ``hl-a`` sends 100 canary
referrals, each to six police recipients (inbox folders and SQLite case
tables). A forged ERASE (another member's signature) is refused. police-es's
connector is stopped; ``referral erase … --reason INCORRECT`` asks all six.
The five online answer ERASED within 60 s, police-es on its return; then hl-a
erases its own copies. A raw-byte scan of every state directory and of every
topic finds none of the canaries' URLs, hashes or summaries; ``ledger
verify`` is intact and the ledger holds each ERASE and ERASED hop.
"""

from __future__ import annotations

import json
import secrets
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.deadletter import H_STAGE
from broker.network import parse_network
from broker.origin.erase_request import ERASE_KIND, ErasureBook, erase_update
from broker.security.keys import ROUTER, OrgKeys, key_dir
from broker.security.signing import StatusContext, sign
from broker.wire.codec import Codec
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers
from cli.main import app
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import codec_for, referral_json, wait_for
from tests.support.kafka import cli_env, header, provision_network, read_topic, start_router
from tests.support.security import give_keys

pytestmark = pytest.mark.slow

runner = CliRunner()

POLICE = {
    "police-nl": ("NL", "inbox_folder"),
    "police-de": ("DE", "sqlite"),
    "police-fr": ("FR", "inbox_folder"),
    "police-be": ("BE", "sqlite"),
    "police-it": ("IT", "inbox_folder"),
    "police-es": ("ES", "sqlite"),
}
OFFLINE = "police-es"
COUNT = 100


def _network_toml(trust: Path) -> str:
    parts = [
        f"""[network]
name = "erasure test network"
allow_plain = false
trust_file = "{trust}"

[topics]
partitions = 2

[[organisations]]
id = "hl-a"
name = "Test Hotline A"
role = "hotline"
country = "NL"
[organisations.connectors.status_folder]
path = "orgs/hl-a/status"
[organisations.connectors.outbox]
republish_after = 1
check_interval = 0.5
"""
    ]
    for org, (country, kind) in POLICE.items():
        where = f'path = "orgs/{org}/' + ("inbox" if kind == "inbox_folder" else "cases.sqlite3")
        parts.append(
            f"""
[[organisations]]
id = "{org}"
name = "Test Police {country}"
role = "police"
country = "{country}"
[organisations.connectors.{kind}]
{where}"
"""
        )
    parts.append('\n[routing]\nfallback = "police-nl"\n[routing.jurisdictions]\n')
    parts += [f'{country} = ["{org}"]\n' for org, (country, _) in POLICE.items()]
    return "".join(parts)


def _canary() -> tuple[dict[str, Any], list[str]]:
    """A referral to all six whose URL, hash, provider and summary are unique markers."""
    tag = secrets.token_hex(8)
    data = referral_json("hl-a", "NL")
    item = data["body"]["items"][0]
    item["url"] = f"https://canary-{tag}.example.org/canary-path-{tag}"
    sha = secrets.token_hex(32)
    item["hashes"] = [{"algorithm": "SHA256", "value": sha}]
    item["hosting"]["provider"] = f"Canary Provider {tag}"
    data["body"]["summary"] = f"canary narrative {tag} with neutral words"
    data["envelope"]["jurisdictions"] = [
        {"country": "NL", "basis": "HOSTING", "derived": False},
        *(
            {"country": c, "basis": "VICTIM_LOCATION", "derived": False}
            for c, _ in list(POLICE.values())[1:]
        ),
    ]
    return data, [f"canary-{tag}", sha, f"canary narrative {tag}", tag]


def _answered(settings: Settings, rids: list[str]) -> dict[str, int]:
    """By recipient, how many of ``rids`` it answered ERASED for (hl-a's erasure book)."""
    book = ErasureBook.for_org(settings, "hl-a")
    try:
        wanted = set(rids)
        counts = dict.fromkeys(POLICE, 0)
        for s in book.states():
            if s.referral_id in wanted and s.answered_at is not None:
                counts[s.recipient] += 1
        return counts
    finally:
        book.close()


def _state_leaks(settings: Settings, markers: list[str]) -> list[str]:
    """The state files (of every organisation) holding any of ``markers`` in their raw bytes."""
    found = []
    for path in Path(settings.state_dir).rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            found += [str(path) for m in markers if m.encode() in blob]
    return found


def _forge(settings: Settings, codec: Codec, rid: str, case_id: str) -> bytes:
    """police-fr writes an "ERASE by hl-a" straight onto police-nl's lane, signed with its
    own key; the value sent."""
    datum = erase_update(rid, case_id, "hl-a", "police-nl", "INCORRECT").to_avro()
    value = codec.encode(STATUS_UPDATE, datum)
    fr = OrgKeys.load(key_dir(settings, "police-fr"), "police-fr")
    assert fr is not None
    headers = [
        (Headers.DESTINATION_ORGS, b"police-nl"),
        (Headers.RECORD_KIND, ERASE_KIND),
        *sign(fr.signing, fr.signing_id, StatusContext.of(datum), value),
    ]
    producer = clients.producer(settings, role="test-forger")
    try:
        topic = settings.topic_names().jurisdiction("NL")
        producer.send(topic, key=rid.encode(), value=value, headers=headers).get(timeout=10)
    finally:
        producer.close(5)
    return value


def _topic_bytes(settings: Settings) -> dict[str, bytes]:
    """Every record's raw value and headers, per topic of this test's namespace."""
    admin = clients.admin_client(settings)
    try:
        topics = [t for t in admin.list_topics() if t.startswith(settings.topic_prefix)]
    finally:
        admin.close()
    out = {}
    for topic in topics:
        blob = bytearray()
        for r in read_topic(settings, topic, idle=0.3, timeout=10):
            blob += r.value or b""
            for _, v in r.headers:
                blob += v
        out[topic] = bytes(blob)
    return out


def test_an_erasure_reaches_six_recipients_one_offline_and_leaves_nothing_readable(
    settings: Settings, tmp_path: Path
) -> None:
    trust = tmp_path / "trust.toml"
    give_keys(settings, trust, "hl-a", *POLICE, ROUTER)
    text = _network_toml(trust)
    (tmp_path / "network.toml").write_text(text)
    network = parse_network(text, "network.toml")
    provision_network(settings, network)
    env = {**cli_env(settings), "REFERRAL_NETWORK_FILE": str(tmp_path / "network.toml")}
    codec = codec_for(settings)
    canaries = [_canary() for _ in range(COUNT)]
    rids = [str(c[0]["envelope"]["referral_id"]) for c in canaries]
    markers = [m for _, ms in canaries for m in ms]
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        rts = {}
        for org in ("hl-a", *POLICE):
            rt = ConnectorRuntime(settings, network, org, codec, republish_after=1)
            stack.callback(rt.stop)
            rts[org] = rt.start()
        outbox = rts["hl-a"].outbox
        result = rts["hl-a"].publisher.publish([(f"row {n}", c[0]) for n, c in enumerate(canaries)])
        assert result.ok
        wait_for(lambda: all(outbox.is_complete(r) for r in rids), 90, "100 x 6 received")
        # The scan below sees the canaries where they are: in the recipients' stores.
        assert len(_state_leaks(settings, markers)) >= COUNT * len(POLICE)
        # A forged ERASE (police-fr signing as if hl-a) is refused and erases nothing.
        first = canaries[0][0]["envelope"]
        forged = _forge(settings, codec, rids[0], str(first["case_id"]))
        names = settings.topic_names()

        def refused() -> list[Any]:
            dead = read_topic(settings, names.deadletter, idle=0.3, timeout=5)
            return [d for d in dead if d.value == forged]

        wait_for(lambda: bool(refused()), 30, "the forged ERASE dead-lettered")
        assert header(refused()[0], H_STAGE) == "VERIFY"
        assert (Path(settings.state_dir) / "orgs/police-nl/inbox" / f"{rids[0]}.json").is_file()
        assert not rts["police-nl"].inbox.state("hl-a", rids[0]).erased
        rts[OFFLINE].stop()

        started = time.monotonic()
        asked = runner.invoke(
            app, ["erase", *rids, "--as", "hl-a", "--reason", "INCORRECT", "--json"], env=env
        )
        assert asked.exit_code == 0, asked.output
        rows = json.loads(asked.stdout)
        assert all(sorted(r["asked"]) == sorted(POLICE) for r in rows), rows
        online = [o for o in POLICE if o != OFFLINE]
        wait_for(
            lambda: all(_answered(settings, rids)[o] == COUNT for o in online),
            60,
            "ERASED from the five online recipients",
            step=0.5,
        )
        within = time.monotonic() - started
        assert _answered(settings, rids)[OFFLINE] == 0
        shown = json.loads(runner.invoke(app, ["outbox", "hl-a", "--json"], env=env).stdout)
        waiting = [e for e in shown if e.get("state") == "erasing"]
        assert len(waiting) == COUNT
        assert all(e["waiting_for_erasure"] == [OFFLINE] for e in waiting)

        # police-es comes back: the ERASE waited on its lane; it erases and answers.
        back = ConnectorRuntime(settings, network, OFFLINE, codec, republish_after=1)
        stack.callback(back.stop)
        back.start()
        wait_for(lambda: _answered(settings, rids)[OFFLINE] == COUNT, 60, "ERASED from police-es")
        wait_for(lambda: all(outbox.get(r) is None for r in rids), 30, "hl-a erased its own copies")
        shown = json.loads(runner.invoke(app, ["outbox", "hl-a", "--json"], env=env).stdout)
        assert {e["state"] for e in shown} == {"erased"}
        assert all(sorted(e["erased_by"]) == sorted(POLICE) for e in shown)
        table = runner.invoke(app, ["outbox", "hl-a"], env={**env, "COLUMNS": "200"}).stdout
        assert f"erasures by hl-a: 0 erasing, {COUNT} erased" in table

        def ledgered() -> list[dict[str, Any]]:
            runner.invoke(app, ["ledger", "sync"], env=env)
            out = runner.invoke(app, ["ledger", "show", "--json"], env=env).stdout
            return [e for e in json.loads(out) if e.get("reason") in ("ERASE INCORRECT", "ERASED")]

        wanted = COUNT * len(POLICE) * 5  # sent, routed, erased; answer sent, taken at origin
        wait_for(lambda: len(ledgered()) >= wanted, 60, "the ERASE/ERASED hops", step=1)
        hops = ledgered()
        verified = runner.invoke(app, ["ledger", "verify"], env={**env, "COLUMNS": "250"})
    assert within < 60
    assert verified.exit_code == 0, verified.output
    assert "ledger intact" in verified.stdout
    kinds = {(h["event"], h["reason"]) for h in hops}
    assert kinds == {
        ("STATUS_SENT", "ERASE INCORRECT"),
        ("STATUS_ROUTED", "ERASE INCORRECT"),
        ("DELIVERED", "ERASE INCORRECT"),
        ("STATUS_SENT", "ERASED"),
        ("DELIVERED", "ERASED"),
    }
    delivered = [h for h in hops if h["event"] == "DELIVERED" and h["reason"] == "ERASED"]
    assert {h["from_party"] for h in delivered} == set(POLICE)
    # Raw bytes: every file of every organisation's state, and every topic's records.
    leaks = _state_leaks(settings, markers)
    for topic, blob in _topic_bytes(settings).items():
        leaks += [topic for m in markers if m.encode() in blob]
    assert leaks == [], sorted(set(leaks))[:10]
