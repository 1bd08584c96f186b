"""Avro in Confluent's wire format: magic byte 0, 4-byte big-endian schema id, Avro body.

Producers that use confluent-kafka's ``AvroSerializer`` interoperate with
vigil. Schema ids come from a Schema Registry when ``VIGIL_SCHEMA_REGISTRY``
is set, otherwise from ``schemas/manifest.json``. A record is always read
into vigil's newest version of the expected schema (Avro schema resolution),
so producers can move between compatible versions at their own pace.
"""
from __future__ import annotations

import io
import json
import logging
import struct
import threading
from typing import Any, Mapping, Protocol

import fastavro
from fastavro.read import SchemaResolutionError

from vigil import schemas

logger = logging.getLogger(__name__)

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")


class DecodeError(Exception):
    """A record that cannot be read; ``reason`` is a dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SchemaIds(Protocol):
    """Where schema ids come from: the manifest in ``schemas/`` or a Schema Registry."""

    def writer_id(self, name: str, topic: str) -> int: ...

    def writer_schema(self, schema_id: int) -> dict[str, Any] | None: ...


class ManifestSchemaIds:
    """Ids fixed by ``schemas/manifest.json``; the topic plays no part."""

    def writer_id(self, name: str, topic: str) -> int:
        return schemas.latest(name).id

    def writer_schema(self, schema_id: int) -> dict[str, Any] | None:
        entry = schemas.by_id(schema_id)
        return None if entry is None else entry.schema


class RegistrySchemaIds:
    """Ids from a Confluent Schema Registry, subjects named ``<topic>-value``
    (TopicNameStrategy, the AvroSerializer default). ``mock://`` URLs use
    confluent-kafka's in-process mock registry."""

    def __init__(self, url_or_client: Any, client_config: Mapping[str, Any] | None = None) -> None:
        if isinstance(url_or_client, str):
            from confluent_kafka.schema_registry import SchemaRegistryClient

            url_or_client = SchemaRegistryClient.new_client({"url": url_or_client, **(client_config or {})})
        self.client = url_or_client
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any] | None] = {}
        self._lock = threading.Lock()

    def writer_id(self, name: str, topic: str) -> int:
        key = (name, topic)
        if key not in self._ids:
            from confluent_kafka.schema_registry import Schema

            text = json.dumps(schemas.latest(name).schema)
            with self._lock:
                self._ids[key] = self.client.register_schema(f"{topic}-value", Schema(text, "AVRO"))
        return self._ids[key]

    def writer_schema(self, schema_id: int) -> dict[str, Any] | None:
        if schema_id not in self._schemas:
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            try:
                found = self.client.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if getattr(exc, "http_status_code", None) == 404:
                    found = None  # unknown ids are remembered: a flood of them must not hammer the registry
                else:
                    raise
            with self._lock:
                self._schemas[schema_id] = None if found is None else json.loads(found.schema_str)
        return self._schemas[schema_id]


def _full_name(schema: Mapping[str, Any]) -> str:
    name = schema.get("name", "")
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


class AvroCodec:
    """Encodes and decodes vigil records; thread-safe for concurrent use."""

    def __init__(self, ids: SchemaIds | None = None) -> None:
        self.ids: SchemaIds = ids if ids is not None else ManifestSchemaIds()
        self._parsed_readers: dict[str, Any] = {}
        self._parsed_writers: dict[int, Any] = {}
        self._writer_names: dict[int, str] = {}
        # Writer schemas identical to vigil's newest version skip Avro schema resolution.
        self._writer_is_reader: dict[int, bool] = {}

    def _reader(self, name: str) -> Any:
        parsed = self._parsed_readers.get(name)
        if parsed is None:
            entry = schemas.latest(name)
            parsed = fastavro.parse_schema(entry.schema, named_schemas={})
            self._parsed_readers[name] = parsed
        return parsed

    def _writer(self, schema_id: int) -> Any:
        parsed = self._parsed_writers.get(schema_id)
        if parsed is None:
            raw = self.ids.writer_schema(schema_id)
            if raw is None:
                raise DecodeError("unknown_schema_id", f"schema id {schema_id} is not known")
            parsed = fastavro.parse_schema(raw, named_schemas={})
            self._parsed_writers[schema_id] = parsed
            self._writer_names[schema_id] = name = _full_name(raw)
            try:
                self._writer_is_reader[schema_id] = raw == schemas.latest(name).schema
            except KeyError:
                self._writer_is_reader[schema_id] = False
        return parsed

    def encode(self, topic: str, name: str, record: Mapping[str, Any]) -> bytes:
        schema_id = self.ids.writer_id(name, topic)
        buf = io.BytesIO()
        buf.write(_HEADER.pack(MAGIC_BYTE, schema_id))
        fastavro.schemaless_writer(buf, self._reader(name), record)
        return buf.getvalue()

    def decode(self, data: bytes | None, name: str) -> dict[str, Any]:
        """Read ``data`` as the newest version of schema ``name``, or raise DecodeError."""
        if data is None or len(data) < _HEADER.size:
            raise DecodeError("undecodable", f"{0 if data is None else len(data)} bytes is shorter than the 5-byte header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise DecodeError("undecodable", f"magic byte {magic} is not 0 (not Confluent Avro framing)")
        writer = self._writer(schema_id)
        if self._writer_names[schema_id] != name:
            raise DecodeError(
                "schema_mismatch", f"schema id {schema_id} is {self._writer_names[schema_id]}, expected {name}"
            )
        reader = self._reader(name)
        buf = io.BytesIO(data)
        buf.seek(_HEADER.size)
        try:
            record = fastavro.schemaless_reader(buf, writer, None if self._writer_is_reader[schema_id] else reader)
        except SchemaResolutionError as exc:
            raise DecodeError("schema_mismatch", f"schema id {schema_id} cannot be read as {name}: {exc}") from None
        except Exception as exc:  # fastavro raises many types on truncated or corrupt bodies
            raise DecodeError("undecodable", f"corrupt Avro body for schema id {schema_id}: {type(exc).__name__}: {exc}") from None
        if buf.tell() != len(data):
            raise DecodeError("undecodable", f"{len(data) - buf.tell()} trailing bytes after the Avro body")
        return record  # type: ignore[return-value]


def codec_from_settings(schema_registry_url: str | None, registry_config: Mapping[str, Any] | None = None) -> AvroCodec:
    if schema_registry_url:
        return AvroCodec(RegistrySchemaIds(schema_registry_url, registry_config))
    return AvroCodec(ManifestSchemaIds())


def register_faust_codecs(codec: AvroCodec, topic_schemas: Mapping[str, str]) -> dict[str, str]:
    """Register one Faust codec per topic (the registry subject depends on the topic).

    Returns the mapping topic -> codec name, for ``value_serializer=``.
    """
    from faust.serializers import codecs

    class _TopicAvroCodec(codecs.Codec):
        def __init__(self, topic: str, name: str) -> None:
            super().__init__(topic=topic, name=name)
            self.topic, self.name = topic, name

        def _dumps(self, obj: Any) -> bytes:
            return codec.encode(self.topic, self.name, obj)

        def _loads(self, s: bytes) -> Any:
            return codec.decode(s, self.name)

    names = {}
    for topic, schema_name in topic_schemas.items():
        codec_name = f"vigil-avro:{topic}"
        codecs.register(codec_name, _TopicAvroCodec(topic, schema_name))
        names[topic] = codec_name
    return names
