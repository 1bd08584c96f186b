"""Stage pump.scores.cloud -> alerts: the alert policy over each pump's confirmed windows.

State is per asset (one pump has several streams: vibration channels and
process sensors, and any of them can open or extend the pump's episode);
duplicates are recognised per (asset, stream) by seq.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from vigil.models.alerts import AlertAssetState, AlertEvent, AlertPolicy, Episode, scored_window
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state

SCHEMA = "vigil.pumps.CloudScore"
ALERT_KIND = "pump.anomaly"


@dataclasses.dataclass
class AlertStageState:
    last_seq: dict[str, int] = dataclasses.field(default_factory=dict)  # per stream
    policy: AlertAssetState = dataclasses.field(default_factory=AlertAssetState)

    def to_bytes(self) -> bytes:
        episode = dataclasses.asdict(self.policy.episode) if self.policy.episode is not None else None
        return pack_state({"last_seq": self.last_seq, "recent": self.policy.recent, "recent_ts_ms": self.policy.recent_ts_ms, "episode": episode})

    @classmethod
    def from_bytes(cls, data: bytes) -> "AlertStageState":
        header, _ = unpack_state(data)
        episode = Episode(**header["episode"]) if header["episode"] is not None else None
        policy = AlertAssetState(recent=header["recent"], episode=episode, recent_ts_ms=header.get("recent_ts_ms", []))
        return cls(last_seq=header["last_seq"], policy=policy)


def alert_record(event: AlertEvent, kind: str = ALERT_KIND) -> dict[str, Any]:
    """An Alert record (schemas/common/Alert.v1.avsc) for one episode state change."""
    diagnosis = None
    if event.diagnosis is not None:
        diagnosis = {
            "fault": event.diagnosis.fault,
            "confidence": event.diagnosis.confidence,
            "envelope_ratios": event.diagnosis.envelope_ratios,
        }
    return {
        "alert_id": event.alert_id,
        "asset_id": event.asset_id,
        "kind": kind,
        "state": event.state,
        "severity": event.severity,
        "ts_ms": event.ts_ms,
        "opened_ts_ms": event.opened_ts_ms,
        "first_seq": event.first_seq,
        "first_stream": event.first_stream,
        "last_seq": event.last_seq,
        "last_stream": event.last_stream,
        "confirmations": event.confirmations,
        "edge_score": event.edge_score,
        "cloud_score": event.cloud_score,
        "model_versions": event.model_versions,
        "top_features": event.top_features,
        "diagnosis": diagnosis,
        "detail": "",
    }


class AlertStage:
    source_topic = "pump.scores.cloud"

    def __init__(self, codec: AvroCodec, policy: AlertPolicy | None = None) -> None:
        self.codec = codec
        self.policy = policy or AlertPolicy()

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, AlertStageState]) -> StageResult[AlertStageState]:
        result: StageResult[AlertStageState] = StageResult()
        for message in messages:
            record = result.decode(self.codec, message, SCHEMA)
            if record is None:
                continue
            asset = result.pending_state(record["asset_id"], state) or AlertStageState()
            if not result.admit(record["seq"], asset.last_seq.get(record["stream"], -1)):
                continue
            asset.last_seq[record["stream"]] = record["seq"]
            result.update_state(record["asset_id"], asset, message.partition)
            for event in self.policy.step(asset.policy, scored_window(record)):
                result.emit(alert_record(event), float(record["ts_ms"]))
        return result
