"""Registry ids and versions, compatibility modes, and the HTTP registry client."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from pydantic import SecretStr

from broker.config import Settings
from broker.errors import IncompatibleSchema, RegistryError, UnknownSchema
from broker.wire.codec import Codec
from broker.wire.compat import CompatibilityMode, check_compatibility
from broker.wire.registry import (
    RECORD_NAMES,
    REFERRAL,
    STATUS_UPDATE,
    EmbeddedRegistry,
    HttpRegistry,
    default_schema_dir,
    load_working_schemas,
    registry_from_settings,
)
from tests.support.factories import make_status_update

WORKING = load_working_schemas()


def _rec(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    for f in default_schema_dir().glob("*.avsc"):
        shutil.copy(f, tmp_path)
    shutil.copy(default_schema_dir() / "registry.json", tmp_path)
    return tmp_path


# -- compatibility ---------------------------------------------------------------------------


def test_adding_a_required_field_breaks_backward_naming_field_and_rule() -> None:
    new = copy.deepcopy(WORKING[STATUS_UPDATE])
    new["fields"].append({"name": "escalation_level", "type": "int", "doc": "x"})
    problems = check_compatibility(STATUS_UPDATE, new, [(1, WORKING[STATUS_UPDATE])])
    assert len(problems) == 1
    assert "field 'escalation_level'" in problems[0]
    assert "reader_field_missing_default_value" in problems[0]
    assert "version 1" in problems[0]


def test_nested_field_path_and_enum_rule() -> None:
    new = copy.deepcopy(WORKING[REFERRAL])
    env = new["fields"][0]["type"]
    priority = next(f for f in env["fields"] if f["name"] == "priority")
    priority["type"]["symbols"].remove("HIGH")
    problems = check_compatibility(REFERRAL, new, [(1, WORKING[REFERRAL])])
    assert len(problems) == 1
    assert "field 'envelope.priority'" in problems[0]
    assert "missing_enum_symbols" in problems[0]


def test_optional_field_with_default_is_full_compatible() -> None:
    new = copy.deepcopy(WORKING[STATUS_UPDATE])
    new["fields"].append(
        {"name": "channel", "type": ["null", "string"], "default": None, "doc": "x"}
    )
    for mode in CompatibilityMode:
        assert check_compatibility(STATUS_UPDATE, new, [(1, WORKING[STATUS_UPDATE])], mode) == []


def test_new_enum_symbol_is_backward_but_not_forward() -> None:
    new = copy.deepcopy(WORKING[STATUS_UPDATE])
    status = next(f for f in new["fields"] if f["name"] == "status")
    status["type"]["symbols"].append("ARCHIVED")
    old = [(1, WORKING[STATUS_UPDATE])]
    assert check_compatibility(STATUS_UPDATE, new, old, "BACKWARD") == []
    forward = check_compatibility(STATUS_UPDATE, new, old, "FORWARD")
    assert len(forward) == 1
    assert "field 'status'" in forward[0]
    assert "missing_enum_symbols" in forward[0]
    assert "version 1 cannot read the working schema" in forward[0]
    full = check_compatibility(STATUS_UPDATE, new, old, "FULL")
    assert [p.replace("(FULL)", "(FORWARD)") for p in full] == forward
    assert check_compatibility(STATUS_UPDATE, new, old, "NONE") == []


def test_transitive_modes_check_every_version() -> None:
    v1 = _rec({"name": "a", "type": "string"})
    v2 = _rec()
    v3 = _rec({"name": "a", "type": "int", "default": 0})
    history = [(1, v1), (2, v2)]
    assert check_compatibility("t.R", v3, history, "BACKWARD") == []
    problems = check_compatibility("t.R", v3, history, "BACKWARD_TRANSITIVE")
    assert len(problems) == 1
    assert "version 1" in problems[0]
    assert "field 'a'" in problems[0]
    assert "type_mismatch" in problems[0]


def test_type_change_in_nullable_field() -> None:
    new = copy.deepcopy(WORKING[STATUS_UPDATE])
    note = next(f for f in new["fields"] if f["name"] == "note")
    note["type"] = ["null", "long"]
    problems = check_compatibility(STATUS_UPDATE, new, [(1, WORKING[STATUS_UPDATE])])
    assert problems
    assert all("field 'note'" in p for p in problems)


# -- embedded registry -----------------------------------------------------------------------


def test_shipped_registry_has_every_record() -> None:
    registry = EmbeddedRegistry()
    assert registry.names() == sorted(RECORD_NAMES)
    assert registry.by_id(registry.latest("Referral").id).name == REFERRAL
    with pytest.raises(UnknownSchema):
        registry.by_id(424242)
    with pytest.raises(UnknownSchema):
        registry.latest("Nope")


def test_register_adds_versions_only_on_change_and_ids_are_stable(schema_dir: Path) -> None:
    registry = EmbeddedRegistry(schema_dir=schema_dir)
    before = {n: registry.latest(n).id for n in RECORD_NAMES}
    first = {n: registry.versions(n)[0].id for n in RECORD_NAMES}
    shipped = len(registry.versions(STATUS_UPDATE))
    again = registry.register(STATUS_UPDATE)
    assert not again.created
    assert again.schema.id == before[STATUS_UPDATE]

    new = copy.deepcopy(WORKING[STATUS_UPDATE])
    new["fields"].append(
        {"name": "channel", "type": ["null", "string"], "default": None, "doc": "x"}
    )
    reg = registry.register(STATUS_UPDATE, new)
    assert reg.created
    assert reg.schema.version == shipped + 1
    assert reg.schema.id == max(before.values()) + 1

    reloaded = EmbeddedRegistry(schema_dir=schema_dir)
    assert reloaded.latest(STATUS_UPDATE) == reg.schema
    assert [v.version for v in reloaded.versions(STATUS_UPDATE)] == list(range(1, shipped + 2))
    assert {n: reloaded.versions(n)[0].id for n in RECORD_NAMES} == first


def test_register_refuses_incompatible_change(schema_dir: Path) -> None:
    registry = EmbeddedRegistry(schema_dir=schema_dir)
    shipped = len(registry.versions(STATUS_UPDATE))
    new = copy.deepcopy(WORKING[STATUS_UPDATE])
    new["fields"] = [f for f in new["fields"] if f["name"] != "origin_org"]
    new["fields"].append({"name": "required_new", "type": "string", "doc": "x"})
    with pytest.raises(IncompatibleSchema) as info:
        registry.register(STATUS_UPDATE, new)
    assert any("required_new" in p for p in info.value.problems)
    assert len(EmbeddedRegistry(schema_dir=schema_dir).versions(STATUS_UPDATE)) == shipped


def test_corrupt_registry_file_is_a_registry_error(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(RegistryError):
        EmbeddedRegistry(path=path)


def test_registry_from_settings() -> None:
    assert isinstance(registry_from_settings(Settings()), EmbeddedRegistry)
    http = registry_from_settings(
        Settings(
            schema_registry_url="http://127.0.0.1:1",
            schema_registry_username="u",
            schema_registry_password=SecretStr("p"),
        )
    )
    assert isinstance(http, HttpRegistry)


# -- HTTP registry against a small Confluent-API server --------------------------------------


class _FakeConfluent(BaseHTTPRequestHandler):
    """The subset of the Confluent Schema Registry REST API the client uses."""

    subjects: dict[str, list[int]]
    schemas: dict[int, str]
    auth: str

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != self.auth:
            self._send(401, {"error_code": 40101, "message": "unauthorized"})
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorised():
            return
        parts = [unquote(p) for p in self.path.strip("/").split("/")]
        if parts == ["subjects"]:
            return self._send(200, list(self.subjects))
        if parts[0] == "schemas" and len(parts) == 3:
            sid = int(parts[2])
            if sid in self.schemas:
                return self._send(200, {"schema": self.schemas[sid]})
        if parts[0] == "schemas" and len(parts) == 4:
            sid = int(parts[2])
            refs = [
                {"subject": s, "version": i + 1}
                for s, ids in self.subjects.items()
                for i, x in enumerate(ids)
                if x == sid
            ]
            return self._send(200, refs)
        if parts[0] == "subjects" and parts[1] in self.subjects:
            ids = self.subjects[parts[1]]
            if parts[2:] == ["versions"]:
                return self._send(200, list(range(1, len(ids) + 1)))
            if len(parts) == 4:
                v = len(ids) if parts[3] == "latest" else int(parts[3])
                if 1 <= v <= len(ids):
                    sid = ids[v - 1]
                    return self._send(
                        200,
                        {"subject": parts[1], "version": v, "id": sid, "schema": self.schemas[sid]},
                    )
        self._send(404, {"error_code": 40401, "message": "not found"})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        parts = [unquote(p) for p in self.path.strip("/").split("/")]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        subject = parts[1]
        ids = self.subjects.get(subject, [])
        for i, sid in enumerate(ids):
            if self.schemas[sid] == body["schema"]:
                if len(parts) == 2:
                    return self._send(
                        200,
                        {"subject": subject, "version": i + 1, "id": sid, "schema": body["schema"]},
                    )
                return self._send(200, {"id": sid})
        if len(parts) == 2:
            return self._send(404, {"error_code": 40403, "message": "schema not found"})
        sid = max(self.schemas, default=100) + 1
        self.schemas[sid] = body["schema"]
        self.subjects.setdefault(subject, []).append(sid)
        self._send(200, {"id": sid})


@pytest.fixture
def confluent() -> Iterator[str]:
    handler = type(
        "Handler",
        (_FakeConfluent,),
        {
            "subjects": {},
            "schemas": {},
            "auth": "Basic " + base64.b64encode(b"user:secret").decode(),
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_registry_registers_and_serves_schemas(confluent: str) -> None:
    registry = HttpRegistry(confluent, username="user", password="secret")
    assert registry.names() == []
    with pytest.raises(UnknownSchema):
        registry.latest(STATUS_UPDATE)
    first = registry.register(STATUS_UPDATE, WORKING[STATUS_UPDATE])
    assert first.created
    assert first.schema.version == 1
    assert first.schema.name == STATUS_UPDATE
    again = registry.register("StatusUpdate", WORKING[STATUS_UPDATE])
    assert not again.created
    assert again.schema.id == first.schema.id
    assert registry.names() == [STATUS_UPDATE]
    assert registry.by_id(first.schema.id).schema == WORKING[STATUS_UPDATE]
    assert registry.by_id(first.schema.id).version == 1

    codec = Codec(HttpRegistry(confluent, username="user", password="secret"))
    status = make_status_update()
    data = codec.encode(STATUS_UPDATE, status.to_avro())
    assert codec.schema_id_of(data) == first.schema.id
    assert codec.decode(data)[1]["referral_id"] == status.referral_id


def test_http_registry_errors_are_translated(confluent: str) -> None:
    with pytest.raises(RegistryError, match="HTTP 401"):
        HttpRegistry(confluent, username="user", password="wrong").names()
    with pytest.raises(RegistryError):
        HttpRegistry("http://127.0.0.1:1", timeout=0.5).names()
