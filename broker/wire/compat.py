"""Schema evolution gate: Confluent-style compatibility modes over Apache Avro's checker."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from broker.errors import SchemaError

__all__ = ["CompatibilityMode", "check_compatibility", "pair_problems"]


class CompatibilityMode(StrEnum):
    """Which versions a new schema must be compatible with, and in which direction."""

    BACKWARD = "BACKWARD"  # the new schema reads data written with the latest version
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"  # ... with every version
    FORWARD = "FORWARD"  # the latest version reads data written with the new schema
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"  # every version reads the new schema's data
    FULL = "FULL"  # BACKWARD and FORWARD
    FULL_TRANSITIVE = "FULL_TRANSITIVE"  # BACKWARD_TRANSITIVE and FORWARD_TRANSITIVE
    NONE = "NONE"  # no check


# Which rule a finding breaks, from how the checker ends its location.
_SUFFIX_RULES = {
    "symbols": "missing_enum_symbols",
    "name": "name_mismatch",
    "size": "fixed_size_mismatch",
}


def _parse(schema: dict[str, Any]) -> avro.schema.Schema:
    try:
        return avro.schema.parse(json.dumps(schema))
    except Exception as exc:  # avro raises several unrelated types for bad schemas
        raise SchemaError(f"not a valid Avro schema: {exc}") from exc


def _named_types(node: Any, out: dict[str, Any], namespace: str | None = None) -> None:
    if isinstance(node, list):
        for branch in node:
            _named_types(branch, out, namespace)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = str(node["name"])
            ns = node.get("namespace") or namespace
            full = name if "." in name or not ns else f"{ns}.{name}"
            out[full] = node
            out.setdefault(name.rpartition(".")[2], node)
            namespace = full.rpartition(".")[0] or None
            for field in node.get("fields", []):
                _named_types(field.get("type"), out, namespace)
        elif kind == "array":
            _named_types(node.get("items"), out, namespace)
        elif kind == "map":
            _named_types(node.get("values"), out, namespace)
        elif isinstance(kind, (dict, list)):
            _named_types(kind, out, namespace)


def _field_path(reader: dict[str, Any], location: str) -> str:
    """``/fields/0/type/fields/4/type/symbols`` → ``envelope.priority`` in ``reader``."""
    named: dict[str, Any] = {}
    _named_types(reader, named)
    node: Any = reader
    path: list[str] = []
    tokens = [t for t in location.split("/") if t]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if isinstance(node, str) and node in named:
            node = named[node]
        if token == "fields" and i + 1 < len(tokens) and isinstance(node, dict):
            try:
                field = node["fields"][int(tokens[i + 1])]
            except (KeyError, IndexError, ValueError):
                break
            path.append(str(field["name"]))
            node = field
            i += 2
            continue
        if token == "type" and isinstance(node, dict) and "type" in node:
            node = node["type"]
        elif token in ("items", "values") and isinstance(node, dict):
            node = node.get(token)
        elif token.isdigit() and isinstance(node, list) and int(token) < len(node):
            node = node[int(token)]
        i += 1
    return ".".join(path) or "(record)"


def _rule_for(location: str, rules: list[str]) -> str:
    last = location.rstrip("/").rpartition("/")[2]
    if last in _SUFFIX_RULES and _SUFFIX_RULES[last] in rules:
        return _SUFFIX_RULES[last]
    if len(rules) == 1:
        return rules[0]
    prev = location.rstrip("/").rpartition("/")[0].rpartition("/")[2]
    if prev == "fields" and "reader_field_missing_default_value" in rules:
        return "reader_field_missing_default_value"
    rest = [
        r
        for r in rules
        if r not in _SUFFIX_RULES.values() and r != "reader_field_missing_default_value"
    ]
    return " or ".join(rest or rules)


def pair_problems(reader: dict[str, Any], writer: dict[str, Any], label: str) -> list[str]:
    """Problems reading data written with ``writer`` using ``reader``; empty if compatible."""
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(_parse(reader), _parse(writer))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    rules = sorted({i.value for i in result.incompatibilities})
    locations = sorted(loc for loc in result.locations if loc != "/") or ["/"]
    details = "; ".join(sorted(result.messages))
    out = []
    for loc in locations:
        rule = _rule_for(loc, rules)
        out.append(f"{label}: field '{_field_path(reader, loc)}': {rule} (at {loc})")
    if details:
        out[-1] += f" [checker: {details}]"
    return out


def check_compatibility(
    name: str,
    new: dict[str, Any],
    previous: Sequence[tuple[int, dict[str, Any]]],
    mode: CompatibilityMode | str = CompatibilityMode.BACKWARD,
) -> list[str]:
    """Problems with evolving record ``name`` to ``new`` from ``previous`` (version, schema).

    ``previous`` is oldest first. Non-transitive modes check the latest version
    only. Each problem names the record, the versions, the field path and the
    Avro rule broken (e.g. ``reader_field_missing_default_value``).
    """
    mode = CompatibilityMode(mode)
    if mode is CompatibilityMode.NONE or not previous:
        return []
    targets = list(previous) if mode.value.endswith("_TRANSITIVE") else [previous[-1]]
    backward = mode.value.startswith(("BACKWARD", "FULL"))
    forward = mode.value.startswith(("FORWARD", "FULL"))
    problems: list[str] = []
    for version, old in targets:
        if backward:
            label = f"{name}: working schema cannot read version {version} ({mode.value})"
            problems += pair_problems(new, old, label)
        if forward:
            label = f"{name}: version {version} cannot read the working schema ({mode.value})"
            problems += pair_problems(old, new, label)
    return problems
