"""Issue 23 at the edges: escaped exports, ids re-checked on receipt (the embedded broker).

The recipient is real: police-nl's connector runtime reads ``referrals.to.NL``
from the embedded broker; a hostile member writes straight to that topic.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from kafka import KafkaProducer
from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka.deadletter import H_MESSAGE, H_STAGE, DeadLetterStage
from broker.network import Network
from broker.wire.codec import Codec
from broker.wire.models import Referral
from broker.wire.registry import REFERRAL
from broker.wire.topics import Headers
from cli.main import app
from connectors.base import Delivery
from connectors.inbox import Inbox
from connectors.runtime import ConnectorRuntime
from tests.kafka_helpers import read_topic
from tests.test_connectors_support import ENV, inbox_files, referral_json, wait_for

#: ESC, BEL, CR, a C1 control (CSI) and a bidi override, planted in a case id.
HOSTILE = "\x1b[31m\x07\r\x9b\u202e"
HOSTILE_ESCAPED = "\\x1b[31m\\x07\\x0d\\x9b\\u202e"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")
NETWORK = Path(__file__).resolve().parents[1] / "examples" / "network.toml"


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
