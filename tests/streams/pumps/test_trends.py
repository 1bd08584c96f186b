from typing import Any

import pytest

from vigil.models.trends import HOUR_MS
from vigil.streams.pumps.trends import TrendAssetState, TrendStage, fleet_trends, pump_trend
from vigil.streams.runtime.stage import RawMessage

EDGE, ALERTS = "pump.scores.edge", "alerts"
T0 = 1_767_225_600_000


def edge_score(seq: int, ts_ms: int, *, asset: str = "pump-1", stream: str = "vibration/x", score: float | None = 0.4,
               flagged: bool = False, rms: float = 0.1) -> dict[str, Any]:
    return {
        "asset_id": asset, "stream": stream, "seq": seq, "ts_ms": ts_ms, "state": "SCORED" if score is not None else "COMMISSIONING",
        "score": score, "flagged": flagged, "threshold": 0.6, "model_version": "edge-test", "baseline_windows": 3,
        "feature_set": "vibration.v2", "deviations": {}, "features": {"rms_g": rms, "kurtosis": 0.2},
    }


def alert(alert_id: str, state: str, opened_ts_ms: int, ts_ms: int, *, kind: str = "pump.anomaly", asset: str = "pump-1",
          severity: str = "LOW") -> dict[str, Any]:
    return {
        "alert_id": alert_id, "asset_id": asset, "kind": kind, "state": state, "severity": severity, "ts_ms": ts_ms,
        "opened_ts_ms": opened_ts_ms, "first_seq": 0, "first_stream": "vibration/x", "last_seq": 0, "last_stream": "vibration/x",
        "confirmations": 3, "edge_score": 0.7, "cloud_score": 9.0, "model_versions": {}, "top_features": {}, "diagnosis": None,
        "detail": "",
    }


@pytest.fixture
def feed(codec):
    """Run records through a TrendStage in one batch each call, keeping state like the agent does."""
    stage = TrendStage(codec)
    state: dict[str, TrendAssetState] = {}
    offset = iter(range(10**6))

    def run(records: list[tuple[str, dict[str, Any]]]) -> Any:
        schema = {EDGE: "vigil.pumps.EdgeScore", ALERTS: "vigil.common.Alert"}
        messages = [RawMessage(t, 0, next(offset), r["asset_id"].encode(), codec.encode(t, schema[t], r)) for t, r in records]
        result = stage.process(messages, state)
        # The table stores bytes: decode afresh, as the worker's TableState does.
        state.update({k: TrendAssetState.from_bytes(v.to_bytes()) for k, v in result.state_updates.items()})
        return result

    run.state = state
    return run


def test_buckets_are_published_once_their_hour_has_passed(feed):
    first = feed([(EDGE, edge_score(i, T0 + i * 600_000, flagged=i == 2, score=0.4 + 0.01 * i)) for i in range(6)])
    assert first.outputs == []  # the hour is still open
    second = feed([(EDGE, edge_score(6, T0 + HOUR_MS + 60_000))])
    [record] = second.outputs
    assert (record["hour_start_ms"], record["revision"], record["windows"], record["flagged"]) == (T0, 0, 6, 1)
    assert record["edge_score_mean"] == pytest.approx(0.425)
    assert record["rms_max_g"] == pytest.approx(0.1)
    assert second.event_end_ms == [float(T0 + HOUR_MS)]


def test_an_hour_waits_for_every_stream_of_the_pump(feed):
    feed([(EDGE, edge_score(0, T0)), (EDGE, edge_score(0, T0 + 5, stream="process"))])
    ahead = feed([(EDGE, edge_score(1, T0 + HOUR_MS + 5))])  # vibration is past the hour; process is not yet
    assert ahead.outputs == []
    caught_up = feed([(EDGE, edge_score(1, T0 + HOUR_MS + 5, stream="process"))])
    assert [(r["hour_start_ms"], r["revision"], r["windows"]) for r in caught_up.outputs] == [(T0, 0, 2)]


def test_a_window_later_than_the_allowed_lateness_republishes_its_bucket(feed):
    first = feed([(EDGE, edge_score(0, T0)), (EDGE, edge_score(0, T0 + 5, stream="process")),
                  (EDGE, edge_score(1, T0 + 2 * HOUR_MS + 1))])  # process went quiet; vibration is two hours on
    assert [(r["hour_start_ms"], r["revision"], r["windows"]) for r in first.outputs] == [(T0, 0, 2)]
    late = feed([(EDGE, edge_score(1, T0 + 10, stream="process"))])
    assert [(r["hour_start_ms"], r["revision"], r["windows"]) for r in late.outputs] == [(T0, 1, 3)]


def test_duplicates_are_skipped_and_alerts_count_once_per_episode(feed):
    feed([(EDGE, edge_score(0, T0)), (EDGE, edge_score(1, T0 + 60_000))])
    again = feed([
        (EDGE, edge_score(0, T0)),
        (ALERTS, alert("a1", "OPEN", T0 + 120_000, T0 + 120_000)),
        (ALERTS, alert("a1", "UPDATE", T0 + 120_000, T0 + 180_000, severity="HIGH")),
        (ALERTS, alert("a1", "OPEN", T0 + 120_000, T0 + 120_000)),  # a replay
        (ALERTS, alert("w1", "OPEN", T0, T0, kind="fall.emergency", asset="wearer-1")),  # not a pump's
    ])
    assert again.duplicates == 1
    view = pump_trend("pump-1", feed.state["pump-1"])
    assert view["windows"] == 2 and view["alerts"] == 1
    assert view["alerts"] == sum(b["alerts"] for b in view["buckets"])
    assert [(a["alert_id"], a["severity"], a["closed_ts_ms"]) for a in view["alert_episodes"]] == [("a1", "HIGH", None)]
    assert "wearer-1" not in feed.state
    feed([(ALERTS, alert("a1", "CLOSE", T0 + 120_000, T0 + 900_000))])
    assert pump_trend("pump-1", feed.state["pump-1"])["alert_episodes"][0]["closed_ts_ms"] == T0 + 900_000


def test_the_fleet_page_lists_pumps_with_open_alerts_first(feed):
    feed([(EDGE, edge_score(0, T0, asset="pump-a")), (EDGE, edge_score(0, T0, asset="pump-b")),
          (ALERTS, alert("b1", "OPEN", T0, T0, asset="pump-b"))])
    page = fleet_trends(sorted(feed.state.items()))
    assert [p["asset_id"] for p in page["pumps"]] == ["pump-b", "pump-a"] and page["pumps"][0]["open_alerts"] == ["b1"]


def test_undecodable_records_are_dead_lettered(feed, codec):
    stage = TrendStage(codec)
    result = stage.process([RawMessage(EDGE, 0, 0, b"pump-1", b"\x00\x00\x00\x00\x06garbage")], {})
    assert [d["reason"] for d in result.dead_letters] == ["undecodable"] and result.outputs == []
