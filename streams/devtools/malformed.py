"""Malformed copies of valid raw records, one per dead-letter reason, for demos and tests.

Each copy keeps the seq of the record it was made from; a rejected record
does not advance the asset's state, so the valid original that follows it is
still accepted. ``timestamp_backwards`` needs an earlier chunk on the same
channel to go back from.
"""
from __future__ import annotations

import struct
from typing import Any, Callable

import numpy as np

from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.topics import PUMP_VIBRATION_RAW

VIBRATION = "vigil.pumps.VibrationChunk"


def _samples(value: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(value["samples"], dtype="<f4").copy()


def _with_samples(value: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    return {**value, "samples": x.astype("<f4").tobytes()}


def _nan(value: dict[str, Any]) -> dict[str, Any]:
    x = _samples(value)
    x[len(x) // 2] = np.nan
    return _with_samples(value, x)


def _out_of_range(value: dict[str, Any]) -> dict[str, Any]:
    x = _samples(value)
    x[len(x) // 3] = 5000.0  # g: far beyond any accelerometer's range
    return _with_samples(value, x)


MalformedMaker = Callable[[dict[str, Any], AvroCodec, str, int], tuple[bytes, bytes]]


def _encoded(transform: Callable[[dict[str, Any]], dict[str, Any]]) -> MalformedMaker:
    def make(value: dict[str, Any], codec: AvroCodec, topic: str, max_samples: int) -> tuple[bytes, bytes]:
        return value["asset_id"].encode(), codec.encode(topic, VIBRATION, transform(value))

    return make


def _undecodable(value: dict[str, Any], codec: AvroCodec, topic: str, max_samples: int) -> tuple[bytes, bytes]:
    good = codec.encode(topic, VIBRATION, value)
    return value["asset_id"].encode(), good[: len(good) // 2]  # truncated mid-body


def _unknown_schema_id(value: dict[str, Any], codec: AvroCodec, topic: str, max_samples: int) -> tuple[bytes, bytes]:
    good = codec.encode(topic, VIBRATION, value)
    return value["asset_id"].encode(), struct.pack(">bI", 0, 999_999) + good[5:]


def _schema_mismatch(value: dict[str, Any], codec: AvroCodec, topic: str, max_samples: int) -> tuple[bytes, bytes]:
    process = {"asset_id": value["asset_id"], "seq": value["seq"], "ts_ms": value["ts_ms"], "pressure_bar": 3.0}
    return value["asset_id"].encode(), codec.encode(topic, "vigil.pumps.ProcessSample", process)


def _oversized(value: dict[str, Any], codec: AvroCodec, topic: str, max_samples: int) -> tuple[bytes, bytes]:
    x = np.resize(_samples(value), max_samples + 1)
    return value["asset_id"].encode(), codec.encode(topic, VIBRATION, _with_samples(value, x))


def _key_mismatch(value: dict[str, Any], codec: AvroCodec, topic: str, max_samples: int) -> tuple[bytes, bytes]:
    return f"not-{value['asset_id']}".encode(), codec.encode(topic, VIBRATION, value)


def _misaligned(value: dict[str, Any]) -> dict[str, Any]:
    return {**value, "samples": value["samples"] + b"\x00"}


MALFORMED_VIBRATION: dict[str, MalformedMaker] = {
    "undecodable": _undecodable,
    "unknown_schema_id": _unknown_schema_id,
    "schema_mismatch": _schema_mismatch,
    "key_mismatch": _key_mismatch,
    "non_finite": _encoded(_nan),
    "empty": _encoded(lambda v: {**v, "samples": b""}),
    "oversized": _oversized,
    "non_positive_fs": _encoded(lambda v: {**v, "fs_hz": 0.0}),
    # A day back: before the previous chunk whether chunks are back to back or periodic captures.
    "timestamp_backwards": _encoded(lambda v: {**v, "ts_ms": v["ts_ms"] - 86_400_000}),
    "out_of_range": _encoded(_out_of_range),
}
# A second way to be undecodable: samples that are not whole float32 values.
MISALIGNED_SAMPLES = _encoded(_misaligned)


def malformed_vibration(
    reason: str, value: dict[str, Any], codec: AvroCodec, topic: str = PUMP_VIBRATION_RAW, max_samples: int = 240_000
) -> tuple[bytes, bytes]:
    """(key, value bytes) of a copy of ``value`` that the vibration stage rejects with ``reason``."""
    try:
        maker = MALFORMED_VIBRATION[reason]
    except KeyError:
        raise ValueError(f"no malformed record for reason {reason!r}; known: {sorted(MALFORMED_VIBRATION)}") from None
    return maker(value, codec, topic, max_samples)
