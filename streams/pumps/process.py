"""Stage pump.process.raw -> pump.features: validate, de-duplicate, derive process features."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from models.features import PROCESS_FEATURE_SET, PROCESS_FEATURES, extract_process_features
from streams.codec import AvroCodec
from streams.stage import RawMessage, StageResult
from streams.state import pack_state, unpack_state
from streams.validation import ProcessLimits, Rejection, check_process

SCHEMA = "vigil.pumps.ProcessSample"
STREAM = "process"


@dataclass
class ProcessAssetState:
    last_seq: int = -1
    last_ts_ms: int = -1
    next_window_seq: int = 0

    def to_bytes(self) -> bytes:
        return pack_state({"last_seq": self.last_seq, "last_ts_ms": self.last_ts_ms, "next_window_seq": self.next_window_seq})

    @classmethod
    def from_bytes(cls, data: bytes) -> "ProcessAssetState":
        header, _ = unpack_state(data)
        return cls(**header)


class ProcessStage:
    """One process sample is one feature window (stream ``process``)."""

    source_topic = "pump.process.raw"

    def __init__(self, codec: AvroCodec, limits: ProcessLimits | None = None) -> None:
        self.codec = codec
        self.limits = limits or ProcessLimits()

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, ProcessAssetState]) -> StageResult[ProcessAssetState]:
        result: StageResult[ProcessAssetState] = StageResult()
        accepted: list[tuple[dict[str, Any], int, np.ndarray]] = []
        for message in messages:
            record = result.decode(self.codec, message, SCHEMA)
            if record is None:
                continue
            rejection, values = check_process(record, message.key, self.limits)
            if rejection is not None:
                result.reject(message, rejection)
                continue
            asset_id = record["asset_id"]
            asset = result.pending_state(asset_id, state) or ProcessAssetState()
            if not result.admit(record["seq"], asset.last_seq):
                continue
            if record["ts_ms"] < asset.last_ts_ms:
                result.reject(
                    message,
                    Rejection("timestamp_backwards", f"ts_ms {record['ts_ms']} is before the previous sample's {asset.last_ts_ms}", asset_id),
                )
                continue
            accepted.append((record, asset.next_window_seq, values))
            asset.last_seq, asset.last_ts_ms = record["seq"], record["ts_ms"]
            asset.next_window_seq += 1
            result.update_state(asset_id, asset, message.partition)
        if accepted:
            features = extract_process_features(np.vstack([values for _, _, values in accepted]))
            for (record, window_seq, _), row in zip(accepted, features):
                result.emit(
                    {
                        "asset_id": record["asset_id"],
                        "stream": STREAM,
                        "seq": window_seq,
                        "ts_ms": record["ts_ms"],
                        "duration_s": 0.0,
                        "fs_hz": 0.0,
                        "rpm": None,
                        "first_input_seq": record["seq"],
                        "last_input_seq": record["seq"],
                        "feature_set": PROCESS_FEATURE_SET,
                        "features": dict(zip(PROCESS_FEATURES, row.tolist())),
                    },
                    float(record["ts_ms"]),
                )
        return result
