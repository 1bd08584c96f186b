"""models.control records as a worker's consumer hands them over."""
from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from vigil.models.registry import ModelRegistry
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage
from vigil.streams.runtime.topics import MODELS_CONTROL, SCHEMA_OF_TOPIC


@pytest.fixture
def control_message(codec: AvroCodec) -> Callable[..., RawMessage]:
    """A models.control record as a worker's consumer hands it over; fields overridable."""
    offsets = iter(range(1_000_000))

    def make(registry: ModelRegistry, version: str, tier: str = "edge", **fields: Any) -> RawMessage:
        change = {"topology": "pumps" if tier != "falls" else "falls", "tier": tier, "alias": "active", "action": "promote",
                  "version": version, "previous_version": None,
                  "sha256": registry.metadata(tier, version)["sha256"] if (registry.root / tier / version).is_dir() else "0" * 64,
                  "share": 1.0, "epoch": 1, "who": "test@host", "why": "test", "at_ms": int(time.time() * 1000)} | fields
        value = codec.encode(MODELS_CONTROL, SCHEMA_OF_TOPIC[MODELS_CONTROL], change)
        return RawMessage(MODELS_CONTROL, 0, next(offsets), f"pumps|{tier}|{change['alias']}".encode(), value)

    return make
