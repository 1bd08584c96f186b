"""Stage pump.vibration.raw -> pump.features: validate, de-duplicate, re-window, extract features."""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from vigil.models.assets import AssetCatalog, AssetConfig
from vigil.models.features import VIBRATION_FEATURE_SET, VIBRATION_FEATURES, extract_window_features
from vigil.models.windowing import ChannelBuffer, Window, append_chunk, gap_tolerance_ms
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.validation import Rejection, VibrationLimits, check_record_size, check_vibration

logger = logging.getLogger(__name__)

SCHEMA = "vigil.pumps.VibrationChunk"


@dataclass
class VibrationAssetState:
    """Per asset: the last accepted seq (de-duplication) and each channel's pending samples."""

    last_seq: int = -1
    channels: dict[str, ChannelBuffer] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        header: dict[str, Any] = {"last_seq": self.last_seq, "channels": {}}
        arrays = {}
        for name, b in self.channels.items():
            header["channels"][name] = {
                "fs_hz": b.fs_hz,
                "rpm": b.rpm,
                "start_ts_ms": b.start_ts_ms,
                "first_input_seq": b.first_input_seq,
                "last_input_seq": b.last_input_seq,
                "next_window_seq": b.next_window_seq,
                "discarded_samples": b.discarded_samples,
            }
            arrays[name] = b.samples
        return pack_state(header, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> "VibrationAssetState":
        header, arrays = unpack_state(data)
        channels = {name: ChannelBuffer(samples=arrays[name].astype(np.float32), **h) for name, h in header["channels"].items()}
        return cls(last_seq=header["last_seq"], channels=channels)


class VibrationStage:
    """Decode and check waveform chunks, skip duplicate (asset, seq), cut windows, extract features.

    ``process`` takes a batch and the current state per asset; it returns the
    FeatureWindow records, the dead letters and the new state of every asset
    it touched. Features of the whole batch are extracted in grouped,
    vectorized calls.
    """

    source_topic = "pump.vibration.raw"

    def __init__(self, codec: AvroCodec, assets: AssetCatalog | None = None, limits: VibrationLimits | None = None) -> None:
        self.codec = codec
        self.assets = assets or AssetCatalog()
        self.limits = limits or VibrationLimits()

    def process(
        self, messages: Sequence[RawMessage], state: Mapping[str, VibrationAssetState]
    ) -> StageResult[VibrationAssetState]:
        result: StageResult[VibrationAssetState] = StageResult()
        windows: list[tuple[str, str, Window, AssetConfig]] = []
        for message in messages:
            # A record longer than any valid chunk is rejected before it costs a decode or any feature work.
            too_large = check_record_size(message.value, self.limits.max_record_bytes, f"chunk of at most {self.limits.max_samples} samples")
            if too_large is not None:
                result.reject(message, too_large)
                continue
            record = result.decode(self.codec, message, SCHEMA)
            if record is None:
                continue
            config = self.assets.for_asset(record["asset_id"])
            rejection, samples = check_vibration(record, message.key, config.max_abs_g, self.limits)
            if rejection is not None:
                result.reject(message, rejection)
                continue
            asset_id = record["asset_id"]
            asset = result.pending_state(asset_id, state) or VibrationAssetState()
            if not result.admit(record["seq"], asset.last_seq):
                continue
            channel = record["channel"]
            buffer = asset.channels.get(channel)
            if buffer is not None and record["ts_ms"] < buffer.end_ts_ms - gap_tolerance_ms(buffer.fs_hz):
                result.reject(
                    message,
                    Rejection(
                        "timestamp_backwards",
                        f"channel {channel} starts at {record['ts_ms']} ms, before the previous chunk ended at {buffer.end_ts_ms:.0f} ms",
                        asset_id,
                    ),
                )
                continue
            buffer, done = append_chunk(
                buffer,
                seq=record["seq"],
                ts_ms=float(record["ts_ms"]),
                fs_hz=record["fs_hz"],
                rpm=record.get("rpm"),
                samples=samples,
                window_s=config.window_s,
            )
            asset.channels[channel] = buffer
            asset.last_seq = record["seq"]
            result.update_state(asset_id, asset, message.partition)
            windows.extend((asset_id, channel, w, config) for w in done)
        for record in self.feature_records(windows):
            result.emit(record, record["ts_ms"] + 1000.0 * record["duration_s"])
        return result

    @staticmethod
    def feature_records(windows: Sequence[tuple[str, str, Window, AssetConfig]]) -> list[dict[str, Any]]:
        """FeatureWindow records, in input order, features extracted per (length, fs, config) group."""
        groups: dict[tuple[int, float, int], list[int]] = defaultdict(list)
        for i, (_, _, w, config) in enumerate(windows):
            groups[(len(w.samples), w.fs_hz, id(config))].append(i)
        features = np.empty((len(windows), len(VIBRATION_FEATURES)))
        for (_, fs_hz, _), idx in groups.items():
            config = windows[idx[0]][3]
            batch = np.stack([windows[i][2].samples for i in idx])
            rpm = np.array([np.nan if windows[i][2].rpm is None else windows[i][2].rpm for i in idx])
            features[idx] = extract_window_features(
                batch, fs_hz, rpm, config.fault_orders, config.demod_band(fs_hz), config.slip_tolerance
            )
        records = []
        for (asset_id, channel, w, _), row in zip(windows, features):
            records.append(
                {
                    "asset_id": asset_id,
                    "stream": f"vibration/{channel}",
                    "seq": w.seq,
                    "ts_ms": int(round(w.ts_ms)),
                    "duration_s": w.duration_s,
                    "fs_hz": w.fs_hz,
                    "rpm": w.rpm,
                    "first_input_seq": w.first_input_seq,
                    "last_input_seq": w.last_input_seq,
                    "feature_set": VIBRATION_FEATURE_SET,
                    "features": dict(zip(VIBRATION_FEATURES, row.tolist())),
                }
            )
        return records
