"""The edges without a broker: identity, complete files, JSON depth, escaping, private files."""

from __future__ import annotations

import io
import json
import logging
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.config import Settings
from broker.contracts import Delivery, StatusDelivery
from broker.errors import ValidationFailed
from broker.ledger.store import LedgerStore
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher, referral_id_for
from broker.private import exposure, private_dir, write_private
from broker.receiver.inbox import Inbox
from broker.security.keys import init_keys
from broker.security.rules import HandlingLog
from broker.terminal import EscapingFormatter, escape
from broker.validation import validation_problems
from broker.wire.codec import Codec
from broker.wire.models import Referral
from connectors.formats import csv_row_to_referral, incomplete, load_json, parse_referrals
from connectors.idempotency import IdempotencyKeys, valid_key
from connectors.inbox_folder import InboxFolderConfig, InboxFolderSink
from connectors.sqlite_sink import SqliteCaseConfig, SqliteCaseSink
from connectors.status_sink import StatusFolderConfig, StatusFolderSink
from tests.support.connectors import make_network, referral_json

RID = "7d1c2a9e-0b1f-4c55-9a7e-1f0e6a4c2b10"


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[Publisher]:
    """A publisher of hl-a whose ``prepare`` needs no broker (nothing is sent)."""
    settings = Settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path / "state")
    network = make_network()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    pub = Publisher(settings, network, "hl-a", Codec.from_settings(settings), None, outbox)  # type: ignore[arg-type]
    yield pub
    pub.close()
    outbox.close()


# -- one case, one referral -----------------------------------------------------------------------


def test_referral_id_comes_from_origin_and_case_not_from_bytes() -> None:
    a = referral_id_for("hl-a", "case-1")
    assert a == referral_id_for("hl-a", "case-1")
    assert a != referral_id_for("hl-b", "case-1"), "case ids are the origin's own"
    assert a != referral_id_for("hl-a", "case-2")
    csv_text = "case_id,url,hosting_country\ncase-1,https://h.example.org/a,NL\n"
    padded = "url,case_id,hosting_country\n\nhttps://h.example.org/a,case-1,NL\n"
    for text in (csv_text, padded):
        [(_, row)] = [r for r in parse_referrals(text.encode(), ".csv") if r[0] != "file"]
        assert isinstance(row, dict)
        assert "referral_id" not in row["envelope"]


def test_prepare_names_the_referral_by_case_and_fingerprints_its_content(
    publisher: Publisher,
) -> None:
    data = referral_json("hl-a", "NL")
    del data["envelope"]["referral_id"]
    first = publisher.prepare(data)
    assert first.referral_id == referral_id_for("hl-a", data["envelope"]["case_id"])
    later = json.loads(json.dumps(data))
    later["envelope"]["created_at"] = "2024-01-01T00:00:00Z"  # a re-export restamps it
    again = publisher.prepare(later)
    assert again.referral_id == first.referral_id
    assert again.fingerprint == first.fingerprint, "creation time is not case content"
    changed = json.loads(json.dumps(data))
    changed["envelope"]["priority"] = "URGENT"
    changed["envelope"]["urgency_reason"] = "synthetic"
    amended = publisher.prepare(changed)
    assert amended.referral_id == first.referral_id
    assert amended.fingerprint != first.fingerprint


def test_csv_row_without_received_at_gets_now_but_keeps_its_fingerprint(
    publisher: Publisher,
) -> None:
    row = {"case_id": "case-r1", "url": "https://h.example.org/r", "hosting_country": "NL"}
    one = publisher.prepare(csv_row_to_referral(row))
    time.sleep(0.01)
    two = publisher.prepare(csv_row_to_referral(row))
    assert one.referral_id == two.referral_id == referral_id_for("hl-a", "case-r1")
    assert one.fingerprint == two.fingerprint, "a filled-in received_at is not content"
    given = publisher.prepare(csv_row_to_referral({**row, "received_at": "2024-02-03T04:05:06Z"}))
    assert given.fingerprint != one.fingerprint, "a received_at the source gave is content"


def test_outbox_refuses_an_amendment_and_answers_a_repeat_without_sending(
    publisher: Publisher,
) -> None:
    data = referral_json("hl-a", "NL")
    prepared = publisher.prepare(data)
    publisher.outbox.add(
        prepared.referral_id,
        prepared.case_id,
        "intake",
        prepared.value,
        [],
        prepared.expected,
        content_sha256=prepared.fingerprint,
    )
    result = publisher.publish_prepared([("row 2", prepared)])  # the producer is never used
    [pub] = result.published
    assert pub.repeat
    assert not pub.sent
    changed = json.loads(json.dumps(data))
    changed["body"]["summary"] = "synthetic correction"
    amended = publisher.prepare(changed)
    assert [r.label for r in publisher.conflicts([("[0]", amended)])] == ["[0]"]
    result = publisher.publish_prepared([("row 3", amended)])
    [rej] = result.rejected
    assert rej.kind == "amendment"
    assert rej.problems[0].startswith(f"(record): referral {prepared.referral_id}")
    assert "amendments" in rej.problems[0]
    assert publisher.outbox.count() == 1
    stored = publisher.outbox.get(prepared.referral_id)
    assert stored is not None
    assert stored.content_sha256 == prepared.fingerprint


def test_two_versions_of_one_case_in_one_batch_are_a_conflict(publisher: Publisher) -> None:
    data = referral_json("hl-a", "NL")
    del data["envelope"]["referral_id"]
    other = json.loads(json.dumps(data))
    other["body"]["summary"] = "synthetic second version"
    ready = [("[0]", publisher.prepare(data)), ("[1]", publisher.prepare(other))]
    assert [r.label for r in publisher.conflicts(ready)] == ["[1]"]
    assert publisher.conflicts(ready[:1] * 2) == [], "the same version twice is a repeat"


# -- complete files, JSON depth -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "suffix", "why"),
    [
        (b"", ".jsonl", "the file is empty"),
        (b'{"a": 1}\n{"b"', ".jsonl", "the last line has no line break"),
        (b"case_id,url\nc,https://h.example.org", ".csv", "the last line has no line break"),
        (b'case_id,summary\nc,"open\n', ".csv", "a quoted CSV cell is not closed"),
        (b'[{"a": 1},', ".json", "not valid JSON"),
        (b'{"a": "\xc3', ".json", "not UTF-8"),
    ],
)
def test_incomplete_files_are_recognised(raw: bytes, suffix: str, why: str) -> None:
    reason = incomplete(raw, suffix)
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize(
    ("raw", "suffix"),
    [(b'{"a": 1}\n\n', ".jsonl"), (b"case_id,url\nc,x\n", ".csv"), (b"[1, 2]", ".json")],
)
def test_complete_files_are_taken(raw: bytes, suffix: str) -> None:
    assert incomplete(raw, suffix) is None


def test_json_nesting_is_bounded_before_parsing() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValidationFailed, match="nested deeper than 32 levels"):
        load_json(deep)
    inside_a_string = json.dumps({"a": "[" * 40})
    assert load_json(inside_a_string) == {"a": "[" * 40}, "brackets in strings do not count"
    assert load_json("[" * 32 + "]" * 32) is not None
    with pytest.raises(ValidationFailed):
        load_json("[" * 33 + "]" * 33)


def test_jsonl_lines_end_only_at_line_feeds() -> None:
    text = json.dumps({"note": "a\u2028b"}, ensure_ascii=False) + "\n"
    [(label, row)] = parse_referrals(text.encode(), ".jsonl")
    assert label == "line 1"
    assert row == {"note": "a\u2028b"}


def test_unknown_csv_columns_are_named_only_if_they_look_like_names() -> None:
    rows = parse_referrals(b"case_id,colour,PATH=/usr/bin:/bin,url\nc,x,y,z\n", ".csv")
    [(label, problem)] = rows
    assert label == "header"
    assert isinstance(problem, ValidationFailed)
    assert problem.problems == [
        "colour: unknown column",
        "(column 3): unknown column (its name is not shown: not a column name)",
    ]
    assert "/usr/bin" not in str(problem.problems)


def test_validation_problems_never_quote_keys_that_are_not_names() -> None:
    from pydantic import ValidationError

    data = referral_json("hl-a")
    data["envelope"]["SECRET=/home/x\x1b[2J"] = 1
    data["envelope"]["x" * 80] = 1
    with pytest.raises(ValidationError) as info:
        Referral.model_validate(data)
    wheres = [w for w, _ in validation_problems(info.value)]
    assert "envelope.(key)" in wheres
    assert f"envelope.{'x' * 32}..." in wheres
    assert not any("SECRET" in w for w in wheres)


# -- terminal-safe text ----------------------------------------------------------------------------


def test_escape_makes_every_control_character_visible() -> None:
    text = "case-\x1b[31mred\r\x07\x00\x7f\x9b\u202e\u200b\n\tend"
    out = escape(text)
    assert out == "case-\\x1b[31mred\\x0d\\x07\\x00\\x7f\\x9b\\u202e\\u200b\\x0a\\x09end"
    assert out.isprintable()
    assert escape("ordinary ÄÖÜ é 日本") == "ordinary ÄÖÜ é 日本"


def test_escaping_formatter_escapes_messages_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("referral.test.escaping")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("file %s refused", "x\x1b[2J\r\x07.csv")
        try:
            raise ValueError("bad\x1b]0;title\x07")
        except ValueError:
            logger.exception("failed\nforged line")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\r" not in out
    assert "file x\\x1b[2J\\x0d\\x07.csv refused" in out
    assert "failed\\x0aforged line" in out, "a message cannot start a new log line"
    assert "ValueError: bad\\x1b]0;title\\x07" in out


# -- private files --------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _delivery() -> Delivery:
    return Delivery(
        referral_id=RID,
        case_id="case-1",
        origin_org="hl-a",
        value=b"\x00",
        document={"envelope": {"referral_id": RID, "case_id": "case-1"}, "body": {}},
        topic="referrals.to.NL",
        partition=0,
        offset=1,
    )


def test_decrypted_content_is_0600_in_0700_directories_under_umask_022(
    tmp_path: Path, umask_022: None
) -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path / "state")
    org = settings.org_dir("police-nl")
    inbox_folder = InboxFolderSink(InboxFolderConfig(path="orgs/police-nl/inbox"), settings)
    inbox_folder.open()
    inbox_folder.deliver(_delivery())
    cases = SqliteCaseSink(SqliteCaseConfig(path="orgs/police-de/cases.sqlite3"), settings)
    cases.open()
    cases.deliver(_delivery())
    status = StatusFolderSink(StatusFolderConfig(path="orgs/hl-a/status"), settings)
    status.open()
    status.deliver_status(StatusDelivery(RID, "RECEIVED", "police-nl", {"status": "RECEIVED"}))
    outbox = Outbox.for_org(settings, "hl-a")
    outbox.add(RID, "case-1", "intake", b"x", [], ["police-nl"])
    inbox = Inbox.for_org(settings, "police-nl")
    inbox.record(_delivery(), "inbox_folder")
    handling = HandlingLog.for_org(settings, "police-nl")
    handling.record({"referral_id": RID, "case_id": "case-1", "handling": {"tlp": "RED"}})
    ledger = LedgerStore.for_settings(settings)
    keys = settings.org_dir("hl-a") / "keys"
    init_keys(keys, "hl-a")
    try:
        files = [
            org / "inbox" / f"{RID}.json",
            settings.org_dir("police-de") / "cases.sqlite3",
            settings.org_dir("hl-a") / "status" / f"{RID}.jsonl",
            settings.org_dir("hl-a") / "outbox.sqlite3",
            org / "inbox.sqlite3",
            org / "handling.sqlite3",
            Path(settings.state_dir) / "ledger.sqlite3",
            *keys.glob("*.pem"),
        ]
        wal = [p.with_name(p.name + "-wal") for p in files if p.suffix == ".sqlite3"]
        for path in files + [w for w in wal if w.exists()]:
            assert path.is_file(), path
            assert _mode(path) == 0o600, f"{path}: {_mode(path):o}"
        assert any(w.exists() for w in wal), "WAL files were checked too"
        dirs = {p.parent for p in files} | {
            Path(settings.state_dir),
            Path(settings.state_dir) / "orgs",
        }
        for directory in dirs:
            assert _mode(directory) == 0o700, f"{directory}: {_mode(directory):o}"
    finally:
        cases.close()
        outbox.close()
        inbox.close()
        handling.close()
        ledger.close()


def test_private_writes_never_follow_a_planted_symlink(tmp_path: Path, umask_022: None) -> None:
    folder = private_dir(tmp_path / "inbox")
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    (folder / ".x.json.tmp").symlink_to(outside)  # not ours: the temp name of another pid
    target = folder / "x.json"
    target.symlink_to(outside)
    write_private(target, b"{}")
    assert outside.read_text() == "untouched"
    assert not target.is_symlink()
    assert _mode(target) == 0o600


def test_exposure_names_a_state_directory_others_can_read(tmp_path: Path) -> None:
    state = private_dir(tmp_path / "state")
    assert exposure(state) is None
    state.chmod(0o755)
    message = exposure(state)
    assert message is not None
    assert "755" in message
    assert "chmod 700" in message


def test_org_dir_refuses_paths_that_are_not_organisation_ids(tmp_path: Path) -> None:
    from broker.errors import ConfigError

    settings = Settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path)
    assert settings.org_dir("police-nl") == tmp_path / "orgs" / "police-nl"
    for bad in ("../etc", "a/b", "", ".hidden"):
        with pytest.raises(ConfigError):
            settings.org_dir(bad)


# -- idempotency keys ------------------------------------------------------------------------------


def test_idempotency_keys_replay_refuse_and_expire(tmp_path: Path) -> None:
    keys = IdempotencyKeys(tmp_path / "keys.sqlite3", ttl=60)
    try:
        assert keys.claim("k1", "sha-a", now=1000).state == "new"
        assert keys.claim("k1", "sha-a", now=1001).state == "busy"
        assert keys.claim("k1", "sha-b", now=1001).state == "mismatch"
        keys.answer("k1", 202, "application/json", b'{"accepted": []}')
        claim = keys.claim("k1", "sha-a", now=1002)
        assert (claim.state, claim.status, claim.answer) == ("replay", 202, b'{"accepted": []}')
        assert keys.claim("k1", "sha-b", now=1002).state == "mismatch"
        assert keys.claim("k1", "sha-b", now=1100).state == "new", "forgotten after the ttl"
        keys.release("k1")
        assert keys.claim("k1", "sha-c", now=1101).state == "new", "a released claim is free"
        assert keys.claim("k2", "sha-a", now=1000).state == "new"
        assert keys.claim("k2", "sha-a", now=1400).state == "new", "an abandoned claim"
    finally:
        keys.close()
    assert valid_key("order-42:retry")
    assert not valid_key("")
    assert not valid_key("with space")
    assert not valid_key("x" * 256)


def test_csv_exports_defuse_formulas() -> None:
    from connectors.formats import spreadsheet_safe

    assert spreadsheet_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)"
    assert spreadsheet_safe("+1") == "'+1"
    assert spreadsheet_safe("CASE-1") == "CASE-1"
    assert spreadsheet_safe(3) == 3
