"""Issue 23 at the edges: escaped exports, ids re-checked on receipt, half-open floods.

The recipient is real: police-nl's connector runtime reads ``referrals.to.NL``
from the embedded broker; a hostile member writes straight to that topic.
"""

from __future__ import annotations

import csv
import io
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from broker.config import Settings
from broker.contracts import Delivery
from broker.kafka.deadletter import H_MESSAGE, H_STAGE, DeadLetterStage
from broker.network import Network
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher
from broker.receiver.inbox import Inbox
from broker.wire.codec import Codec
from broker.wire.models import Referral
from broker.wire.registry import REFERRAL
from broker.wire.topics import Headers
from cli.main import app
from connectors.drop_folder import DropFolderConfig, DropFolderSource
from connectors.http_guard import PER_ADDRESS
from connectors.http_intake import HttpIntakeConfig, HttpIntakeSource
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import ENV, TOKEN, inbox_files, referral_json, wait_for
from tests.support.kafka import read_topic

#: ESC, BEL, CR, a C1 control (CSI) and a bidi override, planted in a case id.
HOSTILE = "\x1b[31m\x07\r\x9b\u202e"
HOSTILE_ESCAPED = "\\x1b[31m\\x07\\x0d\\x9b\\u202e"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")
NETWORK = Path(__file__).resolve().parents[2] / "examples" / "network.toml"


def test_inbox_csv_escapes_controls_and_defuses_formulas(tmp_path: Path) -> None:
    rid = "0e3c2a4b-1f6d-4c8e-9a7b-5d2f1e0c3b4a"
    doc = {
        "envelope": {
            "referral_id": rid,
            "case_id": f"case-{HOSTILE}",
            "priority": "NORMAL",
            "external_refs": [{"system": "=HYPERLINK(1)", "id": "x"}],
        }
    }
    delivery = Delivery(rid, f"case-{HOSTILE}", "hl-se", b"\x00", doc, "referrals.to.NL", 0, 1)
    inbox = Inbox(tmp_path / "orgs" / "police-nl" / "inbox.sqlite3")
    inbox.record(delivery, "inbox_folder")
    inbox.close()
    outputs = {}
    for flag in ("--csv", "--wide", "--json"):
        result = CliRunner().invoke(
            app,
            ["--network", str(NETWORK), "--state-dir", str(tmp_path), "inbox", "police-nl", flag],
            env={"COLUMNS": "400", "TERM": "dumb"},
        )
        assert result.exit_code == 0, result.output
        outputs[flag] = result.stdout
        for raw in RAW:
            assert raw not in result.stdout, f"inbox {flag} printed a raw {raw!r}"
    rows = list(csv.DictReader(io.StringIO(outputs["--csv"])))
    assert rows[0]["case_id"] == f"case-{HOSTILE_ESCAPED}"
    assert rows[0]["external_refs"] == "'=HYPERLINK(1):x"
    assert HOSTILE_ESCAPED in outputs["--wide"]


def test_sink_refuses_a_misshapen_case_id_on_receipt(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    names = ready.topic_names()
    topic = names.jurisdiction("NL")

    def send(case_id: str) -> str:
        datum = Referral.model_validate(referral_json("hl-a", "NL")).to_avro()
        rid = str(datum["envelope"]["referral_id"])
        datum["envelope"]["case_id"] = case_id
        producer.send(
            topic,
            key=rid.encode(),
            value=codec.encode(REFERRAL, datum),
            headers=[(Headers.DESTINATION_ORGS, b"police-nl"), (Headers.REFERRAL_ID, rid.encode())],
        )
        return rid

    bad = [send(f"case-{HOSTILE}"), send("x" * 129), send("with space")]
    good = send("case-fine")
    producer.flush(10)
    runtime = ConnectorRuntime(ready, net, "police-nl", codec, env=ENV).start()
    try:
        wait_for(
            lambda: any(p.stem == good for p in inbox_files(ready, "police-nl")),
            60,
            "the well-shaped referral delivered",
        )
        dead = read_topic(ready, names.deadletter, at_least=3, timeout=30)
    finally:
        runtime.stop()
    assert {p.stem for p in inbox_files(ready, "police-nl")} == {good}
    assert len(dead) == 3
    for record in dead:
        headers = dict(record.headers)
        assert headers[H_STAGE].decode() == DeadLetterStage.SINK_DECODE
        message = headers[H_MESSAGE].decode()
        assert message.startswith("envelope.case_id: not 1-128 printable"), message
        assert "\n" not in message
        assert "x" * 20 not in message
        assert "\x1b" not in message
    inbox = Inbox(Path(ready.state_dir) / "orgs" / "police-nl" / "inbox.sqlite3")
    try:
        assert all(inbox.state("hl-a", rid).versions == {} for rid in bad)
    finally:
        inbox.close()


# -- the HTTP intake under a flood of half-open connections ---------------------------------------


def _half_open(port: int, source: str) -> socket.socket:
    """A connection from ``source`` that never sends a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _first_line(sock: socket.socket) -> bytes:
    """The first line of what the server sends before closing (b'' if it only closed)."""
    out = b""
    try:
        while chunk := sock.recv(4096):
            out += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return out.split(b"\r\n")[0]


@contextmanager
def _intake(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> Iterator[HttpIntakeSource]:
    publisher = Publisher(ready, net, "hl-b", codec, producer, Outbox.for_org(ready, "hl-b"))
    source = HttpIntakeSource(HttpIntakeConfig(token_env="TEST_TOKEN_HL_B"), publisher, ENV)
    source.open()
    try:
        yield source
    finally:
        source.close()
        publisher.close()


def _hotline(source: HttpIntakeSource) -> httpx.Client:
    """The hotline's own system: the right token, from another loopback address."""
    return httpx.Client(
        base_url=source.url,
        transport=httpx.HTTPTransport(local_address="127.0.0.2"),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )


def _post_all(client: httpx.Client, n: int) -> list[int]:
    """``n`` POSTs on a kept-alive connection and ``n`` each on a new one, then ``/health``."""
    out = []
    for _ in range(n):
        out.append(client.post("/referrals", json=referral_json("hl-b", "NL")).status_code)
        with httpx.Client(
            base_url=client.base_url,
            transport=httpx.HTTPTransport(local_address="127.0.0.2"),
            headers=client.headers,
            timeout=10,
        ) as fresh:
            out.append(fresh.post("/referrals", json=referral_json("hl-b", "NL")).status_code)
    with httpx.Client(
        base_url=client.base_url, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    ) as fresh:
        out.append(fresh.get("/health").status_code)
    return out


@pytest.mark.parametrize("flood", [64, 200])
def test_half_open_flood_from_one_address_does_not_lock_the_hotline_out(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer, flood: int
) -> None:
    with _intake(ready, net, codec, producer) as source, _hotline(source) as hotline:
        assert source.port is not None
        answers = _post_all(hotline, 2)  # a kept-alive, authenticated connection
        socks = [_half_open(source.port, "127.0.0.1") for _ in range(flood // 2)]
        answers += _post_all(hotline, 7)
        socks += [_half_open(source.port, "127.0.0.1") for _ in range(flood - flood // 2)]
        answers += _post_all(hotline, 7)
        assert answers == [202] * 4 + [200] + ([202] * 14 + [200]) * 2
        # From one address at most 16 are kept: the oldest were shed with a 503 ...
        kept = PER_ADDRESS
        for sock in socks[: flood - kept]:
            assert _first_line(sock) == b"HTTP/1.1 503 Service Unavailable"
        # ... and the newest are still open and served.
        for sock in socks[flood - kept :]:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _first_line(sock) == b"HTTP/1.1 200 OK"


def test_half_open_flood_from_many_addresses_leaves_room_for_the_hotline(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    with _intake(ready, net, codec, producer) as source, _hotline(source) as hotline:
        assert source.port is not None
        answers = _post_all(hotline, 1)
        # 200 silent connections from 200 addresses: the total limit (64) is reached
        socks = [_half_open(source.port, f"127.0.{1 + n // 200}.{1 + n % 200}") for n in range(200)]
        answers += _post_all(hotline, 14)
        assert answers == [202, 202, 200] + [202] * 28 + [200]
        # the oldest were shed; the hotline's authenticated connection was kept throughout
        assert _first_line(socks[0]) == b"HTTP/1.1 503 Service Unavailable"
        open_now = socks[-(64 - 64 // 4) + 2 :]
        for sock in open_now:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _first_line(sock) == b"HTTP/1.1 200 OK"
        for sock in socks:
            sock.close()


# -- the drop folder never moves a file that changed after it was read ----------------------------


def test_a_file_appended_while_published_is_not_moved_until_read_whole(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    publisher = Publisher(ready, net, "hl-a", codec, producer, Outbox.for_org(ready, "hl-a"))
    source = DropFolderSource(DropFolderConfig(path="drop", settle_seconds=0), ready, publisher)
    source.open()
    refs = [referral_json("hl-a", "NL") for _ in range(8)]
    export = source.path / "export.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in refs[:2]))
    publish = publisher.publish
    appended: list[int] = []

    def publish_while_the_writer_appends(rows: Any) -> Any:
        result = publish(rows)
        if not appended:  # the writer resumes while the first rows are being published
            with export.open("a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(r) + "\n" for r in refs[2:]))
            appended.append(1)
        return result

    publisher.publish = publish_while_the_writer_appends  # type: ignore[method-assign,assignment]
    try:
        assert source.poll() == 2
        assert export.exists(), "a file that changed after it was read was moved"
        assert not (source.path / "done" / "export.jsonl").exists()
        assert source.reports == []
        assert source.poll() == 6, "read again whole: the 2 published are repeats"
    finally:
        publisher.close()
    assert not export.exists()
    done = source.path / "done" / "export.jsonl"
    assert done.read_text().count("\n") == 8
    receipt_text = (done.parent / "export.jsonl.receipt.csv").read_text()
    receipt = list(csv.DictReader(io.StringIO(receipt_text)))
    assert [r["status"] for r in receipt] == ["repeat"] * 2 + ["new"] * 6
    keys = [r.key.decode() for r in read_topic(ready, ready.topic_names().intake, at_least=8)]
    assert sorted(keys) == sorted(r["envelope"]["referral_id"] for r in refs), "each once"
