"""The analyst's side of issue 14: one normaliser for JSON and CSV, helpful problems,
receipts, ``referral check`` without a broker, and the newcomer test on a real broker.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from broker.config import Settings
from broker.network import Network
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher
from broker.wire.codec import Codec
from cli.main import app
from connectors.drop_folder import DropFolderConfig, DropFolderSource
from connectors.formats import CSV_COLUMNS, RECEIPT_COLUMNS, normalise, parse_referrals
from tests.support.connectors import cli_env_for

ROOT = Path(__file__).resolve().parents[2]
NETWORK = ROOT / "examples" / "network.toml"


def _check(tmp_path: Path, *files: Path, org: str = "hl-nl") -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app,
        ["--network", str(NETWORK), "--state-dir", str(tmp_path / "state"), "check"]
        + [str(f) for f in files]
        + ["--as", org],
        env={"COLUMNS": "200"},
    )
    return result.exit_code, result.stdout, result.stderr


def _csv_rows(text: bytes, suffix: str = ".csv") -> list[dict[str, object]]:
    rows = parse_referrals(text, suffix)
    assert all(isinstance(r, dict) for _, r in rows), rows
    return [dict(r) for _, r in rows]  # type: ignore[arg-type]


def _given(value: object) -> object:
    """``value`` without its None entries (absent and null mean "not given" alike)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value


# -- one normalisation -----------------------------------------------------------------------


def test_json_and_csv_get_the_same_defaults_and_codes_in_any_case() -> None:
    text = "case_id;url;jurisdictions;hosting_country\nc-1;https://h.example.org/a;fr:hosting;nl\n"
    [from_csv] = _csv_rows(text.encode())
    doc = {
        "envelope": {"case_id": "c-1", "jurisdictions": [{"country": "fr", "basis": "hosting"}]},
        "body": {"items": [{"url": "https://h.example.org/a", "hosting": {"country": "nl"}}]},
    }
    [from_json] = _csv_rows(json.dumps(doc).encode(), ".json")
    assert from_json["envelope"]["jurisdictions"] == [{"country": "FR", "basis": "HOSTING"}]  # type: ignore[index]
    assert from_csv["envelope"]["jurisdictions"] == from_json["envelope"]["jurisdictions"]  # type: ignore[index]
    for part, key in (
        ("envelope", "priority"),
        ("envelope", "handling"),
        ("body", "classification"),
        ("body", "prior_actions"),
    ):
        assert _given(from_csv[part][key]) == _given(from_json[part][key]), (part, key)  # type: ignore[index]
    json_item = from_json["body"]["items"][0]  # type: ignore[index]
    csv_item = from_csv["body"]["items"][0]  # type: ignore[index]
    assert json_item["media_type"] == csv_item["media_type"] == "OTHER"
    assert json_item["hosting"]["country"] == csv_item["hosting"]["country"] == "NL"
    assert doc["envelope"]["jurisdictions"][0]["country"] == "fr", "the input is not changed"
    assert normalise([1]) == [1], "what is not a referral is left for validation to name"


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_csv_delimiter_is_detected(sep: str) -> None:
    text = sep.join(["case_id", "url", "hosting_country"]) + "\n"
    text += sep.join(["c-1", "https://h.example.org/a", "DE"]) + "\n"
    [row] = _csv_rows(text.encode())
    assert row["envelope"]["case_id"] == "c-1"  # type: ignore[index]


# -- referral check: problems name the user's column or field, with examples -------------------


def test_check_names_columns_and_fields_with_examples(tmp_path: Path) -> None:
    bad_csv = tmp_path / "export.csv"
    bad_csv.write_text(
        "case_id;url;hosting_country;created_at\n"
        "c-ok;https://h.example.org/a;nl;\n"
        "c-bad;https://h.example.org/b;DE;22/11/2026\n"
        "c-cc;https://h.example.org/c;Netherlands;\n"
    )
    bad_json = tmp_path / "one.json"
    bad_json.write_text(
        json.dumps(
            {
                "envelope": {"case_id": "c-j", "created_at": "yesterday"},
                "body": {
                    "items": [{"url": "https://h.example.org/d", "hosting": {"country": "fr"}}]
                },
            }
        )
    )
    code, out, err = _check(tmp_path, bad_csv, bad_json)
    assert code == 1
    assert f"{bad_csv} row 2: ok, referral " in out
    lines = err.splitlines()
    date_line = next(line for line in lines if " row 3: " in line)
    assert "row 3: created_at:" in date_line
    assert "e.g. 2026-11-23T13:05:00Z" in date_line
    country_line = next(line for line in lines if " row 4: " in line)
    assert "hosting_country:" in country_line
    assert "e.g. NL" in country_line
    json_line = next(line for line in lines if str(bad_json) in line)
    assert "envelope.created_at:" in json_line
    assert "e.g. 2026-11-23T13:05:00Z" in json_line
    assert "h.example.org" not in err, "problems never quote URLs"


def test_check_refuses_an_unknown_org_in_flag_terms(tmp_path: Path) -> None:
    code, _, err = _check(tmp_path, ROOT / "examples" / "referral.json", org="nobody")
    assert code == 2
    assert "--as" in err


def test_shipped_examples_are_valid_and_the_csv_has_every_column(tmp_path: Path) -> None:
    example_csv = ROOT / "examples" / "referrals.csv"
    header = next(csv.reader(example_csv.open()))
    assert header == list(CSV_COLUMNS)
    code, out, err = _check(tmp_path, ROOT / "examples" / "referral.json", example_csv)
    assert code == 0, err
    assert out.count(": ok, referral ") == 2


# -- the newcomer: only what the README documents, on a real broker -----------------------------


def _readme_json() -> dict[str, object]:
    text = (ROOT / "connectors" / "README.md").read_text()
    m = re.search(r"<!-- newcomer-json:[^>]*-->\s*```json\n(.*?)```", text, re.DOTALL)
    assert m, "connectors/README.md documents the JSON shape in a newcomer-json block"
    doc = json.loads(m.group(1))
    assert isinstance(doc, dict)
    return doc


def _readme_csv_columns() -> list[str]:
    text = (ROOT / "connectors" / "README.md").read_text()
    section = text.split("CSV columns", 1)[-1] if "CSV columns" in text else text
    cols = re.findall(r"^\| `([a-z_]+)`(?:, `[a-z_]+`)* \|", section, re.MULTILINE)
    return cols


def test_newcomer_publishes_the_documented_json_and_csv(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer, tmp_path: Path
) -> None:
    doc = _readme_json()
    doc["envelope"]["case_id"] = f"newcomer-{uuid.uuid4().hex[:8]}"  # type: ignore[index]
    json_file = tmp_path / "mine.json"
    json_file.write_text(json.dumps(doc))
    columns = _readme_csv_columns()
    assert {"case_id", "url", "hosting_country"} <= set(columns)
    csv_file = tmp_path / "mine.csv"
    csv_file.write_text(
        "case_id;url;hosting_country\n"
        f"newcomer-{uuid.uuid4().hex[:8]};https://host-9.example.org/x;de\n"
    )
    env = cli_env_for(ready, tmp_path)
    result = CliRunner().invoke(
        app, ["publish", str(json_file), str(csv_file), "--as", "hl-a"], env=env
    )
    assert result.exit_code == 0, result.output
    ids = re.findall(r": referral ([0-9a-f-]{36})", result.stdout)
    assert len(ids) == 2, result.stdout
    assert f"{json_file}: 1 published, 0 repeat(s), 0 rejected" in result.stdout

    # The drop folder's receipt tells which referral each row became, repeats marked.
    publisher = Publisher(ready, net, "hl-a", codec, producer, Outbox.for_org(ready, "hl-a"))
    source = DropFolderSource(DropFolderConfig(path="drop", settle_seconds=0), ready, publisher)
    source.open()
    try:
        (source.path / "again.csv").write_text(
            csv_file.read_text() + "bad-row;ftp://host-9.example.org/y;DE\n"
        )
        source.poll()
    finally:
        publisher.close()
    receipt = source.path / "rejected" / "again.csv.receipt.csv"
    rows = list(csv.DictReader(io.StringIO(receipt.read_text())))
    assert list(rows[0]) == list(RECEIPT_COLUMNS)
    assert [(r["row"], r["status"]) for r in rows] == [("row 2", "repeat"), ("row 3", "rejected")]
    assert rows[0]["referral_id"] == ids[1]
    assert rows[1]["reason"].startswith("url: ")
    assert "host-9.example.org" not in receipt.read_text()
