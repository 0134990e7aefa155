"""``referral schema list|show|check|register`` through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.wire.registry import RECORD_NAMES, STATUS_UPDATE, EmbeddedRegistry, default_schema_dir
from cli.main import app

runner = CliRunner()
AVSC = f"{STATUS_UPDATE}.avsc"


@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    for f in default_schema_dir().glob("*.avsc"):
        shutil.copy(f, tmp_path)
    shutil.copy(default_schema_dir() / "registry.json", tmp_path)
    return tmp_path


def _edit_status(schema_dir: Path, field: dict[str, object]) -> None:
    path = schema_dir / AVSC
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["fields"].append(field)
    path.write_text(json.dumps(schema, indent=2), encoding="utf-8")


def test_check_passes_on_the_shipped_schemas() -> None:
    result = runner.invoke(app, ["schema", "check"])
    assert result.exit_code == 0, result.output
    for name in RECORD_NAMES:
        assert f"ok  {name}" in result.output


def test_check_fails_on_an_incompatible_edit(schema_dir: Path) -> None:
    _edit_status(
        schema_dir, {"name": "escalation", "type": "string", "doc": "required, no default"}
    )
    result = runner.invoke(app, ["schema", "check", "--schema-dir", str(schema_dir)])
    assert result.exit_code == 1
    assert "field 'escalation'" in result.output
    assert "reader_field_missing_default_value" in result.output
    assert result.output.startswith("error: ")


def test_check_json_reports_problems(schema_dir: Path) -> None:
    _edit_status(schema_dir, {"name": "escalation", "type": "string", "doc": "x"})
    result = runner.invoke(app, ["schema", "check", "--schema-dir", str(schema_dir), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["compatible"] is False
    by_name = {r["name"]: r["problems"] for r in report["records"]}
    assert len(by_name[STATUS_UPDATE]) == 1
    assert "escalation" in by_name[STATUS_UPDATE][0]


def test_compatible_evolution_passes_then_registers(schema_dir: Path) -> None:
    shipped = len(EmbeddedRegistry(schema_dir=schema_dir).versions(STATUS_UPDATE))
    _edit_status(
        schema_dir,
        {"name": "channel", "type": ["null", "string"], "default": None, "doc": "optional"},
    )
    check = runner.invoke(app, ["schema", "check", "--schema-dir", str(schema_dir), "-m", "FULL"])
    assert check.exit_code == 0, check.output

    listed = runner.invoke(app, ["schema", "list", "--schema-dir", str(schema_dir), "--json"])
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows[STATUS_UPDATE]["working_registered"] is False

    reg = runner.invoke(app, ["schema", "register", "--schema-dir", str(schema_dir), "--json"])
    assert reg.exit_code == 0, reg.output
    results = {r["name"]: r for r in json.loads(reg.stdout)}
    assert results[STATUS_UPDATE]["created"] is True
    assert results[STATUS_UPDATE]["version"] == shipped + 1
    assert not any(r["created"] for n, r in results.items() if n != STATUS_UPDATE)

    again = runner.invoke(app, ["schema", "register", "--schema-dir", str(schema_dir)])
    assert "registered" not in again.output.replace("unchanged", "")
    shown = runner.invoke(
        app,
        [
            "schema",
            "show",
            "StatusUpdate",
            "--version",
            str(shipped + 1),
            "--schema-dir",
            str(schema_dir),
        ],
    )
    assert any(f["name"] == "channel" for f in json.loads(shown.stdout)["fields"])


def test_register_refuses_incompatible_edit(schema_dir: Path) -> None:
    _edit_status(schema_dir, {"name": "escalation", "type": "string", "doc": "x"})
    result = runner.invoke(app, ["schema", "register", "--schema-dir", str(schema_dir)])
    assert result.exit_code == 1
    assert "escalation" in result.output


def test_list_and_show() -> None:
    listed = runner.invoke(app, ["schema", "list", "--json"])
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == list(RECORD_NAMES)
    assert all(r["working_registered"] for r in rows)

    shown = runner.invoke(app, ["schema", "show", "Referral"])
    schema = json.loads(shown.stdout)
    assert [f["name"] for f in schema["fields"]] == ["envelope", "body"]
    assert schema["fields"][0]["type"]["type"] == "record"  # expanded, self-contained

    by_id = runner.invoke(app, ["schema", "show", "x", "--id", str(rows[0]["latest_id"])])
    assert json.loads(by_id.stdout)["name"] == "Referral"


def test_show_unknown_schema_is_a_one_line_error() -> None:
    result = runner.invoke(app, ["schema", "show", "Nope"])
    assert result.exit_code == 2
    assert result.output.startswith("error: unknown schema 'Nope'; known: HandoverBatch")
    assert len(result.output.splitlines()) == 1
