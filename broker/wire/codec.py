"""Confluent wire format: magic byte 0, 4-byte big-endian schema id, schemaless Avro datum."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.validation import ValidationError as _FastavroValidationError
from fastavro.validation import validate as _validate

from broker.errors import (
    CorruptDatum,
    NotFramed,
    RecordTooLarge,
    SchemaError,
    SchemaMismatch,
    UnknownSchema,
    UnknownSchemaId,
)
from broker.wire.registry import REFERRAL, Registry, full_name, registry_from_settings

if TYPE_CHECKING:
    from broker.config import Settings

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "HEADER_SIZE",
    "MAGIC_BYTE",
    "ROUTING_FIELDS",
    "Codec",
    "SerializationContext",
]

MAGIC_BYTE = 0
HEADER_SIZE = 5
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024

Headers = Mapping[str, bytes] | Sequence[tuple[str, bytes | None]] | None


@dataclass(frozen=True)
class SerializationContext:
    """Where a message goes or came from: the topic and its headers."""

    topic: str
    headers: Headers = field(default=None)


def _strip_uuid(node: Any) -> Any:
    """Drop ``logicalType: uuid`` so fastavro reads ids as ``str`` (same binary encoding)."""
    if isinstance(node, list):
        return [_strip_uuid(n) for n in node]
    if isinstance(node, dict):
        out = {k: _strip_uuid(v) for k, v in node.items()}
        if out.get("logicalType") == "uuid" and out.get("type") == "string":
            del out["logicalType"]
        return out
    return node


def _parse(schema: dict[str, Any]) -> Any:
    try:
        return fastavro.parse_schema(_strip_uuid(schema), named_schemas={})
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise SchemaError(f"cannot parse schema {schema.get('name')!r}: {exc}") from exc


@dataclass(frozen=True)
class _Writer:
    name: str
    parsed: Any


@dataclass(frozen=True)
class _Current:
    schema_id: int
    header: bytes
    parsed: Any


@dataclass(frozen=True)
class _Envelope:
    writer: Any
    reader: Any  # None when the writer is the current version
    #: The writer's envelope up to ``handling`` (None: its first fields differ from the current)
    routing: Any = None


#: The envelope fields a routing decision reads: the first fields of every Referral version.
ROUTING_FIELDS = (
    "referral_id",
    "case_id",
    "origin_org",
    "origin_country",
    "jurisdictions",
    "priority",
    "urgency_reason",
    "handling",
)


def _routing_view(writer_env: dict[str, Any], current_env: dict[str, Any]) -> Any:
    """The writer's envelope cut after ``handling``, parsed; None if its first fields differ.

    The cut is only taken when those fields are defined exactly as in the current
    schema, so reading it needs no schema resolution.
    """
    fields = writer_env.get("fields", [])
    head = fields[: len(ROUTING_FIELDS)]
    if [f.get("name") for f in head] != list(ROUTING_FIELDS):
        return None
    if head != current_env.get("fields", [])[: len(ROUTING_FIELDS)]:
        return None
    return _parse({**writer_env, "name": f"{writer_env['name']}RoutingView", "fields": head})


class Codec:
    """Encode and decode records in the Confluent wire format with a registry's ids.

    ``max_record_bytes`` bounds both what is encoded and what is decoded.
    """

    def __init__(
        self, registry: Registry, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    ) -> None:
        self.registry = registry
        self.max_record_bytes = max_record_bytes
        self._writers: dict[int, _Writer] = {}
        self._current: dict[str, _Current] = {}
        self._readers: dict[tuple[int, str], Any] = {}
        self._envelopes: dict[int, _Envelope] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Codec:
        """A codec on the registry the settings name, bounded by their ``max_record_bytes``."""
        return cls(registry_from_settings(settings), max_record_bytes=settings.max_record_bytes)

    # -- schema caches -------------------------------------------------------------------------

    def _current_of(self, name: str) -> _Current:
        cur = self._current.get(name)
        if cur is None:
            fname = full_name(name)
            try:
                reg = self.registry.latest(fname)
            except UnknownSchema as exc:
                raise SchemaMismatch(f"no registered schema for record {fname}") from exc
            cur = _Current(
                reg.id, bytes([MAGIC_BYTE]) + reg.id.to_bytes(4, "big"), _parse(reg.schema)
            )
            self._current[name] = cur
            self._current[fname] = cur
        return cur

    def _writer_of(self, schema_id: int) -> _Writer:
        w = self._writers.get(schema_id)
        if w is None:
            try:
                reg = self.registry.by_id(schema_id)
            except UnknownSchema as exc:
                raise UnknownSchemaId(f"unknown schema id {schema_id}") from exc
            w = _Writer(reg.name, _parse(reg.schema))
            self._writers[schema_id] = w
        return w

    def _reader_for(self, schema_id: int, name: str) -> Any:
        """The current schema of ``name`` if it differs from the writer, else None."""
        key = (schema_id, name)
        if key not in self._readers:
            cur = self._current_of(name)
            self._readers[key] = None if cur.schema_id == schema_id else cur.parsed
        return self._readers[key]

    def _envelope_of(self, schema_id: int) -> _Envelope:
        env = self._envelopes.get(schema_id)
        if env is None:
            writer = self._writer_of(schema_id)
            if writer.name != REFERRAL:
                raise SchemaMismatch(f"schema id {schema_id} is a {writer.name}, not a Referral")
            schema = self.registry.by_id(schema_id).schema
            first = schema["fields"][0]
            if first.get("name") != "envelope" or not isinstance(first.get("type"), dict):
                raise SchemaMismatch(f"schema id {schema_id}: first field is not the envelope")
            writer_env = _parse(first["type"])
            reader_env = None
            cur = self._current_of(REFERRAL)
            current = first["type"]
            if cur.schema_id != schema_id:
                current = self.registry.by_id(cur.schema_id).schema["fields"][0]["type"]
                reader_env = _parse(current)
            env = _Envelope(writer_env, reader_env, _routing_view(first["type"], current))
            self._envelopes[schema_id] = env
        return env

    # -- frames --------------------------------------------------------------------------------

    def schema_id_of(self, data: bytes) -> int:
        """The schema id in the frame (NotFramed if there is no Confluent frame)."""
        if len(data) < HEADER_SIZE or data[0] != MAGIC_BYTE:
            raise NotFramed(
                f"not a Confluent frame ({len(data)} bytes; magic byte and schema id expected)"
            )
        return int.from_bytes(data[1:HEADER_SIZE], "big")

    def _check_size(self, size: int) -> None:
        if size > self.max_record_bytes:
            raise RecordTooLarge(
                f"record of {size} bytes exceeds the limit of {self.max_record_bytes}"
            )

    # -- encode / decode -----------------------------------------------------------------------

    def header_of(self, record_name: str) -> bytes:
        """The wire-format frame (magic byte, schema id) of ``record_name``'s current schema."""
        return self._current_of(record_name).header

    def check_size(self, size: int) -> None:
        """Raise RecordTooLarge if a record of ``size`` bytes exceeds ``max_record_bytes``."""
        self._check_size(size)

    def encode(self, record_name: str, datum: dict[str, Any]) -> bytes:
        """Frame and encode ``datum`` with the registry's current schema of ``record_name``."""
        cur = self._current_of(record_name)
        buf = io.BytesIO()
        buf.write(cur.header)
        try:
            fastavro.schemaless_writer(buf, cur.parsed, datum)
        except Exception as exc:  # fastavro raises many types for a datum that does not fit
            raise SchemaMismatch(
                f"datum does not fit {full_name(record_name)}{self._bad_fields(cur.parsed, datum)}"
            ) from exc
        out = buf.getvalue()
        self._check_size(len(out))
        return out

    @staticmethod
    def _bad_fields(parsed: Any, datum: Any) -> str:
        """Names (never values) of the fields fastavro's validator rejects."""
        try:
            _validate(datum, parsed, raise_errors=True)
        except _FastavroValidationError as exc:
            names = sorted({str(e.field) for e in exc.errors if getattr(e, "field", None)})
            return f" (fields: {', '.join(names)})" if names else ""
        except Exception:
            return ""
        return ""

    def decode(self, data: bytes, expected: str | None = None) -> tuple[str, dict[str, Any]]:
        """Decode a framed record: (record full name, datum in the current schema's shape).

        Older writer versions are resolved to the current reader schema. With
        ``expected``, any other record type raises SchemaMismatch.
        """
        self._check_size(len(data))
        schema_id = self.schema_id_of(data)
        writer = self._writer_of(schema_id)
        if expected is not None and writer.name != full_name(expected):
            raise SchemaMismatch(
                f"schema id {schema_id} is a {writer.name}, expected {full_name(expected)}"
            )
        reader = self._reader_for(schema_id, writer.name)
        fo = io.BytesIO(data)
        fo.seek(HEADER_SIZE)
        try:
            datum = fastavro.schemaless_reader(fo, writer.parsed, reader)
        except Exception as exc:  # any decoder failure on untrusted bytes is a corrupt datum
            raise CorruptDatum(
                f"corrupt {writer.name} datum (schema id {schema_id}, {len(data)} bytes): "
                f"{type(exc).__name__}"
            ) from exc
        if fo.tell() != len(data):
            raise CorruptDatum(
                f"{len(data) - fo.tell()} trailing bytes after a {writer.name} datum "
                f"(schema id {schema_id})"
            )
        if not isinstance(datum, dict):
            raise SchemaMismatch(f"schema id {schema_id} does not decode to a record")
        return writer.name, datum

    def decode_envelope(self, data: bytes) -> dict[str, Any]:
        """Decode only the routing envelope of a framed Referral (the body is not parsed)."""
        return self._read_envelope(data, routing=False)

    def decode_routing(self, data: bytes) -> dict[str, Any]:
        """Decode the envelope up to ``handling`` (:data:`ROUTING_FIELDS`): what routing reads.

        Avro is read in order, so neither the rest of the envelope (times,
        references, version) nor the body is parsed: about half the work of
        :meth:`decode_envelope`, with the same checks and errors. A writer whose
        first envelope fields differ from the current schema's is read whole, as
        :meth:`decode_envelope` reads it.
        """
        return self._read_envelope(data, routing=True)

    def _read_envelope(self, data: bytes, *, routing: bool) -> dict[str, Any]:
        size = len(data)
        if size > self.max_record_bytes:
            raise RecordTooLarge(
                f"record of {size} bytes exceeds the limit of {self.max_record_bytes}"
            )
        if size < HEADER_SIZE or data[0] != MAGIC_BYTE:
            raise NotFramed(f"not a Confluent frame ({size} bytes)")
        schema_id = int.from_bytes(data[1:HEADER_SIZE], "big")
        env = self._envelopes.get(schema_id) or self._envelope_of(schema_id)
        fo = io.BytesIO(data)
        fo.seek(HEADER_SIZE)
        try:
            if routing and env.routing is not None:
                datum = fastavro.schemaless_reader(fo, env.routing, None)
            else:
                datum = fastavro.schemaless_reader(fo, env.writer, env.reader)
        except Exception as exc:  # any decoder failure on untrusted bytes is a corrupt datum
            raise CorruptDatum(
                f"corrupt Referral envelope (schema id {schema_id}, {size} bytes): "
                f"{type(exc).__name__}"
            ) from exc
        if fo.tell() >= size:
            raise CorruptDatum(f"Referral (schema id {schema_id}) has no body after its envelope")
        if not isinstance(datum, dict):
            raise SchemaMismatch(f"schema id {schema_id}: envelope is not a record")
        return datum

    # -- serializer contract -------------------------------------------------------------------

    def serializer(
        self, record_name: str, to_dict: Callable[[Any], dict[str, Any]] | None = None
    ) -> Callable[[Any, SerializationContext], bytes]:
        """A ``(obj, ctx) -> bytes`` serializer for producers.

        ``to_dict`` maps the object to its Avro dict; by default an object's
        ``to_avro()`` is used, and a dict is passed through.
        """

        def serialize(obj: Any, ctx: SerializationContext) -> bytes:
            if to_dict is not None:
                datum = to_dict(obj)
            elif isinstance(obj, dict):
                datum = obj
            elif hasattr(obj, "to_avro"):
                datum = obj.to_avro()
            else:
                raise SchemaMismatch(f"cannot serialize a {type(obj).__name__} for {ctx.topic}")
            return self.encode(record_name, datum)

        return serialize

    def deserializer(
        self,
        expected: str | None = None,
        from_dict: Callable[[str, dict[str, Any]], Any] | None = None,
    ) -> Callable[[bytes, SerializationContext], Any]:
        """A ``(bytes, ctx) -> obj`` deserializer for consumers.

        Returns ``from_dict(record_name, datum)`` if given (e.g.
        :func:`broker.wire.models.model_from_avro`), else the datum dict.
        """

        def deserialize(data: bytes, ctx: SerializationContext) -> Any:
            name, datum = self.decode(data, expected)
            return from_dict(name, datum) if from_dict is not None else datum

        return deserialize
