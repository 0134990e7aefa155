"""Schema ids for every schema version: the embedded file-backed registry and an HTTP client."""

from __future__ import annotations

import base64
import copy
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form

import schemas as _schemas_pkg
from broker.errors import IncompatibleSchema, RegistryError, SchemaError, UnknownSchema

if TYPE_CHECKING:
    from broker.config import Settings

__all__ = [
    "HANDOVER_BATCH",
    "HANDOVER_EVENT",
    "NAMESPACE",
    "POLICE_MESSAGE",
    "RECORD_NAMES",
    "REFERRAL",
    "STATUS_UPDATE",
    "EmbeddedRegistry",
    "HttpRegistry",
    "RegisteredSchema",
    "Registration",
    "Registry",
    "default_registry_file",
    "default_schema_dir",
    "full_name",
    "load_working_schemas",
    "normalised_json",
    "registry_from_settings",
    "schema_fingerprint",
]

#: Namespace of every record of the contract (``v1``: a breaking change gets ``v2``).
NAMESPACE = "org.referralbroker.v1"
REFERRAL = f"{NAMESPACE}.Referral"
STATUS_UPDATE = f"{NAMESPACE}.StatusUpdate"
HANDOVER_EVENT = f"{NAMESPACE}.HandoverEvent"
HANDOVER_BATCH = f"{NAMESPACE}.HandoverBatch"
#: Police-to-police requests (:mod:`broker.requests`).
POLICE_MESSAGE = f"{NAMESPACE}.PoliceMessage"
#: The top-level records that are registered and put on the wire.
RECORD_NAMES: tuple[str, ...] = (
    REFERRAL,
    STATUS_UPDATE,
    HANDOVER_EVENT,
    HANDOVER_BATCH,
    POLICE_MESSAGE,
)

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})


def full_name(name: str) -> str:
    """``Referral`` → ``org.referralbroker.v1.Referral``; full names pass through."""
    return name if "." in name else f"{NAMESPACE}.{name}"


def default_schema_dir() -> Path:
    """The directory of the shipped ``.avsc`` files (the ``schemas`` package)."""
    return Path(_schemas_pkg.__file__).resolve().parent


def default_registry_file(schema_dir: Path | None = None) -> Path:
    """``registry.json`` next to the schemas."""
    return (schema_dir or default_schema_dir()) / "registry.json"


def normalised_json(schema: Any) -> str:
    """Compact JSON with sorted keys: equal strings ⇔ equal schemas (docs and defaults included)."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def schema_fingerprint(schema: Any) -> str:
    """``sha256:<hex>`` of the schema's Avro Parsing Canonical Form."""
    pcf = to_parsing_canonical_form(schema)
    return "sha256:" + str(_fingerprint(pcf, "SHA-256"))


def _read_types(schema_dir: Path) -> dict[str, dict[str, Any]]:
    types: dict[str, dict[str, Any]] = {}
    for path in sorted(schema_dir.glob("*.avsc")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaError(f"{path.name}: not a readable JSON schema: {exc}") from exc
        if not isinstance(data, dict) or data.get("type") not in _NAMED or "name" not in data:
            raise SchemaError(f"{path.name}: must hold exactly one named type (record/enum/fixed)")
        name = _qualify(str(data["name"]), data.get("namespace"))
        if path.stem != name:
            raise SchemaError(f"{path.name}: file must be named {name}.avsc")
        types[name] = data
    return types


def _qualify(name: str, namespace: Any) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _expand(
    node: Any, types: Mapping[str, dict[str, Any]], defined: set[str], namespace: str | None
) -> Any:
    """Inline the first use of every named type; later uses stay full-name references."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        name = _qualify(node, namespace)
        if name in defined:
            return name
        if name not in types:
            raise UnknownSchema(f"schema refers to unknown type {node!r}")
        return _expand(copy.deepcopy(types[name]), types, defined, namespace)
    if isinstance(node, list):
        return [_expand(branch, types, defined, namespace) for branch in node]
    if not isinstance(node, dict):
        raise SchemaError(f"not a schema node: {type(node).__name__}")
    out = dict(node)
    kind = node.get("type")
    if kind in _NAMED:
        name = _qualify(str(node["name"]), node.get("namespace") or namespace)
        if name in defined:
            raise SchemaError(f"type {name} is defined twice")
        defined.add(name)
        namespace = name.rpartition(".")[0] or None
        if kind in ("record", "error"):
            out["fields"] = [
                {**f, "type": _expand(f["type"], types, defined, namespace)} for f in node["fields"]
            ]
    elif kind == "array":
        out["items"] = _expand(node["items"], types, defined, namespace)
    elif kind == "map":
        out["values"] = _expand(node["values"], types, defined, namespace)
    elif isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in _PRIMITIVES):
        out["type"] = _expand(kind, types, defined, namespace)
    return out


def load_working_schemas(schema_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """The expanded, self-contained working schema of every top-level record, by full name."""
    types = _read_types(schema_dir or default_schema_dir())
    out: dict[str, dict[str, Any]] = {}
    for name in RECORD_NAMES:
        if name not in types:
            raise UnknownSchema(f"no working schema {name}.avsc")
        expanded = _expand(name, types, set(), None)
        expanded.setdefault("namespace", name.rpartition(".")[0])
        out[name] = expanded
    return out


@dataclass(frozen=True)
class RegisteredSchema:
    """One registered version of a record's schema."""

    id: int
    name: str
    version: int
    fingerprint: str
    schema: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The entry as stored in ``registry.json``."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "schema": self.schema,
        }


@dataclass(frozen=True)
class Registration:
    """Result of :meth:`Registry.register`: the version, and whether it is new."""

    schema: RegisteredSchema
    created: bool


@runtime_checkable
class Registry(Protocol):
    """Where schema ids come from. Ids are immutable; versions only ever get added."""

    def by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema registered under ``schema_id`` (UnknownSchema if none)."""
        ...

    def latest(self, name: str) -> RegisteredSchema:
        """The newest version of record ``name`` (UnknownSchema if none)."""
        ...

    def versions(self, name: str) -> list[RegisteredSchema]:
        """Every version of record ``name``, oldest first (empty if none)."""
        ...

    def names(self) -> list[str]:
        """Full names of the records with at least one version."""
        ...

    def register(self, name: str, schema: dict[str, Any]) -> Registration:
        """Add ``schema`` as a new version of ``name`` unless it equals the latest one."""
        ...


class EmbeddedRegistry:
    """The file-backed registry: ``registry.json`` lists every version ever registered.

    ``register`` refuses a schema that is not BACKWARD compatible with the latest
    version (the same rule ``referral schema check`` applies by default).
    """

    def __init__(self, path: Path | None = None, schema_dir: Path | None = None) -> None:
        self.schema_dir = schema_dir or default_schema_dir()
        self.path = path or default_registry_file(self.schema_dir)
        self._lock = threading.Lock()
        self._by_id: dict[int, RegisteredSchema] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = data["schemas"]
            for e in entries:
                rs = RegisteredSchema(
                    id=int(e["id"]),
                    name=str(e["name"]),
                    version=int(e["version"]),
                    fingerprint=str(e["fingerprint"]),
                    schema=dict(e["schema"]),
                )
                if rs.id in self._by_id:
                    raise RegistryError(f"{self.path}: schema id {rs.id} appears twice")
                self._by_id[rs.id] = rs
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{self.path}: unreadable registry file: {exc}") from exc

    def _save(self) -> None:
        data = {
            "format": 1,
            "doc": "Every schema version ever registered; ids never change. "
            "Written by `referral schema register`.",
            "schemas": [self._by_id[i].to_json() for i in sorted(self._by_id)],
        }
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(self.path)

    def by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema registered under ``schema_id``."""
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchema(f"no schema with id {schema_id}") from None

    def versions(self, name: str) -> list[RegisteredSchema]:
        """Every version of ``name``, oldest first."""
        name = full_name(name)
        return sorted((s for s in self._by_id.values() if s.name == name), key=lambda s: s.version)

    def latest(self, name: str) -> RegisteredSchema:
        """The newest version of ``name``."""
        found = self.versions(name)
        if not found:
            raise UnknownSchema(f"no registered schema {full_name(name)}")
        return found[-1]

    def names(self) -> list[str]:
        """Full names of every registered record."""
        return sorted({s.name for s in self._by_id.values()})

    def register(self, name: str, schema: dict[str, Any] | None = None) -> Registration:
        """Add ``schema`` (default: the working schema) as a new version if it changed."""
        from broker.wire.compat import CompatibilityMode, check_compatibility

        name = full_name(name)
        if schema is None:
            schema = load_working_schemas(self.schema_dir)[name]
        with self._lock:
            previous = self.versions(name)
            if previous and normalised_json(previous[-1].schema) == normalised_json(schema):
                return Registration(previous[-1], created=False)
            problems = check_compatibility(
                name, schema, [(p.version, p.schema) for p in previous], CompatibilityMode.BACKWARD
            )
            if problems:
                raise IncompatibleSchema(
                    f"{name}: not registered, incompatible change:\n" + "\n".join(problems),
                    problems,
                )
            new = RegisteredSchema(
                id=max(self._by_id, default=0) + 1,
                name=name,
                version=(previous[-1].version + 1) if previous else 1,
                fingerprint=schema_fingerprint(schema),
                schema=copy.deepcopy(schema),
            )
            self._by_id[new.id] = new
            self._save()
        return Registration(new, created=True)


class HttpRegistry:
    """Client of a Confluent-compatible Schema Registry (subject = record full name).

    Lookups are cached (ids are immutable); ``latest`` is cached per subject
    until :meth:`refresh`. Only :meth:`register` writes.
    """

    _CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._auth: str | None = None
        if username is not None:
            token = f"{username}:{password or ''}".encode()
            self._auth = "Basic " + base64.b64encode(token).decode("ascii")
        self._by_id: dict[int, RegisteredSchema] = {}
        self._latest: dict[str, RegisteredSchema] = {}

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", self._CONTENT_TYPE)
        if data is not None:
            req.add_header("Content-Type", self._CONTENT_TYPE)
        if self._auth:
            req.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise UnknownSchema(f"schema registry: not found: {path}") from exc
            if exc.code == 409:
                raise IncompatibleSchema(f"schema registry refused {path}: incompatible") from exc
            raise RegistryError(f"schema registry: HTTP {exc.code} on {method} {path}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(f"schema registry at {self.url} failed: {exc}") from exc

    @staticmethod
    def _subject(name: str) -> str:
        return urllib.parse.quote(full_name(name), safe="")

    def _entry(self, schema_id: int, subject: str, version: int, text: str) -> RegisteredSchema:
        schema = json.loads(text)
        return RegisteredSchema(
            id=schema_id,
            name=subject,
            version=version,
            fingerprint=schema_fingerprint(schema),
            schema=schema,
        )

    def by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema with that global id (cached forever: ids are immutable)."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        got = self._request("GET", f"/schemas/ids/{int(schema_id)}")
        schema = json.loads(got["schema"])
        name = _qualify(str(schema.get("name", "")), schema.get("namespace"))
        version = 0
        try:
            refs = self._request("GET", f"/schemas/ids/{int(schema_id)}/versions")
            for ref in refs:
                if ref.get("subject") == name:
                    version = int(ref["version"])
        except SchemaError:
            pass  # older registries lack this endpoint; the version is informative only
        entry = self._entry(schema_id, name, version, got["schema"])
        self._by_id[schema_id] = entry
        return entry

    def versions(self, name: str) -> list[RegisteredSchema]:
        """Every version of ``name``, oldest first."""
        try:
            numbers = self._request("GET", f"/subjects/{self._subject(name)}/versions")
        except UnknownSchema:
            return []
        out = []
        for n in sorted(int(v) for v in numbers):
            got = self._request("GET", f"/subjects/{self._subject(name)}/versions/{n}")
            out.append(self._entry(int(got["id"]), full_name(name), n, got["schema"]))
        return out

    def latest(self, name: str) -> RegisteredSchema:
        """The newest version of ``name`` (cached until :meth:`refresh`)."""
        name = full_name(name)
        cached = self._latest.get(name)
        if cached is not None:
            return cached
        got = self._request("GET", f"/subjects/{self._subject(name)}/versions/latest")
        entry = self._entry(int(got["id"]), name, int(got["version"]), got["schema"])
        self._latest[name] = entry
        self._by_id.setdefault(entry.id, entry)
        return entry

    def names(self) -> list[str]:
        """Subjects that are records of this contract."""
        subjects = self._request("GET", "/subjects")
        return sorted(s for s in subjects if isinstance(s, str) and s.startswith(NAMESPACE + "."))

    def refresh(self) -> None:
        """Forget cached ``latest`` answers (after someone registered a new version)."""
        self._latest.clear()

    def register(self, name: str, schema: dict[str, Any]) -> Registration:
        """Register ``schema`` under subject ``name``; the registry applies its own rule."""
        name = full_name(name)
        subject = self._subject(name)
        body = {"schema": normalised_json(schema)}
        try:
            found = self._request("POST", f"/subjects/{subject}", body)
            entry = self._entry(int(found["id"]), name, int(found["version"]), body["schema"])
            return Registration(entry, created=False)
        except UnknownSchema:
            pass
        got = self._request("POST", f"/subjects/{subject}/versions", body)
        self.refresh()
        entry = self.latest(name)
        if entry.id != int(got["id"]):
            entry = self.by_id(int(got["id"]))
        return Registration(entry, created=True)


def registry_from_settings(settings: Settings, schema_dir: Path | None = None) -> Registry:
    """An HttpRegistry if ``schema_registry_url`` is set, else the embedded registry."""
    if settings.schema_registry_url:
        password = settings.schema_registry_password
        return HttpRegistry(
            settings.schema_registry_url,
            username=settings.schema_registry_username,
            password=password.get_secret_value() if password is not None else None,
        )
    return EmbeddedRegistry(schema_dir=schema_dir)
