"""Records of the fall topology, as the stages receive them."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from vigil.streams.falls.replay import WearerTrial, wearer_records
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage
from vigil.streams.runtime.topics import SCHEMA_OF_TOPIC

T0_MS = 1_767_225_600_000


@pytest.fixture
def imu_records() -> Callable[..., list[dict[str, Any]]]:
    """ImuChunk records of signals (each a trial, 5 s apart), 1 s chunks from T0_MS."""

    def make(*signals: np.ndarray, wearer: str = "w-1", chunk_s: float = 1.0, first_seq: int = 0) -> list[dict[str, Any]]:
        trials = [WearerTrial(s, False, "crafted", "test") for s in signals]
        return wearer_records(wearer, trials, T0_MS, chunk_s=chunk_s, first_seq=first_seq)[0]

    return make


@pytest.fixture
def to_messages(codec: AvroCodec) -> Callable[..., list[RawMessage]]:
    """Encode records as they arrive on ``topic``, keyed by their wearer."""

    def convert(records: list[dict[str, Any]], topic: str, partition: int = 0, start: int = 0) -> list[RawMessage]:
        return [RawMessage(topic, partition, start + i, r["wearer_id"].encode(), codec.encode(topic, SCHEMA_OF_TOPIC[topic], r))
                for i, r in enumerate(records)]

    return convert
