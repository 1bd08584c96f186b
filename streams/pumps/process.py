"""Stage pump.process.raw -> pump.features: validate, de-duplicate, derive process features."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from vigil.models.assets import AssetCatalog
from vigil.models.features import PROCESS_FEATURE_SET, PROCESS_FEATURES, PROCESS_INPUTS, extract_process_features
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.validation import ProcessLimits, Rejection, check_process

SCHEMA = "vigil.pumps.ProcessSample"
STREAM = "process"


@dataclass(eq=False)
class ProcessAssetState:
    last_seq: int = -1
    last_ts_ms: int = -1
    next_window_seq: int = 0
    # The latest accepted samples (inputs, NaN = missing) and their seqs, for trailing means.
    recent: np.ndarray = field(default_factory=lambda: np.zeros((0, len(PROCESS_INPUTS))))
    recent_seqs: list[int] = field(default_factory=list)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProcessAssetState):
            return NotImplemented
        same = (self.last_seq, self.last_ts_ms, self.next_window_seq, self.recent_seqs) == (
            other.last_seq, other.last_ts_ms, other.next_window_seq, other.recent_seqs)
        return same and np.array_equal(self.recent, other.recent, equal_nan=True)

    def to_bytes(self) -> bytes:
        header = {"last_seq": self.last_seq, "last_ts_ms": self.last_ts_ms, "next_window_seq": self.next_window_seq,
                  "recent_seqs": self.recent_seqs}
        return pack_state(header, {"recent": self.recent})

    @classmethod
    def from_bytes(cls, data: bytes) -> "ProcessAssetState":
        header, arrays = unpack_state(data)
        recent = arrays.get("recent", np.zeros((0, len(PROCESS_INPUTS))))
        return cls(recent=recent, **{"recent_seqs": [], **header})


class ProcessStage:
    """One process sample is one feature window (stream ``process``), of the trailing mean of the
    asset's last ``process_window_samples`` samples (default 1: the sample itself)."""

    source_topic = "pump.process.raw"

    def __init__(self, codec: AvroCodec, limits: ProcessLimits | None = None, assets: AssetCatalog | None = None) -> None:
        self.codec = codec
        self.limits = limits or ProcessLimits()
        self.assets = assets or AssetCatalog()

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
            keep = self.assets.for_asset(asset_id).process_window_samples
            asset.recent = np.vstack([asset.recent, values[None, :]])[-keep:]
            asset.recent_seqs = (asset.recent_seqs + [record["seq"]])[-keep:]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a sensor missing from every recent sample stays NaN
                mean = np.nanmean(asset.recent, axis=0) if keep > 1 else values
            accepted.append((record, asset.next_window_seq, mean, asset.recent_seqs[0]))
            asset.last_seq, asset.last_ts_ms = record["seq"], record["ts_ms"]
            asset.next_window_seq += 1
            result.update_state(asset_id, asset, message.partition)
        if accepted:
            features = extract_process_features(np.vstack([values for _, _, values, _ in accepted]))
            for (record, window_seq, _, first_seq), row in zip(accepted, features):
                result.emit(
                    {
                        "asset_id": record["asset_id"],
                        "stream": STREAM,
                        "seq": window_seq,
                        "ts_ms": record["ts_ms"],
                        "duration_s": 0.0,
                        "fs_hz": 0.0,
                        "rpm": None,
                        "first_input_seq": first_seq,
                        "last_input_seq": record["seq"],
                        "feature_set": PROCESS_FEATURE_SET,
                        "features": dict(zip(PROCESS_FEATURES, row.tolist())),
                    },
                    float(record["ts_ms"]),
                )
        return result
