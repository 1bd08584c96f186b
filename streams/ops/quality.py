"""Stage raw topics + dead letters -> ops.quality, ops.quality.windows: data quality of each device.

Reads what the devices send (``pump.vibration.raw``, ``pump.process.raw``,
``wearable.imu.raw``) with the broker's timestamps, and the raw stages' dead
letters for the records they refused (non-finite, out of range, undecodable),
so a refused record is counted once, as refused. Each stream of a device (a
vibration channel, the process sensors, a wearable's IMU) is judged on its own
over event-time windows (``vigil.models.quality``: cadence, gaps, lateness,
clock skew, stuck sensors, refused shares, sample-rate drift, battery gaps).
A failed check opens a finding; it closes after clean windows. Each closed
window is summarised on ``ops.quality.windows`` under the fleet key, where the
fleet stage applies the brief's fleet rule.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from vigil.models.assets import AssetCatalog
from vigil.models.quality import AssetQuality, QualityEpisodes, QualityThresholds, WindowQuality
from vigil.streams.runtime.codec import AvroCodec, DecodeError
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.topics import (
    FALL_DEADLETTER,
    FLEET_KEY,
    OPS_QUALITY,
    OPS_QUALITY_WINDOWS,
    PUMP_DEADLETTER,
    PUMP_PROCESS_RAW,
    PUMP_VIBRATION_RAW,
    SCHEMA_OF_TOPIC,
    WEARABLE_IMU_RAW,
)
from vigil.streams.runtime.validation import ImuLimits, ProcessLimits, VibrationLimits, check_imu, check_process, check_vibration

TOPOLOGY_OF_KIND = {"vibration": "pumps", "process": "pumps", "wearable": "falls"}
# A device silent for longer than this many windows has each one closed (its owed records counted missing) only
# up to the bound: the first window after the silence says how long it was.
MAX_WINDOWS_CLOSED_AT_ONCE = 24 * 7


@dataclasses.dataclass
class QualityAssetState:
    # stream -> {"quality": AssetQuality dict, "episodes": QualityEpisodes dict, "window_end_ms": int, "last_seq": int}
    streams: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return pack_state({"streams": self.streams})

    @classmethod
    def from_bytes(cls, data: bytes) -> "QualityAssetState":
        return cls(unpack_state(data)[0]["streams"])

    def open_checks(self) -> dict[str, list[str]]:
        """Stream -> its checks with an open finding."""
        return {s: sorted(v["episodes"]["episodes"]) for s, v in self.streams.items() if v["episodes"]["episodes"]}


def finding_record(asset_id: str, stream: str, topology: str, check: str, state: str, opened_ms: int, start_ms: int,
                   end_ms: int, details: Mapping[str, Any], scope: str = "asset", assets: Sequence[str] | None = None) -> dict[str, Any]:
    """A QualityFinding record (schemas/ops/QualityFinding.v1.avsc); its id is fixed by where the episode opened."""
    return {
        "finding_id": f"quality:{scope}:{asset_id}:{stream}:{check}:{opened_ms}", "scope": scope, "asset_id": asset_id,
        "stream": stream, "topology": topology, "check": check, "state": state, "opened_ts_ms": int(opened_ms),
        "window_start_ms": int(start_ms), "window_end_ms": int(end_ms), "assets": sorted(assets if assets is not None else [asset_id]),
        "details_json": json.dumps(details, sort_keys=True, default=float),
    }


class QualityStage:
    """Judges every device stream's data quality per event-time window."""

    def __init__(self, codec: AvroCodec, *, assets: AssetCatalog | None = None, window_s: float = 3600.0, close_after: int = 2,
                 thresholds: QualityThresholds | None = None, wearable_fs_hz: float | None = None,
                 vibration_limits: VibrationLimits | None = None, process_limits: ProcessLimits | None = None,
                 imu_limits: ImuLimits | None = None, topic_of: Mapping[str, str] | None = None) -> None:
        self.codec, self.assets = codec, assets or AssetCatalog()
        self.window_ms = int(window_s * 1000)
        base = replace(thresholds or QualityThresholds(), window_ms=self.window_ms)
        self.thresholds = {"vibration": base, "process": base, "wearable": replace(base, nominal_fs_hz=wearable_fs_hz)}
        self.close_after = close_after
        self.wearable_fs_hz = wearable_fs_hz
        self.vibration_limits, self.process_limits = vibration_limits or VibrationLimits(), process_limits or ProcessLimits()
        self.imu_limits = imu_limits or ImuLimits()
        # The (possibly prefixed) topic names as they arrive -> vigil's names.
        self.logical = {v: k for k, v in (topic_of or {}).items()}

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, QualityAssetState]) -> StageResult[QualityAssetState]:
        result: StageResult[QualityAssetState] = StageResult()
        for message in messages:
            topic = self.logical.get(message.topic, message.topic)
            try:
                record = self.codec.decode(message.value, SCHEMA_OF_TOPIC[topic])
            except DecodeError:
                continue  # the raw stage dead-letters it; it is counted from its dead letter
            if topic in (PUMP_DEADLETTER, FALL_DEADLETTER):
                self._rejection(result, state, message, record)
                continue
            observed = self._valid(topic, record, message.key)
            if observed is None:
                continue  # refused by the raw stage's checks: counted from its dead letter
            asset_id, stream, kind, ts_ms, seq, samples, fs_hz = observed
            device = self._device(result, state, asset_id, message.partition)
            entry = self._stream(device, stream, kind, ts_ms)
            if seq <= entry["last_seq"]:
                continue  # a replay or a duplicate: the raw stage skips it too
            entry["last_seq"] = seq
            quality = self._close_until(result, asset_id, stream, kind, entry, ts_ms)
            quality.observe(ts_ms, message.timestamp_ms, seq, samples, fs_hz, self.thresholds[kind])
            entry["quality"] = quality.to_dict()
        return result

    def _valid(self, topic: str, record: Mapping[str, Any], key: bytes | None) -> tuple[str, str, str, int, int, np.ndarray, float] | None:
        if topic == PUMP_VIBRATION_RAW:
            limit = self.assets.for_asset(record["asset_id"]).max_abs_g if record.get("asset_id") else 0.0
            rejection, samples = check_vibration(record, key, limit, self.vibration_limits)
            if rejection is None:
                return record["asset_id"], f"vibration/{record['channel']}", "vibration", record["ts_ms"], record["seq"], samples, record["fs_hz"]
        elif topic == PUMP_PROCESS_RAW:
            rejection, values = check_process(record, key, self.process_limits)
            if rejection is None:
                return record["asset_id"], "process", "process", record["ts_ms"], record["seq"], values, 0.0
        elif topic == WEARABLE_IMU_RAW:
            rejection, samples = check_imu(record, key, self.wearable_fs_hz or record["fs_hz"], self.imu_limits)
            if rejection is None:
                return record["wearer_id"], "imu", "wearable", record["ts"], record["seq"], samples, record["fs_hz"]
        return None

    def _rejection(self, result: StageResult[QualityAssetState], state: Mapping[str, QualityAssetState], message: RawMessage,
                   letter: Mapping[str, Any]) -> None:
        source = self.logical.get(letter["source_topic"], letter["source_topic"])
        kind = {PUMP_VIBRATION_RAW: "vibration", PUMP_PROCESS_RAW: "process", WEARABLE_IMU_RAW: "wearable"}.get(source)
        asset_id = letter.get("asset_id") or (letter["key"] or b"").decode("utf-8", "replace")
        if kind is None or not asset_id:
            return  # a later stage's dead letter, or one that names no device: not a reading of a device
        device = self._device(result, state, asset_id, message.partition)
        # A refused record's channel is unknown: it counts against the device's first stream of its kind.
        streams = sorted(s for s, v in device.streams.items() if v["kind"] == kind)
        stream = streams[0] if streams else {"vibration": "vibration/x", "process": "process", "wearable": "imu"}[kind]
        entry = self._stream(device, stream, kind, None)
        quality = AssetQuality.from_dict(entry["quality"])
        quality.observe_rejection(None, letter["reason"])
        entry["quality"] = quality.to_dict()

    @staticmethod
    def _device(result: StageResult[QualityAssetState], state: Mapping[str, QualityAssetState], asset_id: str,
                partition: int) -> QualityAssetState:
        device = result.pending_state(asset_id, state) or QualityAssetState()
        result.update_state(asset_id, device, partition)
        return device

    def _stream(self, device: QualityAssetState, stream: str, kind: str, ts_ms: int | None) -> dict[str, Any]:
        entry = device.streams.get(stream)
        if entry is None:
            end = None if ts_ms is None else ts_ms - ts_ms % self.window_ms + self.window_ms
            entry = device.streams[stream] = {
                "kind": kind, "quality": AssetQuality(kind=kind).to_dict(),
                "episodes": QualityEpisodes(close_after=self.close_after).to_dict(), "window_end_ms": end, "last_seq": -1}
        elif entry["window_end_ms"] is None and ts_ms is not None:
            entry["window_end_ms"] = ts_ms - ts_ms % self.window_ms + self.window_ms
        return entry

    def _close_until(self, result: StageResult[QualityAssetState], asset_id: str, stream: str, kind: str, entry: dict[str, Any],
                     ts_ms: int) -> AssetQuality:
        """Closes the stream's windows that end at or before ``ts_ms``; returns its quality state, ready for the record."""
        quality = AssetQuality.from_dict({**entry["quality"], "asset_id": asset_id})
        end = entry["window_end_ms"]
        if ts_ms < end:
            return quality
        last = ts_ms - ts_ms % self.window_ms
        skipped = max(0, (last - end) // self.window_ms + 1 - MAX_WINDOWS_CLOSED_AT_ONCE)
        end += skipped * self.window_ms
        episodes = QualityEpisodes.from_dict(entry["episodes"])
        while end <= last:
            window = quality.close_window(end, self.thresholds[kind])
            self._publish(result, asset_id, stream, kind, window, episodes)
            end += self.window_ms
        entry["window_end_ms"] = end
        entry["episodes"] = episodes.to_dict()
        return quality

    def _publish(self, result: StageResult[QualityAssetState], asset_id: str, stream: str, kind: str, window: WindowQuality,
                 episodes: QualityEpisodes) -> None:
        topology = TOPOLOGY_OF_KIND[kind]
        opened_before = {c: e["opened_ms"] for c, e in episodes.episodes.items()}
        for check, change, details in episodes.step(window):
            opened = details.get("opened_ms", opened_before.get(check, window.window_start_ms))
            result.emit(finding_record(asset_id, stream, topology, check, change, opened, window.window_start_ms,
                                       window.window_end_ms, details), float(window.window_end_ms), OPS_QUALITY)
        result.emit({
            "asset_id": asset_id, "stream": stream, "kind": kind, "topology": topology, "start_ms": window.window_start_ms,
            "end_ms": window.window_end_ms, "readings": window.readings, "bad_readings": window.bad_readings,
            "failed": list(window.failed), "open_checks": list(episodes.open_checks),
            "checks_json": json.dumps(window.checks, sort_keys=True, default=float),
        }, float(window.window_end_ms), OPS_QUALITY_WINDOWS, key=FLEET_KEY)
