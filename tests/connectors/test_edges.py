"""The edges on the embedded broker: one case one referral, complete files, hostile input.

Each "Must show" of issue 12 is a test here. The recipient is real: a router
thread and police-nl's connector runtime (inbox folder) run beside the sources,
so "one referral at the recipient" is counted in police-nl's inbox.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka.deadletter import DeadLetterStage, send_dead_letter
from broker.ledger.events import HandoverEventType, LedgerEmitter, handover_event
from broker.network import Network
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher, referral_id_for
from broker.receiver.inbox import Inbox
from broker.wire.codec import Codec
from broker.wire.models import Referral
from broker.wire.registry import REFERRAL
from broker.wire.topics import Headers
from cli.app import configure_logging
from cli.main import app
from connectors.drop_folder import DropFolderConfig, DropFolderSource
from connectors.formats import csv_row_to_referral
from connectors.http_intake import HttpIntakeConfig, HttpIntakeSource
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import (
    ENV,
    TOKEN,
    cli_env_for,
    inbox_files,
    referral_json,
    wait_for,
)
from tests.support.kafka import read_topic, start_router

#: Raw terminal controls planted in ids, headers and file names.
NASTY = "\x1b[31m\x1b]0;pwned\x07\r"
#: How they must look when printed.
NASTY_ESCAPED = "\\x1b[31m\\x1b]0;pwned\\x07\\x0d"


def _publisher(
    settings: Settings, net: Network, org: str, codec: Codec, producer: Any
) -> Publisher:
    return Publisher(settings, net, org, codec, producer, Outbox.for_org(settings, org))


@contextmanager
def recipient(settings: Settings, net: Network, codec: Codec) -> Iterator[ConnectorRuntime]:
    """The router and police-nl's connectors (inbox folder), running until the block ends."""
    router = start_router(settings, net, codec)
    runtime = ConnectorRuntime(settings, net, "police-nl", codec, env=ENV)
    try:
        yield runtime.start()
    finally:
        runtime.stop()
        router.stop()


def _delivered(settings: Settings) -> list[str]:
    return [p.stem for p in inbox_files(settings, "police-nl")]


def _settled_count(settings: Settings, want: int) -> list[str]:
    """police-nl's deliveries once ``want`` arrived and nothing more came for 2 s."""
    wait_for(lambda: len(_delivered(settings)) >= want, 60, f"{want} deliveries at police-nl")
    time.sleep(2.0)
    return _delivered(settings)


def _intake_keys(settings: Settings) -> list[str]:
    return [r.key.decode() for r in read_topic(settings, settings.topic_names().intake, idle=1.0)]


def _csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["case_id", "url", "hosting_country", "summary"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _row(case: str, url: str) -> dict[str, str]:
    return {"case_id": case, "url": url, "hosting_country": "NL", "summary": "synthetic"}


# -- one case, one referral -----------------------------------------------------------------------


def test_redropping_a_corrected_file_gives_one_referral_per_case(
    ready: Settings,
    net: Network,
    codec: Codec,
    producer: KafkaProducer,
    umask_022: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    Path(ready.state_dir).mkdir(parents=True, exist_ok=True)
    Path(ready.state_dir).chmod(0o755)
    publisher = _publisher(ready, net, "hl-a", codec, producer)
    source = DropFolderSource(DropFolderConfig(path="drop", settle_seconds=0), ready, publisher)
    source.open()
    cases = ["case-rd-1", "case-rd-2", "case-rd-3"]
    rows = [_row(c, f"https://rd.example.org/item-{i}") for i, c in enumerate(cases)]
    broken = [*rows[:2], {**rows[2], "url": "ftp://rd-2.example.org/item"}]
    with caplog.at_level(logging.WARNING), recipient(ready, net, codec):
        assert any("accessible by other users" in r.getMessage() for r in caplog.records), (
            "the connectors warn about a state directory others can read"
        )
        (source.path / "export.csv").write_text(_csv(broken))
        source.poll()
        first = source.reports[-1]
        assert first.rejected
        assert [p.label for p in first.result.published] == ["row 2", "row 3"]
        errors = (source.path / "rejected" / "export.csv.errors.txt").read_text()
        assert "  row 4: url: URL scheme must be http or https" in errors
        assert "rd-2.example.org" not in errors

        (source.path / "export.csv").write_text(_csv(rows))  # the analyst fixed row 4
        source.poll()
        second = source.reports[-1]
        assert not second.rejected
        assert [(p.label, p.repeat) for p in second.result.published] == [
            ("row 2", True),
            ("row 3", True),
            ("row 4", False),
        ]
        ids = [referral_id_for("hl-a", c) for c in cases]
        assert [p.referral_id for p in second.result.published] == ids
        assert (source.path / "done" / "export.csv").exists()
        delivered = _settled_count(ready, 3)
    assert sorted(delivered) == sorted(ids), "one referral per case at the recipient"
    assert sorted(_intake_keys(ready)) == sorted(ids), "each case published once"
    inbox = Inbox.for_org(ready, "police-nl")
    try:
        assert inbox.duplicates == 0
    finally:
        inbox.close()
    for path in inbox_files(ready, "police-nl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(inbox_files(ready, "police-nl")[0].parent.stat().st_mode) == 0o700
    publisher.close()


def test_reposting_with_and_without_idempotency_key_gives_one_referral(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    publisher = _publisher(ready, net, "hl-b", codec, producer)
    source = HttpIntakeSource(HttpIntakeConfig(token_env="TEST_TOKEN_HL_B"), publisher, ENV)
    source.open()
    one = referral_json("hl-b", "NL")
    del one["envelope"]["referral_id"]
    del one["envelope"]["origin_org"]
    rid = referral_id_for("hl-b", one["envelope"]["case_id"])
    body = json.dumps(one).encode()
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    keyed = {**auth, "Idempotency-Key": "synthetic-retry-1"}
    try:
        with recipient(ready, net, codec), httpx.Client(base_url=source.url, timeout=30) as client:
            first = client.post("/referrals", content=body, headers=keyed)
            assert first.status_code == 202, first.text
            assert first.json() == {
                "accepted": [{"referral_id": rid, "sent": True, "repeat": False}]
            }
            replay = client.post("/referrals", content=body, headers=keyed)
            assert (replay.status_code, replay.content) == (202, first.content), "the first answer"
            assert replay.headers["idempotent-replayed"] == "true"
            plain = client.post("/referrals", content=body, headers=auth)
            assert plain.status_code == 202
            assert plain.json()["accepted"] == [{"referral_id": rid, "sent": False, "repeat": True}]
            other = json.loads(body)
            other["body"]["summary"] = "synthetic, changed"
            changed = json.dumps(other).encode()
            clash = client.post("/referrals", content=changed, headers=keyed)
            assert clash.status_code == 409
            assert clash.headers["content-type"].startswith("application/problem+json")
            assert "another body" in clash.json()["detail"]
            amended = client.post("/referrals", content=changed, headers=auth)
            assert amended.status_code == 409, "same case, other content: an amendment"
            [problem] = amended.json()["problems"]
            assert problem["index"] == 0
            assert rid in problem["message"]
            assert "synthetic, changed" not in amended.text
            delivered = _settled_count(ready, 1)
    finally:
        source.close()
        publisher.close()
    assert delivered == [rid], "one referral at the recipient"
    assert _intake_keys(ready) == [rid], "published once"


def test_same_case_through_drop_folder_and_referral_publish_is_one_referral(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer, tmp_path: Path
) -> None:
    row = _row("case-two-ways", "https://two-ways.example.org/item")
    rid = referral_id_for("hl-a", "case-two-ways")
    publisher = _publisher(ready, net, "hl-a", codec, producer)
    source = DropFolderSource(DropFolderConfig(path="drop", settle_seconds=0), ready, publisher)
    source.open()
    env = cli_env_for(ready, tmp_path)
    export = tmp_path / "export.csv"
    export.write_text(_csv([row]))
    with recipient(ready, net, codec):
        (source.path / "export.jsonl").write_text(json.dumps(csv_row_to_referral(row)) + "\n")
        assert source.poll() == 1
        [published] = source.reports[-1].result.published
        assert (published.referral_id, published.repeat) == (rid, False)
        result = CliRunner().invoke(app, ["publish", str(export), "--as", "hl-a"], env=env)
        assert result.exit_code == 0, result.output
        assert f"{export}: 0 published, 1 repeat(s), 0 rejected" in result.output
        assert f"row 2: repeat of referral {rid}" in result.output
        delivered = _settled_count(ready, 1)
    publisher.close()
    assert delivered == [rid]
    assert _intake_keys(ready) == [rid]


# -- files still being written ---------------------------------------------------------------------


def _chunks(text: str) -> list[str]:
    """``text`` cut in the middle of every line: no chunk but the last ends a line."""
    cuts = [0]
    start = 0
    for line in text.splitlines(keepends=True):
        cuts.append(start + len(line) // 2)
        start += len(line)
    cuts.append(len(text))
    return [text[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def test_files_appended_in_chunks_are_published_whole_and_once(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    publisher = _publisher(ready, net, "hl-a", codec, producer)
    config = DropFolderConfig(path="drop", settle_seconds=0.3, settle_limit=4.0)
    source = DropFolderSource(config, ready, publisher)
    source.open()
    refs = [referral_json("hl-a", "NL") for _ in range(4)]
    jsonl = "".join(json.dumps(r) + "\n" for r in refs)
    cases = [f"case-chunk-{i}" for i in range(3)]
    csv_text = _csv([_row(c, f"https://chunk.example.org/x-{i}") for i, c in enumerate(cases)])
    want = [r["envelope"]["referral_id"] for r in refs] + [
        referral_id_for("hl-a", c) for c in cases
    ]
    pause = 0.8  # longer than settle_seconds
    finished: dict[str, float] = {}

    def write(name: str, text: str) -> None:
        with open(source.path / name, "a", encoding="utf-8") as fh:
            for i, chunk in enumerate(_chunks(text)):
                if i:
                    time.sleep(pause)
                fh.write(chunk)
                fh.flush()
        finished[name] = time.monotonic()

    (source.path / "stuck.jsonl").write_text(json.dumps(referral_json("hl-a", "NL")))
    writers = [
        threading.Thread(target=write, args=("export.jsonl", jsonl)),
        threading.Thread(target=write, args=("export.csv", csv_text)),
    ]
    moved: dict[str, float] = {}
    with recipient(ready, net, codec):
        for w in writers:
            w.start()
        deadline = time.monotonic() + 60
        while len(moved) < 3 and time.monotonic() < deadline:
            source.poll()
            for report in source.reports:
                moved.setdefault(report.source.name, time.monotonic())
            time.sleep(0.1)
        for w in writers:
            w.join(30)
        delivered = _settled_count(ready, len(want))
    publisher.close()
    for name in ("export.jsonl", "export.csv"):
        assert moved[name] >= finished[name], f"{name} was taken before it was whole"
        assert (source.path / "done" / name).exists()
    assert sorted(delivered) == sorted(want), "every complete referral delivered"
    assert sorted(_intake_keys(ready)) == sorted(want), "no partial publication, no repeats"
    stuck = [r for r in source.reports if r.source.name == "stuck.jsonl"]
    assert len(stuck) == 1
    assert stuck[0].refused is not None
    assert "the last line has no line break" in stuck[0].refused
    assert (source.path / "rejected" / "stuck.jsonl").exists()
    assert (
        "nothing of it was published"
        in (source.path / "rejected" / "stuck.jsonl.errors.txt").read_text()
    )


# -- only regular files inside the folder ---------------------------------------------------------


def test_symlinks_fifos_and_hard_links_are_refused_unread(
    ready: Settings,
    net: Network,
    codec: Codec,
    producer: KafkaProducer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher = _publisher(ready, net, "hl-a", codec, producer)
    source = DropFolderSource(DropFolderConfig(path="drop", settle_seconds=0), ready, publisher)
    source.open()
    marker = "outside-marker-7f3a9c"
    outside = tmp_path / "outside.csv"
    outside.write_text(_csv([_row(marker, f"https://{marker}.example.org/x")]))
    (source.path / "link.csv").symlink_to(outside)
    refusals = {"link.csv": "symbolic link", "pipe.json": "FIFO", "twin.csv": "hard links"}
    hostname = Path("/etc/hostname")
    secrets_seen = [marker]
    if hostname.is_file():
        (source.path / "host.jsonl").symlink_to(hostname)
        refusals["host.jsonl"] = "symbolic link"
        name = hostname.read_text().strip()
        if len(name) >= 8:
            secrets_seen.append(name)
    os.mkfifo(source.path / "pipe.json")
    os.link(outside, source.path / "twin.csv")

    counted: list[int] = []
    poller = threading.Thread(target=lambda: counted.append(source.poll()), daemon=True)
    with caplog.at_level(logging.WARNING, logger="referral.connectors.drop_folder"):
        poller.start()
        poller.join(10)
        assert not poller.is_alive(), "a FIFO must never block the drop folder"
    assert counted == [0]
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == len(refusals), lines
    for name, why in refusals.items():
        [line] = [x for x in lines if x.startswith(f"{name}:")]
        assert why in line
        moved = source.path / "rejected" / name
        assert os.path.lexists(moved), f"{name} moved aside"
        reason = (source.path / "rejected" / f"{name}.errors.txt").read_text()
        assert why in reason
    assert outside.read_text().count(marker) == 2, "the outside file is untouched"
    assert _intake_keys(ready) == [], "nothing published"
    for root, _dirs, files in os.walk(ready.state_dir):
        for f in files:
            path = Path(root) / f
            if not stat.S_ISREG(path.lstat().st_mode) or path.lstat().st_nlink > 1:
                continue  # the refused entries themselves
            data = path.read_bytes()
            for secret in secrets_seen:
                assert secret.encode() not in data, f"{secret!r} leaked into {path}"
    publisher.close()


# -- what the CLI prints is safe for a terminal ----------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_control_characters_are_escaped_in_tail_trace_dlq_and_logs(
    ready: Settings,
    net: Network,
    codec: Codec,
    producer: KafkaProducer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = ready.topic_names()
    env = {**cli_env_for(ready, tmp_path), "COLUMNS": "400"}
    # a hostile producer writes straight to the intake: no validation on the way
    datum = Referral.model_validate(referral_json("hl-a", "NL")).to_avro()
    rid = datum["envelope"]["referral_id"]
    datum["envelope"]["case_id"] = f"case-{NASTY}"
    headers = [
        (Headers.REFERRAL_ID, rid.encode()),
        (Headers.CASE_ID, f"case-{NASTY}".encode()),
        (Headers.ROUTE_REASON, NASTY.encode()),
    ]
    producer.send(
        names.intake, key=rid.encode(), value=codec.encode(REFERRAL, datum), headers=headers
    )
    LedgerEmitter(producer, codec, names.ledger).emit(
        handover_event(
            HandoverEventType.ROUTED,
            referral_id=rid,
            case_id=f"case-{NASTY}",
            actor="router",
            from_party="hl-a",
            topic=names.jurisdiction("NL"),
            reason=f"hosting {NASTY}",
        )
    )
    record = SimpleNamespace(
        topic=f"{names.intake}{NASTY}",
        partition=0,
        offset=7,
        key=rid.encode(),
        value=b"not framed",
        headers=[(Headers.REFERRAL_ID, f"{rid}{NASTY}".encode())],
    )
    send_dead_letter(
        producer, names.deadletter, record, DeadLetterStage.ROUTE_DECODE, ValueError(NASTY), "x"
    )
    producer.flush(10)

    outputs = {
        "tail": _cli(
            env, "tail", names.intake, "--from-beginning", "--max", "1", "--idle-exit", "10"
        ),
        "tail --decode": _cli(
            env,
            "tail",
            names.intake,
            "--decode",
            "--from-beginning",
            "--max",
            "1",
            "--idle-exit",
            "10",
        ),
        "trace": _cli(env, "trace", rid),
        "ledger show": _cli(env, "ledger", "show"),
        "dlq list": _cli(env, "dlq", "list"),
    }
    for command, out in outputs.items():
        for raw in ("\x1b", "\x07", "\r"):
            assert raw not in out, f"{command} printed a raw {raw!r}"
        assert NASTY_ESCAPED in out, f"{command}: {out}"

    # a file name with the same controls: the log line and the error file escape it
    publisher = _publisher(ready, net, "hl-a", codec, producer)
    source = DropFolderSource(DropFolderConfig(path="drop", settle_seconds=0), ready, publisher)
    source.open()
    name = f"x{NASTY}.csv"
    (source.path / name).write_text(_csv([_row("case-esc", "ftp://esc.example.org/x")]))
    configure_logging()
    capsys.readouterr()
    source.poll()
    logged = capsys.readouterr().err
    assert f"x{NASTY_ESCAPED}.csv: 1 rejected, 0 published" in logged
    assert "\x1b" not in logged
    errors = (source.path / "rejected" / f"{name}.errors.txt").read_text()
    assert errors.startswith(f"x{NASTY_ESCAPED}.csv: 1 of 1 input(s) rejected")
    assert "\x1b" not in errors
    publisher.close()


# -- the HTTP intake under hostile clients ---------------------------------------------------------


def _raw(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def _answer(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(4096):
        out += chunk
    sock.close()
    return out


def test_http_intake_under_hostile_clients_stays_healthy(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    publisher = _publisher(ready, net, "hl-b", codec, producer)
    config = HttpIntakeConfig(
        token_env="TEST_TOKEN_HL_B", header_timeout=3.0, body_timeout=1.0, max_connections=6
    )
    source = HttpIntakeSource(config, publisher, ENV)
    source.open()
    assert source.port is not None
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    try:
        with httpx.Client(base_url=source.url, timeout=10) as client:
            deep = b"[" * 50_000 + b"]" * 50_000
            r = client.post("/referrals", content=deep, headers=auth)
            assert r.status_code == 400
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "nested deeper" in r.json()["detail"]
            r = client.post(
                "/referrals", content=b"{}", headers={**auth, "Content-Type": "text/plain"}
            )
            assert r.status_code == 415

            # slow headers: cut off after header_timeout (3 s); health stays fast meanwhile
            # (bounds at half the timeout: a server held up by the slow clients would wait
            # for the timeout, and a busy CI machine still answers well within the bound)
            slow = [_raw(source.port, b"POST /referrals HTTP/1.1\r\nHost: x\r\n") for _ in range(3)]
            slow_body = _raw(
                source.port,
                b"POST /referrals HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[",
            )
            for _ in range(5):
                started = time.monotonic()
                assert client.get("/health").status_code == 200
                assert time.monotonic() - started < 1.5, "health slowed down by slow clients"
            for sock in slow:
                assert _answer(sock).startswith(b"HTTP/1.1 408 ")
            assert b"408" in _answer(slow_body).split(b"\r\n")[0]

            # the connection limit: one more sheds the oldest idle one at once, with a problem
            idle = [_raw(source.port, b"") for _ in range(6)]
            started = time.monotonic()
            over = _raw(source.port, b"")
            shed = _answer(idle[0])
            assert shed.startswith(b"HTTP/1.1 503 ")
            assert b"application/problem+json" in shed
            assert time.monotonic() - started < 1.5  # at once, not when a slot frees (3 s)
            for sock in [*idle, over]:
                sock.close()
            wait_for(lambda: client.get("/health").status_code == 200, 10, "health after the flood")
    finally:
        source.close()
        publisher.close()
