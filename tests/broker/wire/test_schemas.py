"""The .avsc files: self-contained, documented, safe to decode, and all registered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest
from fastavro.schema import load_schema, to_parsing_canonical_form

from broker.wire.registry import (
    RECORD_NAMES,
    REFERRAL,
    EmbeddedRegistry,
    default_schema_dir,
    load_working_schemas,
    normalised_json,
    schema_fingerprint,
)

WORKING = load_working_schemas()


def _fields(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every field of every record in an expanded schema, with its dotted path."""
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, list):
        for branch in node:
            out += _fields(branch, path)
    elif isinstance(node, dict):
        if node.get("type") == "record":
            for f in node["fields"]:
                here = f"{path}.{f['name']}" if path else f["name"]
                out.append((here, f))
                out += _fields(f["type"], here)
        elif node.get("type") == "array":
            out += _fields(node["items"], path)
        elif node.get("type") == "map":
            out += _fields(node["values"], path)
    return out


def _min_bytes(node: Any, named: dict[str, Any]) -> int:
    """The fewest bytes a value of this type can encode in."""
    if isinstance(node, str):
        if node == "null":
            return 0
        if node in named:
            return _min_bytes(named[node], named)
        return 1  # boolean, int, long (varint), string and bytes (length), float 4, double 8
    if isinstance(node, list):
        return 1  # union branch index
    kind = node["type"]
    if kind == "record":
        named[node["name"]] = node
        named[f"{node.get('namespace', '')}.{node['name']}"] = node
        return sum(_min_bytes(f["type"], named) for f in node["fields"])
    if kind == "enum":
        named[node["name"]] = node
        return 1
    if kind == "fixed":
        return int(node["size"])
    if kind in ("array", "map"):
        return 1
    return _min_bytes(kind, named)


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_schema_parses_standalone_in_both_implementations(name: str) -> None:
    schema = WORKING[name]
    fastavro.parse_schema(schema, named_schemas={})
    avro.schema.parse(json.dumps(schema))


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_every_field_documented_and_every_optional_field_defaulted(name: str) -> None:
    for path, field in _fields(WORKING[name]):
        assert field.get("doc"), f"{path} has no doc"
        ftype = field["type"]
        if isinstance(ftype, list) and "null" in ftype:
            assert ftype[0] == "null", f"{path}: null must be the first union branch"
            assert "default" in field, f"{path}: no default"
            assert field["default"] is None, f"{path}: default must be null"


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_no_array_or_map_of_zero_byte_items(name: str) -> None:
    named: dict[str, Any] = {}
    _min_bytes(WORKING[name], named)  # collects named types

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for b in node:
                walk(b)
        elif isinstance(node, dict):
            if node.get("type") in ("array", "map"):
                inner = node.get("items", node.get("values"))
                assert _min_bytes(inner, dict(named)) >= 1, f"zero-byte items in {name}"
                walk(inner)
            elif node.get("type") == "record":
                for f in node["fields"]:
                    walk(f["type"])

    walk(WORKING[name])


def test_referral_envelope_first_and_body_last() -> None:
    fields = WORKING[REFERRAL]["fields"]
    assert [f["name"] for f in fields] == ["envelope", "body"]
    assert fields[0]["type"]["name"] == "ReferralEnvelope"
    # The body is the union of a plain and a sealed body (Referral version 2).
    assert [branch["name"] for branch in fields[1]["type"]] == ["CaseBody", "SealedBody"]


def test_every_working_schema_is_registered() -> None:
    registry = EmbeddedRegistry()
    for name in RECORD_NAMES:
        latest = registry.latest(name)
        assert normalised_json(latest.schema) == normalised_json(WORKING[name]), (
            f"{name} changed: run `referral schema register` and commit schemas/registry.json"
        )


def test_registry_file_is_consistent() -> None:
    data = json.loads((default_schema_dir() / "registry.json").read_text(encoding="utf-8"))
    ids = [e["id"] for e in data["schemas"]]
    assert len(ids) == len(set(ids))
    for entry in data["schemas"]:
        assert entry["fingerprint"] == schema_fingerprint(entry["schema"])
        avro.schema.parse(json.dumps(entry["schema"]))  # self-contained


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_fastavro_load_schema_expands_the_files_identically(name: str) -> None:
    path = Path(default_schema_dir()) / f"{name}.avsc"
    loaded = load_schema(str(path), _write_hint=False)
    assert to_parsing_canonical_form(loaded) == to_parsing_canonical_form(WORKING[name])
