"""Data-quality checks: a clean stream passes every check, each injected fault fails only its own, with its numbers."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import pytest

from vigil.models.quality import (
    CHECKS,
    AssetQuality,
    QualityEpisodes,
    QualityThresholds,
    StreamingMedian,
    WindowQuality,
    fleet_verdict,
)

T0 = 1_767_225_600_000  # an hour boundary
HOUR = 3_600_000
DEFAULT = QualityThresholds()


@dataclass
class Rec:
    ts: int
    broker: int | None
    seq: int
    x: np.ndarray
    fs: float
    reject: str | None = None  # dead-lettered with this reason instead of observed


def vibration(n: int, seed: int = 0, fs: float = 256.0, chunk_s: float = 10.0, interval_ms: int = 10_000) -> list[Rec]:
    """Back-to-back 10 s chunks of one channel (noise around 0.1 g rms), sent 0.2-0.8 s after each chunk ends."""
    rng = np.random.default_rng(seed)
    size = round(fs * chunk_s)
    out = []
    for i in range(n):
        ts = T0 + i * interval_ms
        out.append(Rec(ts, ts + int(chunk_s * 1000) + int(rng.uniform(200, 800)), i,
                       rng.normal(0.0, 0.1, size).astype(np.float32), fs))
    return out


def wearable(n: int, seed: int = 0, fs_true: float = 200.0, fs_declared: float = 200.0) -> list[Rec]:
    """50-sample 3-axis chunks (x, y vertical, z) at 200 Hz: one every 250 ms, sent 50-300 ms after each ends."""
    rng = np.random.default_rng(seed)
    xyz = (rng.normal(0.0, 0.02, (n, 50, 3)) + [0.0, 1.0, 0.0]).astype(np.float32)
    out = []
    for i in range(n):
        ts = T0 + round(i * 50 * 1000 / fs_true)
        out.append(Rec(ts, ts + 250 + int(rng.uniform(50, 300)), i, xyz[i], fs_declared))
    return out


def process(n: int, seed: int = 0) -> list[Rec]:
    """Process samples every 10 s: 7 noisy variables and an absent second accelerometer (NaN)."""
    rng = np.random.default_rng(seed)
    base = np.array([5.0, 300.0, 40.0, 400.0, 55.0, 25.0, 0.1, np.nan])
    out = []
    for i in range(n):
        ts = T0 + i * 10_000
        out.append(Rec(ts, ts + int(rng.uniform(100, 500)), i, base * (1 + 0.01 * rng.standard_normal(8)), 0.0))
    return out


STREAMS = {"vibration": (vibration, 360), "wearable": (wearable, 14_400), "process": (process, 360)}  # records an hour


def feed(records: list[Rec], hours: int, t: QualityThresholds = DEFAULT, q: AssetQuality | None = None,
         roundtrip: bool = False) -> list[WindowQuality]:
    """The stage's loop: close each hour before its first later record, then observe; ``hours`` windows in all."""
    q = q or AssetQuality("asset-1")
    windows = []
    end = T0 + HOUR
    for r in records:
        while r.ts >= end:
            windows.append(q.close_window(end, t))
            end += HOUR
        if r.reject:
            q.observe_rejection(r.ts, r.reject)
        else:
            q.observe(r.ts, r.broker, r.seq, r.x, r.fs, t)
        if roundtrip:  # as if the worker restarted from its changelog after every record
            q = AssetQuality.from_dict(json.loads(json.dumps(q.to_dict())))
    while len(windows) < hours:
        windows.append(q.close_window(end, t))
        end += HOUR
    return windows


# ---------------------------------------------------------------- clean streams

@pytest.mark.parametrize("kind", ["vibration", "wearable", "process"])
def test_a_clean_stream_fails_no_check_over_many_windows(kind):
    make, per_hour = STREAMS[kind]
    hours = 1 if kind == "wearable" else 3
    windows = feed(make(per_hour * hours), hours)
    assert [w.failed for w in windows] == [()] * hours
    assert [(w.readings, w.bad_readings) for w in windows] == [(per_hour, 0)] * hours
    last = windows[-1]
    assert last.kind == kind and last.window_start_ms == T0 + (hours - 1) * HOUR and set(last.checks) == set(CHECKS)
    assert last.checks["missing"]["missing"] == 0
    assert last.checks["missing"]["expected"] == per_hour
    assert last.checks["late"]["late"] == 0 and last.checks["stuck"]["stuck"] == 0
    assert abs(last.checks["clock_skew"]["skew_s"]) < 0.6
    assert last.checks["gap"]["longest_s"] <= 10.0


def test_the_clean_vibration_stream_numbers():
    w = feed(vibration(720), 2)[1]
    assert w.checks["missing"]["interval_s"] == 10.0
    assert w.checks["clock_skew"]["skew_s"] == pytest.approx(0.5, abs=0.05)  # uniform 0.2-0.8 s after the chunk ends
    assert w.checks["clock_skew"]["records"] == 360
    assert w.checks["sample_rate"]["implied_fs_hz"] == pytest.approx(256.0)
    assert w.checks["sample_rate"]["drift"] == pytest.approx(0.0, abs=1e-9)
    assert w.checks["gap"]["longest_s"] == pytest.approx(0.0)  # back to back
    assert w.checks["battery_gap"]["gaps"] is None  # a wearable's check


# ---------------------------------------------------------------- one fault, one check

def test_dropped_chunks_are_missing_with_the_exact_count():
    records = vibration(360)
    kept = [r for r in records if r.seq not in (100, 101, 102, 103, 104)]
    (w,) = feed(kept, 1)
    assert w.failed == ("missing",)
    assert w.checks["missing"]["missing"] == 5 and w.checks["missing"]["expected"] == 360
    assert (w.readings, w.bad_readings) == (360, 5)
    assert w.checks["missing"]["share"] == pytest.approx(5 / 360)
    scattered = [r for r in records if r.seq not in (50, 120, 121, 200, 300)]
    assert feed(scattered, 1)[0].checks["missing"]["missing"] == 5


def test_one_dropped_chunk_in_an_hour_is_counted_but_under_the_one_percent_line():
    (w,) = feed([r for r in vibration(360) if r.seq != 200], 1)
    assert w.failed == () and w.checks["missing"]["missing"] == 1 and w.bad_readings == 1


def test_a_device_clock_20_s_behind_the_broker_is_clock_skew_of_20_s():
    records = [replace(r, broker=r.broker + 20_000) for r in vibration(360)]
    (w,) = feed(records, 1)
    assert w.failed == ("clock_skew",)
    assert w.checks["clock_skew"]["skew_s"] == pytest.approx(20.5, abs=0.05)
    assert w.checks["late"]["late"] == 0  # 20.5 s is within the 30 s lateness bound
    assert (w.readings, w.bad_readings) == (360, 360)  # every timestamp of the window is suspect
    ahead = feed([replace(r, broker=r.broker - 20_000) for r in vibration(360)], 1)[0]
    assert ahead.failed == ("clock_skew",) and ahead.checks["clock_skew"]["skew_s"] == pytest.approx(-19.5, abs=0.05)


def test_records_arriving_after_the_lateness_bound_are_late():
    records = vibration(360)
    for r in records[100:110]:
        r.broker += 45_000
    (w,) = feed(records, 1)
    assert w.failed == ("late",)
    assert w.checks["late"]["late"] == 10 and w.bad_readings == 10
    assert w.checks["late"]["max_delay_s"] == pytest.approx(45.5, abs=0.31)


def test_constant_chunks_are_stuck():
    records = vibration(360)
    for r in records[200:230]:
        r.x = np.full_like(r.x, 0.013)
    (w,) = feed(records, 1)
    assert w.failed == ("stuck",)
    assert w.checks["stuck"]["stuck"] == 30 and w.bad_readings == 30
    # The floor is relative to the stream's own spread (peak to peak of 0.1 g rms noise, ~0.7 g).
    assert 5e-4 < w.checks["stuck"]["spread_floor"] < 1e-3


def test_a_near_flat_chunk_relative_to_the_streams_spread_is_stuck_but_a_quiet_one_is_not():
    records = vibration(360)
    records[200].x = (records[200].x * 1e-4).astype(np.float32)  # 10,000 times quieter: a dead sensor's noise
    records[201].x = (records[201].x * 0.05).astype(np.float32)  # 20 times quieter: a pump idling
    (w,) = feed(records, 1)
    assert w.failed == ("stuck",) and w.checks["stuck"]["stuck"] == 1


def test_a_process_variable_repeating_one_value_is_stuck_from_its_30th_record():
    records = process(360)
    for r in records[100:140]:
        r.x[2] = 41.25  # current_a frozen for 40 records
    (w,) = feed(records, 1)
    assert w.failed == ("stuck",)
    assert w.checks["stuck"]["stuck"] == 40 - 29
    assert w.checks["stuck"]["repeated_max"] == 40
    assert w.checks["stuck"]["columns_mask"] == 1 << 2


def test_a_stopped_pumps_zero_flow_is_not_stuck():
    records = process(360)
    for r in records[100:300]:
        r.x[1] = 0.0
        r.x[2] = 0.0
    assert feed(records, 1)[0].failed == ()


def test_a_wearable_silent_for_90_s_that_resumes_is_a_battery_gap_only():
    records = wearable(14_400)
    for r in records[8000:]:  # sequence continues: the device slept, nothing was lost
        r.ts += 90_000
        r.broker += 90_000
    records = [r for r in records if r.ts < T0 + HOUR]
    (w,) = feed(records, 1)
    assert w.failed == ("battery_gap",)
    assert w.checks["battery_gap"]["gaps"] == 1
    assert w.checks["battery_gap"]["longest_s"] == pytest.approx(90.0)
    assert w.checks["missing"]["missing"] == 0 and w.checks["gap"]["longest_s"] == pytest.approx(90.0)
    assert w.bad_readings == 0  # its readings are sound; the finding is the hole


def test_dropped_wearable_chunks_are_missing_by_sequence():
    records = [r for r in wearable(14_400) if not 5000 <= r.seq < 5200]
    (w,) = feed(records, 1)
    assert w.failed == ("missing",) and w.checks["missing"]["missing"] == 200


def test_a_wearable_sampling_5_percent_slow_is_sample_rate_drift():
    # Declares 200 Hz, samples at 190 Hz: each 50-sample chunk spans 263 ms of its own timestamps.
    (w,) = feed(wearable(13_680, fs_true=190.0), 1)
    assert w.failed == ("sample_rate",)
    assert w.checks["sample_rate"]["implied_fs_hz"] == pytest.approx(190.0, rel=1e-3)
    assert w.checks["sample_rate"]["drift"] == pytest.approx(0.05, abs=1e-3)
    assert w.bad_readings == w.readings == 13_680


def test_a_declared_rate_5_percent_off_the_nominal_rate_is_sample_rate_drift():
    t = QualityThresholds(nominal_fs_hz=200.0)
    (w,) = feed(wearable(14_400, fs_true=210.0, fs_declared=210.0), 1, t)
    assert w.failed == ("sample_rate",)
    # Declared and implied (ms timestamps) both 210 Hz.
    assert (w.checks["sample_rate"]["fs_min_hz"], w.checks["sample_rate"]["drift"]) == (210.0, pytest.approx(0.05, abs=1e-5))
    assert feed(wearable(14_400, fs_true=203.0, fs_declared=203.0), 1, t)[0].failed == ()  # 1.5 %: within 2 %


@pytest.mark.parametrize("reason", ["non_finite", "out_of_range"])
def test_dead_lettered_records_are_their_reasons_share_and_not_missing(reason):
    records = vibration(360)
    for r in records[100:110]:
        r.reject = reason
    (w,) = feed(records, 1)
    assert w.failed == (reason,)
    assert w.checks[reason]["rejected"] == 10 and w.checks[reason]["share"] == pytest.approx(10 / 360)
    assert w.checks["missing"]["missing"] == 0  # their seq holes are the rejected records themselves
    assert (w.readings, w.bad_readings) == (360, 10)


def test_rejections_for_other_reasons_are_bad_readings_but_fail_no_share_check():
    records = vibration(360)
    for r in records[100:110]:
        r.reject = "undecodable"
    (w,) = feed(records, 1)
    assert w.failed == () and (w.readings, w.bad_readings) == (360, 10)


def test_a_pump_silent_across_a_window_end_is_missing_in_each_window_once_and_a_gap():
    records = [r for r in vibration(720) if not T0 + 50 * 60_000 <= r.ts < T0 + 70 * 60_000]
    w1, w2 = feed(records, 2)
    assert (w1.checks["missing"]["missing"], w2.checks["missing"]["missing"]) == (60, 60)
    assert (w1.checks["gap"]["longest_s"], w2.checks["gap"]["longest_s"]) == (600.0, 600.0)
    assert w1.failed == w2.failed == ("missing", "gap")
    assert (w1.readings, w1.bad_readings) == (360, 60)


def test_a_channel_whose_seq_counts_all_three_channels_learns_the_stride():
    records = vibration(360)
    for r in records:
        r.seq *= 3
    assert feed(records, 1)[0].failed == ()
    (w,) = feed([r for r in records if r.seq != 600], 1)
    assert w.checks["missing"]["missing"] == 1


def test_a_replayed_record_is_a_reading_but_not_a_step_of_the_cadence():
    records = vibration(360)
    records.insert(201, records[199])
    (w,) = feed(records, 1)
    assert w.failed == () and w.readings == 361 and w.checks["missing"]["missing"] == 0


# ---------------------------------------------------------------- fleet

def fleet(stuck_devices: int, devices: int = 100) -> tuple[list[WindowQuality], list[QualityEpisodes]]:
    """An hour of 1-s captures every 10 s from each device; a sensor freezes at minute 10 in the first ``stuck_devices``."""
    windows, episodes = [], []
    for d in range(devices):
        records = vibration(360, seed=d, chunk_s=1.0)
        if d < stuck_devices:
            for r in records[60:]:
                r.x = np.full_like(r.x, 0.02)
        q, e = AssetQuality(f"pump-{d}"), QualityEpisodes(f"pump-{d}")
        (w,) = feed(records, 1, q=q)
        e.step(w)
        windows.append(w)
        episodes.append(e)
    return windows, episodes


def test_a_stuck_sensor_in_10_of_100_devices_is_a_fleet_finding():
    windows, episodes = fleet(10)
    open_ = sum(e.has_open for e in episodes)
    verdict, numbers = fleet_verdict(windows, open_, len(episodes), DEFAULT)
    assert verdict is True and open_ == 10
    assert numbers["device_share"] == 0.10 and numbers["reasons"] == ["devices", "readings"]
    assert (numbers["readings"], numbers["bad_readings"]) == (36_000, 3_000)
    assert numbers["windows_failing"] == {"stuck": 10}


def test_a_stuck_sensor_in_1_of_100_devices_opens_only_its_own_finding():
    windows, episodes = fleet(1)
    assert [e.open_checks for e in episodes if e.has_open] == [("stuck",)] and episodes[0].has_open
    verdict, numbers = fleet_verdict(windows, sum(e.has_open for e in episodes), 100, DEFAULT)
    assert verdict is False and numbers["reasons"] == []
    assert numbers["device_share"] == 0.01 and numbers["reading_share"] == pytest.approx(300 / 36_000)


def test_the_fleet_lines_are_more_than_5_percent_of_devices_and_more_than_1_percent_of_readings():
    checks = {c: {} for c in CHECKS}
    all_bad = WindowQuality("p0", "vibration", 0, HOUR, 360, 360, checks, ("stuck",))
    healthy = [WindowQuality(f"p{i}", "vibration", 0, HOUR, 360, 0, checks, ()) for i in range(1, 100)]
    assert fleet_verdict([all_bad] + healthy, 5, 100)[0] is False  # exactly 5 % of devices, exactly 1 % of readings
    assert fleet_verdict([all_bad] + healthy, 6, 100)[1]["reasons"] == ["devices"]
    two_bad = [all_bad, replace(all_bad, asset_id="p1")] + healthy[1:]
    assert fleet_verdict(two_bad, 2, 100)[1]["reasons"] == ["readings"]
    with pytest.raises(ValueError):
        fleet_verdict(healthy, 101, 100)


# ---------------------------------------------------------------- hysteresis and state

def four_hours_stuck_in_the_first() -> list[Rec]:
    records = vibration(1440)
    for r in records[100:120]:
        r.x = np.full_like(r.x, 0.0)
    return records


def test_one_bad_window_opens_one_clean_window_does_not_close_two_do():
    windows = feed(four_hours_stuck_in_the_first(), 4)
    assert [w.failed for w in windows] == [("stuck",), (), (), ()]
    episodes = QualityEpisodes("asset-1", close_after=2)
    steps = [episodes.step(w) for w in windows]
    assert [[(c, s) for c, s, _ in events] for events in steps] == [[("stuck", "OPEN")], [], [("stuck", "CLOSE")], []]
    assert steps[0][0][2]["stuck"] == 20 and steps[0][0][2]["window_end_ms"] == T0 + HOUR
    assert steps[2][0][2] == {"opened_ms": T0, "bad_windows": 1, "window_start_ms": T0 + 2 * HOUR, "window_end_ms": T0 + 3 * HOUR}


def test_a_bad_window_during_the_clean_count_restarts_it():
    checks = {c: {} for c in CHECKS}
    pattern = [("late",), (), ("late",), (), (), ()]
    episodes = QualityEpisodes(close_after=2)
    states = [[s for _, s, _ in episodes.step(WindowQuality("a", "process", i * HOUR, (i + 1) * HOUR, 10, 0, checks, f))]
              for i, f in enumerate(pattern)]
    assert states == [["OPEN"], [], [], [], ["CLOSE"], []]
    with pytest.raises(ValueError):
        QualityEpisodes(close_after=0)


def test_state_round_trips_through_json_mid_window_and_mid_episode_with_identical_results():
    records = four_hours_stuck_in_the_first()
    straight = feed(records, 4)
    restarted = feed(records, 4, roundtrip=True)
    assert restarted == straight
    episodes, reloaded, events, events_reloaded = QualityEpisodes("a", 2), QualityEpisodes("a", 2), [], []
    for w in straight:
        events += episodes.step(w)
        events_reloaded += reloaded.step(w)
        reloaded = QualityEpisodes.from_dict(json.loads(json.dumps(reloaded.to_dict())))
    assert events_reloaded == events and len(events) == 2


def test_the_window_record_is_json_safe():
    (w,) = feed(vibration(360), 1)
    d = json.loads(json.dumps(w.to_dict(), allow_nan=False))
    assert d["failed"] == [] and d["checks"]["missing"]["expected"] == 360


@pytest.mark.parametrize("kind", ["vibration", "wearable", "process"])
def test_state_is_a_few_kilobytes_and_does_not_grow_with_the_records(kind):
    make, per_hour = STREAMS[kind]
    records = make(per_hour * 2)
    few, many = AssetQuality("asset-0001"), AssetQuality("asset-0001")
    feed(records[:20], 0, q=few)
    feed(records[: per_hour * 2 - per_hour // 3], 0, q=many)  # mid-window of the second hour
    size_few = len(json.dumps(few.to_dict(), allow_nan=False))
    size_many = len(json.dumps(many.to_dict(), allow_nan=False))
    assert size_many < 4096
    assert size_many - size_few < 300  # longer numbers, not more of them


# ---------------------------------------------------------------- contracts

def test_thresholds_and_kinds_are_validated():
    for bad in ({"missing_factor": 1.0}, {"fleet_reading_share": 1.5}, {"lateness_ms": 0}, {"nominal_fs_hz": -1.0},
                {"stuck_rel_spread": -1.0}):
        with pytest.raises(ValueError):
            QualityThresholds(**bad)
    with pytest.raises(ValueError):
        AssetQuality("a", kind="thermometer")
    with pytest.raises(ValueError):
        AssetQuality("a").observe_rejection(0, "non_finite", count=-1)


def test_the_kind_is_inferred_from_the_first_record():
    kinds = []
    for make in (vibration, wearable, process):
        q = AssetQuality()
        r = make(1)[0]
        q.observe(r.ts, r.broker, r.seq, r.x, r.fs)
        kinds.append(q.kind)
    assert kinds == ["vibration", "wearable", "process"]


def test_the_streaming_median_is_close_to_the_exact_one():
    values = np.random.default_rng(3).exponential(1.0, 5000)
    m = StreamingMedian()
    for v in values:
        m.add(v)
    assert m.value == pytest.approx(np.median(values), rel=0.02) and len(json.dumps(m.to_dict())) < 400


def test_a_device_that_stops_sending_fails_missing_and_gap_every_window_until_it_resumes():
    records = vibration(360)  # nothing after the first hour
    windows = feed(records, 3)
    assert [w.failed for w in windows] == [(), ("missing", "gap"), ("missing", "gap")]
    assert [w.checks["missing"]["missing"] for w in windows[1:]] == [360, 360]
    assert windows[2].checks["gap"]["longest_s"] == 3600.0 and windows[2].bad_readings == windows[2].readings == 360
