"""Stage ops.quality.windows -> ops.quality: the brief's fleet rule over every device's closed windows.

More than 5 % of devices with an open quality finding, or more than 1 % of
readings bad, in a window: the fleet finding opens (per topology: pumps,
falls), naming the devices and the checks failing; it closes after clean
windows. Devices close their windows at their own pace, so a fleet window is
judged once summaries a whole window later have arrived; a summary for a
judged window is counted as late.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from vigil.models.drift import DriftEpisode
from vigil.models.quality import CHECKS, QualityThresholds, WindowQuality, fleet_verdict
from vigil.streams.ops.quality import finding_record
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.topics import FLEET_KEY

WINDOW_SCHEMA = "vigil.ops.QualityWindow"


@dataclasses.dataclass
class FleetQualityState:
    watermark_ms: dict[str, int] = dataclasses.field(default_factory=dict)  # topology -> newest window end seen
    late: int = 0
    # "topology|start_ms" -> {"end_ms", "devices": {asset: {"readings", "bad", "open": [...], "failed": [...]}}}
    windows: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    episodes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # topology -> DriftEpisode dict
    last: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # topology -> latest verdict's numbers

    def to_bytes(self) -> bytes:
        return pack_state(dataclasses.asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> "FleetQualityState":
        return cls(**unpack_state(data)[0])


class FleetQualityStage:
    def __init__(self, codec: AvroCodec, *, thresholds: QualityThresholds | None = None, close_after: int = 2) -> None:
        self.codec, self.thresholds, self.close_after = codec, thresholds or QualityThresholds(), close_after

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, FleetQualityState]) -> StageResult[FleetQualityState]:
        result: StageResult[FleetQualityState] = StageResult()
        fleet: FleetQualityState | None = None
        for message in messages:
            record = result.decode(self.codec, message, WINDOW_SCHEMA)
            if record is None:
                continue
            if fleet is None:
                fleet = result.pending_state(FLEET_KEY, state) or FleetQualityState()
                result.update_state(FLEET_KEY, fleet, message.partition)
            self._add(fleet, record)
        if fleet is not None:
            self._judge_due(result, fleet)
        return result

    def _add(self, fleet: FleetQualityState, record: Mapping[str, Any]) -> None:
        topology, length = record["topology"], record["end_ms"] - record["start_ms"]
        key = f"{topology}|{record['start_ms']}"
        if key not in fleet.windows and record["end_ms"] + length <= fleet.watermark_ms.get(topology, 0):
            fleet.late += 1
            return
        fleet.watermark_ms[topology] = max(fleet.watermark_ms.get(topology, 0), record["end_ms"])
        window = fleet.windows.setdefault(key, {"end_ms": record["end_ms"], "devices": {}})
        # A device's streams (channels, process) each send a summary: the device is bad if any stream is.
        device = window["devices"].setdefault(record["asset_id"], {"streams": [], "readings": 0, "bad": 0, "open": [], "failed": []})
        if record["stream"] in device["streams"]:
            return  # a replayed summary
        device["streams"].append(record["stream"])
        device["readings"] += record["readings"]
        device["bad"] += record["bad_readings"]
        device["open"] = sorted(set(device["open"]) | set(record["open_checks"]))
        device["failed"] = sorted(set(device["failed"]) | set(record["failed"]))

    def _judge_due(self, result: StageResult[FleetQualityState], fleet: FleetQualityState) -> None:
        due = sorted(((k, w) for k, w in fleet.windows.items()
                      if w["end_ms"] + (w["end_ms"] - int(k.split("|")[1])) <= fleet.watermark_ms.get(k.split("|")[0], 0)),
                     key=lambda kw: kw[1]["end_ms"])
        for key, window in due:
            del fleet.windows[key]
            topology, start_ms = key.split("|")[0], int(key.split("|")[1])
            devices = window["devices"]
            summaries = [WindowQuality(a, "", start_ms, window["end_ms"], d["readings"], d["bad"], {c: {} for c in CHECKS},
                                       tuple(d["failed"])) for a, d in devices.items()]
            bad_devices = sorted(a for a, d in devices.items() if d["open"])
            verdict, numbers = fleet_verdict(summaries, len(bad_devices), len(devices), self.thresholds)
            numbers["checks_open"] = {c: sum(c in d["open"] for d in devices.values()) for c in CHECKS
                                      if any(c in d["open"] for d in devices.values())}
            fleet.last[topology] = numbers
            kept = fleet.episodes.get(topology, {})
            episode = DriftEpisode.from_dict(kept) if kept else DriftEpisode(open_after=1, close_after=self.close_after)
            change = episode.step(verdict, window["end_ms"])
            opened = start_ms if change == "OPEN" else kept.get("opened_window_ms", start_ms)
            fleet.episodes[topology] = {**episode.to_dict(), "opened_window_ms": opened if episode.is_open else None}
            if change is not None:
                result.emit(finding_record(FLEET_KEY, FLEET_KEY, topology, "fleet", change, opened, start_ms, window["end_ms"],
                                           numbers, scope="fleet", assets=bad_devices), float(window["end_ms"]))
