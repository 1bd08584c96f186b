"""Versioned Avro schemas for every vigil topic, and the manifest of their wire ids.

The manifest gives each (schema name, version) a fixed id, so records framed
with those ids can be read without a Schema Registry. With a registry
configured, ids come from the registry instead (see ``streams.codec``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class SchemaEntry:
    id: int
    name: str
    version: int
    file: str

    @property
    def schema(self) -> dict[str, Any]:
        return load_schema_file(self.file)


@lru_cache(maxsize=None)
def load_schema_file(relative_path: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / relative_path).read_text())


@lru_cache(maxsize=1)
def manifest() -> tuple[SchemaEntry, ...]:
    raw = json.loads((SCHEMA_DIR / "manifest.json").read_text())
    entries = tuple(SchemaEntry(**{k: e[k] for k in ("id", "name", "version", "file")}) for e in raw["schemas"])
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise ValueError("schemas/manifest.json reuses a schema id")
    return entries


def latest(name: str) -> SchemaEntry:
    """The newest version of the schema called ``name`` (full name, e.g. vigil.pumps.VibrationChunk)."""
    versions = [e for e in manifest() if e.name == name]
    if not versions:
        raise KeyError(f"no schema named {name!r} in schemas/manifest.json")
    return max(versions, key=lambda e: e.version)


def by_id(schema_id: int) -> SchemaEntry | None:
    for e in manifest():
        if e.id == schema_id:
            return e
    return None
