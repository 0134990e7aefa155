"""``referral schema list|show|check|register``: the Avro contracts and their registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from broker.errors import ConfigError, IncompatibleSchema, UnknownName, UnknownSchema
from broker.wire.compat import CompatibilityMode, check_compatibility
from broker.wire.registry import (
    RECORD_NAMES,
    EmbeddedRegistry,
    Registry,
    full_name,
    load_working_schemas,
    normalised_json,
    registry_from_settings,
)
from cli.app import App, console, print_json, state

__all__ = ["app"]

app = App(help="Avro schemas: list, show, check compatibility, register.")

SCHEMA_DIR_OPTION: Any = typer.Option(
    None,
    "--schema-dir",
    help="Directory of the working .avsc files (and registry.json). Default: the shipped ones.",
)
JSON_OPTION: Any = typer.Option(False, "--json", help="Machine-readable output.")


def _registry(ctx: typer.Context, schema_dir: Path | None) -> Registry:
    if schema_dir is not None and not schema_dir.is_dir():
        raise ConfigError(f"--schema-dir {schema_dir}: no such directory")
    if schema_dir is not None:
        return EmbeddedRegistry(schema_dir=schema_dir)
    return registry_from_settings(state(ctx).settings)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    schema_dir: Path | None = SCHEMA_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List the records with their registered versions and ids, and unregistered changes."""
    registry = _registry(ctx, schema_dir)
    working = load_working_schemas(schema_dir)
    rows: list[dict[str, Any]] = []
    for name in RECORD_NAMES:
        versions = registry.versions(name)
        latest = versions[-1] if versions else None
        changed = latest is None or normalised_json(latest.schema) != normalised_json(working[name])
        rows.append(
            {
                "name": name,
                "versions": [v.version for v in versions],
                "ids": [v.id for v in versions],
                "latest_id": latest.id if latest else None,
                "working_registered": not changed,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title="schemas")
    for col in ("record", "versions", "ids", "working schema"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["name"],
            ", ".join(map(str, row["versions"])) or "-",
            ", ".join(map(str, row["ids"])) or "-",
            "registered" if row["working_registered"] else "[yellow]changed, not registered[/]",
        )
    console.print(table)


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Record name, e.g. Referral or its full name."),
    version: int | None = typer.Option(
        None, "--version", "-v", help="A registered version (default: the working schema)."
    ),
    schema_id: int | None = typer.Option(None, "--id", help="The schema with this registry id."),
    schema_dir: Path | None = SCHEMA_DIR_OPTION,
) -> None:
    """Print a self-contained (expanded) schema as JSON."""
    registry = _registry(ctx, schema_dir)
    if schema_id is not None:
        schema = registry.by_id(schema_id).schema
    elif version is not None:
        found = [v for v in registry.versions(name) if v.version == version]
        if not found:
            raise UnknownSchema(f"{full_name(name)} has no version {version}")
        schema = found[0].schema
    else:
        working = load_working_schemas(schema_dir)
        if full_name(name) not in working:
            short = [n.rpartition(".")[2] for n in working]
            raise UnknownName("schema", name.rpartition(".")[2], short)
        schema = working[full_name(name)]
    typer.echo(json.dumps(schema, indent=2, ensure_ascii=False))


@app.command("check")
def check_cmd(
    ctx: typer.Context,
    mode: CompatibilityMode = typer.Option(
        CompatibilityMode.BACKWARD, "--mode", "-m", help="Compatibility rule.", case_sensitive=False
    ),
    schema_dir: Path | None = SCHEMA_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Check the working schemas against every registered version; exit 1 if incompatible."""
    registry = _registry(ctx, schema_dir)
    working = load_working_schemas(schema_dir)
    problems: list[str] = []
    report = []
    for name in RECORD_NAMES:
        previous = [(v.version, v.schema) for v in registry.versions(name)]
        found = check_compatibility(name, working[name], previous, mode)
        problems += found
        report.append({"name": name, "versions": len(previous), "problems": found})
    if as_json:
        print_json({"mode": mode.value, "compatible": not problems, "records": report})
        if problems:
            raise typer.Exit(1)
        return
    if problems:
        raise IncompatibleSchema(
            f"{len(problems)} incompatible change(s) under {mode.value}:\n" + "\n".join(problems),
            problems,
        )
    for row in report:
        console.print(f"ok  {row['name']} ({row['versions']} registered version(s), {mode.value})")


@app.command("register")
def register_cmd(
    ctx: typer.Context,
    schema_dir: Path | None = SCHEMA_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Register every working schema that changed as a new version (explicit, never implicit)."""
    registry = _registry(ctx, schema_dir)
    working = load_working_schemas(schema_dir)
    results = []
    for name in RECORD_NAMES:
        reg = registry.register(name, working[name])
        results.append(
            {
                "name": name,
                "id": reg.schema.id,
                "version": reg.schema.version,
                "created": reg.created,
            }
        )
    if as_json:
        print_json(results)
        return
    for row in results:
        what = "registered" if row["created"] else "unchanged "
        console.print(f"{what} {row['name']} version {row['version']} (id {row['id']})")
