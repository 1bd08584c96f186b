"""Stage pump.scores.edge + alerts -> pump.trends: hourly trend buckets per pump and the rolling week.

Every edge verdict (commissioning windows included) lands in its pump's bucket
for the hour of its event time; every pump alert episode is counted once, in
the hour it opened, however many OPEN/UPDATE/CLOSE records (or replays) name
it. A bucket is published when every stream of the pump has passed its hour
(or the newest event is an hour past it), and published again with a higher
revision if a late window still changes it.

The same state answers the worker's web pages: ``/pumps`` (fleet summary)
and ``/pumps/{id}/trend`` (buckets, rolling view and alert spans).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

from vigil.models.trends import HourlyBucket, PumpTrend, bucket_columns, buckets_from_columns
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state

EDGE_SCHEMA = "vigil.pumps.EdgeScore"
ALERT_SCHEMA = "vigil.common.Alert"
PUMP_ALERT_KINDS = ("pump.",)


@dataclasses.dataclass
class TrendAssetState:
    last_seq: dict[str, int] = dataclasses.field(default_factory=dict)  # per stream
    trend: PumpTrend = dataclasses.field(default_factory=PumpTrend)
    # alert id -> {opened_ts_ms, closed_ts_ms, severity}: episodes that touch the week
    episodes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    unpublished: set[int] = dataclasses.field(default_factory=set)  # bucket hours changed since last published
    revisions: dict[int, int] = dataclasses.field(default_factory=dict)  # times each bucket was published

    def to_bytes(self) -> bytes:
        header = {
            "last_seq": self.last_seq,
            "watermark_ms": self.trend.watermark_ms,
            "stream_watermarks": self.trend.stream_watermarks,
            "late_records": self.trend.late_records,
            "episodes": self.episodes,
            "unpublished": sorted(self.unpublished),
            "revisions": [[h, n] for h, n in sorted(self.revisions.items())],
        }
        return pack_state(header, bucket_columns(self.trend.buckets.values()))

    @classmethod
    def from_bytes(cls, data: bytes) -> "TrendAssetState":
        header, arrays = unpack_state(data)
        trend = PumpTrend(buckets_from_columns(arrays), watermark_ms=header["watermark_ms"], late_records=header["late_records"],
                          stream_watermarks=header["stream_watermarks"])
        return cls(
            last_seq=header["last_seq"],
            trend=trend,
            episodes=header["episodes"],
            unpublished=set(header["unpublished"]),
            revisions={h: n for h, n in header["revisions"]},
        )


def trend_record(asset_id: str, trend: PumpTrend, bucket: HourlyBucket, revision: int) -> dict[str, Any]:
    """A PumpTrend record (schemas/pumps/PumpTrend.v1.avsc) for one bucket and the week ending with it."""
    view = trend.view(bucket.hour_start_ms)
    return {
        "asset_id": asset_id,
        **bucket.summary(),
        "revision": revision,
        "week_start_ms": view.start_ms,
        "week_windows": view.windows,
        "week_flagged": view.flagged,
        "week_alerts": view.alerts,
        "week_edge_score_p95": view.edge_score_p95,
        "health_indicator": view.health_indicator,
        "health_slope_per_day": view.health_slope_per_day,
        "time_to_threshold_h": view.time_to_threshold_h,
        "late_records": trend.late_records,
    }


class TrendStage:
    source_topics = ("pump.scores.edge", "alerts")

    def __init__(self, codec: AvroCodec, *, edge_topic: str = "pump.scores.edge", alerts_topic: str = "alerts") -> None:
        self.codec = codec
        self.edge_topic = edge_topic
        self.alerts_topic = alerts_topic

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, TrendAssetState]) -> StageResult[TrendAssetState]:
        result: StageResult[TrendAssetState] = StageResult()
        touched: dict[str, TrendAssetState] = {}
        for message in messages:
            if message.topic == self.alerts_topic:
                record = result.decode(self.codec, message, ALERT_SCHEMA)
                if record is None or not record["kind"].startswith(PUMP_ALERT_KINDS):
                    continue  # the alerts topic is shared with other topologies; their alerts are not a pump's
                asset = self._asset(result, state, record["asset_id"], message, touched)
                self._alert(asset, record)
            else:
                record = result.decode(self.codec, message, EDGE_SCHEMA)
                if record is None:
                    continue
                asset = self._asset(result, state, record["asset_id"], message, touched)
                if not result.admit(record["seq"], asset.last_seq.get(record["stream"], -1)):
                    continue
                asset.last_seq[record["stream"]] = record["seq"]
                self._window(asset, record)
        for asset_id, asset in touched.items():
            self._publish(result, asset_id, asset)
        return result

    @staticmethod
    def _asset(result: StageResult[TrendAssetState], state: Mapping[str, TrendAssetState], asset_id: str, message: RawMessage,
               touched: dict[str, TrendAssetState]) -> TrendAssetState:
        asset = result.pending_state(asset_id, state) or TrendAssetState()
        result.update_state(asset_id, asset, message.partition)
        touched[asset_id] = asset
        return asset

    @staticmethod
    def _window(asset: TrendAssetState, record: Mapping[str, Any]) -> None:
        scored = record["state"] == "SCORED"
        features = record.get("features") or {}
        vibration = record["stream"].startswith("vibration/")
        bucket = asset.trend.add_window(
            record["ts_ms"],
            score=record["score"] if scored else None,
            threshold=record["threshold"],
            flagged=scored and record["flagged"],
            rms_g=features.get("rms_g") if vibration else None,
            kurtosis=features.get("kurtosis") if vibration else None,
            stream=record["stream"],
        )
        if bucket is not None:
            asset.unpublished.add(bucket.hour_start_ms)

    @staticmethod
    def _alert(asset: TrendAssetState, record: Mapping[str, Any]) -> None:
        episode = asset.episodes.get(record["alert_id"])
        if episode is None:
            # Counted the first time any record of the episode is seen, so replays and
            # updates never count it twice.
            bucket = asset.trend.add_alert(record["opened_ts_ms"])
            if bucket is None:
                return  # opened before the week: counted in late_records
            asset.unpublished.add(bucket.hour_start_ms)
            episode = asset.episodes[record["alert_id"]] = {"opened_ts_ms": record["opened_ts_ms"], "closed_ts_ms": None, "severity": record["severity"]}
        if record["state"] == "CLOSE":
            episode["closed_ts_ms"] = record["ts_ms"]
        elif record["state"] == "UPDATE":
            episode["severity"] = record["severity"]

    @staticmethod
    def _publish(result: StageResult[TrendAssetState], asset_id: str, asset: TrendAssetState) -> None:
        trend = asset.trend
        ready = [b for b in trend.drain_evicted() if b.hour_start_ms in asset.unpublished]
        ready += [trend.buckets[h] for h in sorted(asset.unpublished) if h in trend.buckets and trend.closed(trend.buckets[h])]
        for bucket in ready:
            revision = asset.revisions.get(bucket.hour_start_ms, 0)
            result.emit(trend_record(asset_id, trend, bucket, revision), float(bucket.hour_end_ms))
            asset.revisions[bucket.hour_start_ms] = revision + 1
            asset.unpublished.discard(bucket.hour_start_ms)
        week_start = trend.window_start_ms
        asset.revisions = {h: n for h, n in asset.revisions.items() if h >= week_start}
        asset.unpublished = {h for h in asset.unpublished if h in trend.buckets}
        asset.episodes = {
            i: e for i, e in asset.episodes.items() if (e["closed_ts_ms"] if e["closed_ts_ms"] is not None else trend.watermark_ms) >= week_start
        }


def pump_trend(asset_id: str, asset: TrendAssetState) -> dict[str, Any]:
    """The body of ``/pumps/{id}/trend``: the rolling view, its hourly buckets and the alert spans."""
    view = asset.trend.view()
    return {
        "asset_id": asset_id,
        **view.summary(),
        "late_records": asset.trend.late_records,
        "buckets": [b.summary() for b in view.buckets],
        "alert_episodes": [{"alert_id": i, **e} for i, e in sorted(asset.episodes.items(), key=lambda kv: kv[1]["opened_ts_ms"])],
    }


def fleet_trends(assets: Iterable[tuple[str, TrendAssetState]]) -> dict[str, Any]:
    """The body of ``/pumps``: one line per pump, the ones closest to their threshold first."""
    rows = []
    for asset_id, asset in assets:
        view = asset.trend.view()
        open_alerts = [i for i, e in asset.episodes.items() if e["closed_ts_ms"] is None]
        rows.append({
            "asset_id": asset_id,
            "last_event_ms": asset.trend.watermark_ms,
            "week_windows": view.windows,
            "week_flagged": view.flagged,
            "week_alerts": view.alerts,
            "open_alerts": sorted(open_alerts),
            "health_indicator": view.health_indicator,
            "health_slope_per_day": view.health_slope_per_day,
            "time_to_threshold_h": view.time_to_threshold_h,
        })
    rows.sort(key=lambda r: (not r["open_alerts"], r["time_to_threshold_h"] if r["time_to_threshold_h"] is not None else float("inf"), r["asset_id"]))
    return {"pumps": rows, "count": len(rows)}
