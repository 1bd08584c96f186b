"""Which windows retraining may learn from, and the promotion gate."""
from __future__ import annotations

import math

import pytest

from vigil.models.retraining import RetrainBounds, alert_spans, promotion_gate, select_training_windows


def windows(assets=4, per_stream=80, streams=("vibration/x", "process")):
    return [{"asset_id": f"p{a}", "stream": s, "seq": i, "ts_ms": 1000 * i} for a in range(assets) for s in streams for i in range(per_stream)]


def test_windows_inside_an_episode_are_left_out_on_every_stream_of_that_asset_only():
    spans = alert_spans([
        {"alert_id": "x", "asset_id": "p1", "kind": "pump.anomaly", "state": "OPEN", "ts_ms": 10_000, "opened_ts_ms": 10_000},
        {"alert_id": "x", "asset_id": "p1", "kind": "pump.anomaly", "state": "UPDATE", "ts_ms": 12_000, "opened_ts_ms": 10_000},
        {"alert_id": "x", "asset_id": "p1", "kind": "pump.anomaly", "state": "CLOSE", "ts_ms": 19_000, "opened_ts_ms": 10_000},
        {"alert_id": "f", "asset_id": "p2", "kind": "fall.emergency", "state": "OPEN", "ts_ms": 0, "opened_ts_ms": 0},
    ])
    assert spans == {"p1": [(10_000, 19_000)]}  # fall alerts are not pump episodes
    kept, checks, problems = select_training_windows(windows(), spans, {}, RetrainBounds(min_windows_per_asset=60))
    assert problems == [] and checks["windows_in_alert_episodes"] == 2 * 10
    assert len(kept) == 4 * 2 * 80 - 20
    assert not any(w["asset_id"] == "p1" and 10_000 <= w["ts_ms"] <= 19_000 for w in kept)


def test_an_open_episode_excludes_everything_after_it():
    spans = alert_spans([{"alert_id": "x", "asset_id": "p0", "kind": "pump.anomaly", "state": "OPEN", "ts_ms": 70_000, "opened_ts_ms": 70_000}])
    assert spans == {"p0": [(70_000, math.inf)]}
    _, checks, _ = select_training_windows(windows(), spans, {})
    assert checks["windows_in_alert_episodes"] == 2 * 10


@pytest.mark.parametrize(("letters", "excluded"), [(8, False), (9, True)])
def test_an_asset_over_the_deadletter_share_is_left_out_whole(letters, excluded):
    # 160 records and 8 dead letters: 8 / 168 = 4.8 % (kept); 9 / 169 = 5.3 % (left out)
    kept, checks, _ = select_training_windows(windows(), {}, {"p3": letters})
    assert ("p3" in checks["assets_over_deadletter_share"]) is excluded
    assert any(w["asset_id"] == "p3" for w in kept) is not excluded


def test_too_few_assets_is_a_problem_not_a_model():
    _, checks, problems = select_training_windows(windows(assets=2), {}, {})
    assert checks["assets_kept"] == ["p0", "p1"] and problems == ["2 assets with enough healthy windows (at least 60 per stream), 3 needed"]
    _, checks, problems = select_training_windows(windows(per_stream=59), {}, {})
    assert len(checks["streams_too_short"]) == 8 and checks["windows_kept"] == 0 and problems


@pytest.mark.parametrize(("active", "candidate", "passes"), [
    ({"recall": 1.0, "false_alarms": 2}, {"recall": 0.95, "false_alarms": 3}, True),   # both at the bound
    ({"recall": 1.0, "false_alarms": 2}, {"recall": 0.94, "false_alarms": 2}, False),  # recall drop 0.06
    ({"recall": 1.0, "false_alarms": 2}, {"recall": 1.0, "false_alarms": 4}, False),   # +100 % false alarms
    ({"recall": 0.5, "false_alarms": 0}, {"recall": 0.5, "false_alarms": 0}, True),
    ({"recall": 0.5, "false_alarms": 0}, {"recall": 1.0, "false_alarms": 1}, False),   # any false alarm where there were none
    ({"recall": 0.5, "false_alarms": 4}, {"recall": 1.0, "false_alarms": 1}, True),
])
def test_the_gate_is_recall_drop_at_most_5_points_and_false_alarms_up_at_most_half(active, candidate, passes):
    assert promotion_gate(active, candidate)[0] is passes


def drift(asset, opened_ms, closed_ms=None, scope="asset", kind="feature", finding="d"):
    records = [{"finding_id": finding, "scope": scope, "kind": kind, "asset_id": asset, "state": "OPEN", "opened_ts_ms": opened_ms,
                "window_end_ms": opened_ms}]
    if closed_ms is not None:
        records.append({**records[0], "state": "CLOSE", "window_end_ms": closed_ms})
    return records


def test_windows_in_drift_episodes_are_kept_and_counted_but_a_shift_still_under_way_forbids_training():
    from vigil.models.retraining import drift_spans

    spans = drift_spans(drift("p0", 10_000, 49_000, finding="a") + drift("p1", 70_000, finding="b")
                        + drift("fleet", 0, scope="fleet", finding="c") + drift("p2", 0, kind="prediction", finding="e"))
    assert spans == {"p0": [(10_000, 49_000)], "p1": [(70_000, math.inf)]}  # fleet and prediction findings name no pump's data
    kept, checks, problems = select_training_windows(windows(), {}, {}, RetrainBounds(min_windows_per_asset=60), drifting=spans)
    assert checks["windows_in_drift_episodes"] == 2 * 40 + 2 * 10 and len(kept) == 4 * 2 * 80 and problems == []
    everywhere = drift_spans([r for a in range(3) for r in drift(f"p{a}", 0, finding=f"x{a}")])
    _, checks, problems = select_training_windows(windows(), {}, {}, RetrainBounds(min_windows_per_asset=60), drifting=everywhere)
    assert checks["windows_in_drift_episodes"] == 3 * 2 * 80
    assert problems == ["75% of the windows read fall in drift episodes of their pumps (ops.drift), above the 50% bound: "
                        "the shift is still under way"]
