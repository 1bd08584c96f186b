"""ops.quality: raw records and dead letters in, quality findings and window summaries out (list in, list out)."""
import json
from typing import Any

import numpy as np
import pytest

from vigil.streams.ops.fleet_quality import FleetQualityStage, FleetQualityState
from vigil.streams.ops.quality import QualityAssetState, QualityStage
from vigil.streams.runtime.stage import RawMessage, dead_letter
from vigil.streams.runtime.topics import OPS_QUALITY, OPS_QUALITY_WINDOWS, PUMP_DEADLETTER, PUMP_VIBRATION_RAW
from vigil.streams.runtime.validation import Rejection

T0 = 1_767_225_600_000  # an hour boundary
HOUR_MS, STEP_MS = 3_600_000, 10_000


def chunks(asset: str, hours: float, *, stuck_hours: tuple[int, ...] = (), skew_ms: int = 200, seed: int = 0,
           step_ms: int = STEP_MS) -> list[dict[str, Any]]:
    """A pump's 1 s vibration captures every ``step_ms``; flat-lined in the ``stuck_hours``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(hours * HOUR_MS / step_ms)):
        ts = T0 + i * step_ms
        x = np.full(512, 0.0123) if (ts - T0) // HOUR_MS in stuck_hours else 0.1 * rng.standard_normal(512)
        out.append({"asset_id": asset, "seq": i, "ts_ms": ts, "fs_hz": 512.0, "rpm": 1500.0, "channel": "x",
                    "samples": x.astype("<f4").tobytes(), "broker_ts_ms": ts + 1000 + skew_ms})
    return out


class Run:
    def __init__(self, stage, codec, decode_state):
        self.stage, self.codec, self.decode_state = stage, codec, decode_state
        self.state: dict[str, Any] = {}
        self.offset = 0
        self.outputs: list[tuple[str | None, dict[str, Any]]] = []

    def feed(self, messages: list[RawMessage], batch: int = 300) -> "Run":
        for i in range(0, len(messages), batch):
            result = self.stage.process(messages[i:i + batch], self.state)
            assert result.dead_letters == []  # the raw stages dead-letter; quality only counts
            self.state.update({k: self.decode_state(v.to_bytes()) for k, v in result.state_updates.items()})
            self.outputs += list(zip(result.output_topics, result.outputs))
        return self

    def on(self, topic):
        return [r for t, r in self.outputs if t == topic]


@pytest.fixture
def encode(codec):
    offsets = iter(range(10**7))

    def messages(records):
        return [RawMessage(PUMP_VIBRATION_RAW, 0, next(offsets), r["asset_id"].encode(),
                           codec.encode(PUMP_VIBRATION_RAW, "vigil.pumps.VibrationChunk", {k: v for k, v in r.items() if k != "broker_ts_ms"}),
                           r["broker_ts_ms"]) for r in records]
    return messages


@pytest.fixture
def run(codec):
    return Run(QualityStage(codec, window_s=3600.0), codec, QualityAssetState.from_bytes)


def test_a_clean_stream_summarises_each_hour_and_raises_nothing(run, encode):
    done = run.feed(encode(chunks("pump-1", 6.1)))
    windows = done.on(OPS_QUALITY_WINDOWS)
    assert [(w["start_ms"], w["readings"], w["bad_readings"], w["failed"]) for w in windows] == \
        [(T0 + h * HOUR_MS, 360, 0, []) for h in range(6)]
    assert done.on(OPS_QUALITY) == []


def test_a_stuck_sensor_opens_its_finding_naming_stuck_and_closes_after_two_clean_hours(run, encode):
    done = run.feed(encode(chunks("pump-1", 7.1, stuck_hours=(3,))))
    findings = done.on(OPS_QUALITY)
    assert [(f["check"], f["state"], f["window_start_ms"]) for f in findings] == \
        [("stuck", "OPEN", T0 + 3 * HOUR_MS), ("stuck", "CLOSE", T0 + 5 * HOUR_MS)]
    assert findings[0]["stream"] == "vibration/x" and findings[0]["finding_id"] == findings[1]["finding_id"]
    assert json.loads(findings[0]["details_json"])["stuck"] == 360
    [hour3] = [w for w in done.on(OPS_QUALITY_WINDOWS) if w["start_ms"] == T0 + 3 * HOUR_MS]
    assert hour3["bad_readings"] == 360 and hour3["open_checks"] == ["stuck"]


def test_clock_skew_is_measured_against_the_broker_timestamp(run, encode):
    done = run.feed(encode(chunks("pump-1", 2.1, skew_ms=20_000)))
    [opened] = done.on(OPS_QUALITY)
    assert opened["check"] == "clock_skew"
    assert json.loads(opened["details_json"])["skew_s"] == pytest.approx(20.0, abs=0.5)  # broker time minus the 1 s chunk's end


def test_dead_letters_of_refused_records_count_as_bad_readings_once(run, encode, codec):
    records = chunks("pump-1", 2.1)
    refused = {5, 17, 40, 41, 42, 300}
    letters = [RawMessage(PUMP_DEADLETTER, 0, i, b"pump-1", codec.encode(PUMP_DEADLETTER, "vigil.common.DeadLetter", dead_letter(
        RawMessage(PUMP_VIBRATION_RAW, 0, r["seq"], b"pump-1", b"\x00"), Rejection("non_finite", "NaN in samples", "pump-1"))))
        for i, r in enumerate(records) if r["seq"] in refused]
    valid = encode([r for r in records if r["seq"] not in refused])
    done = run.feed(valid[:200] + letters + valid[200:])
    first = done.on(OPS_QUALITY_WINDOWS)[0]
    assert first["readings"] == 360 and first["bad_readings"] == 6
    assert json.loads(first["checks_json"])["non_finite"]["rejected"] == 6
    assert [f["check"] for f in done.on(OPS_QUALITY)] == ["non_finite"]  # 6 of 360 is above the 1 % line; nothing else


def test_replayed_records_are_not_counted_twice(run, encode):
    messages = encode(chunks("pump-1", 1.1))
    done = run.feed(messages[:100]).feed(messages)
    assert [w["readings"] for w in done.on(OPS_QUALITY_WINDOWS)] == [360]


@pytest.fixture
def fleet_run(codec):
    return Run(FleetQualityStage(codec), codec, FleetQualityState.from_bytes)


def fleet_summaries(run, encode, pumps: int, stuck: int) -> list[RawMessage]:
    """Summaries of ``pumps`` pumps capturing once a minute for 4 h, the first ``stuck`` flat-lined in hours 1 and 2."""
    records = sorted((r for i in range(pumps) for r in chunks(f"pump-{i:03d}", 4.1, stuck_hours=(1, 2) if i < stuck else (), seed=i,
                                                                 step_ms=60_000)),
                     key=lambda r: (r["ts_ms"], r["asset_id"]))
    done = run.feed(encode(records), batch=2000)
    return [RawMessage(OPS_QUALITY_WINDOWS, 0, i, b"fleet", run.codec.encode(OPS_QUALITY_WINDOWS, "vigil.ops.QualityWindow", w))
            for i, w in enumerate(done.on(OPS_QUALITY_WINDOWS))]


def test_one_stuck_pump_in_a_hundred_and_twenty_raises_only_its_own_finding(run, encode, fleet_run):
    summaries = fleet_summaries(run, encode, pumps=120, stuck=1)
    assert [(f["asset_id"], f["check"]) for f in run.on(OPS_QUALITY) if f["state"] == "OPEN"] == [("pump-000", "stuck")]
    done = fleet_run.feed(summaries)
    assert done.on(None) == []
    # Hour 2 was the latest judged (hour 3 waits for summaries of hour 4): 1 device of 120, 60 readings of 7,200 bad.
    numbers = done.state["fleet"].last["pumps"]
    assert (numbers["assets_total"], numbers["assets_with_open_findings"], numbers["bad_readings"]) == (120, 1, 60)


def test_a_tenth_of_the_fleet_stuck_raises_the_fleet_finding_naming_them(run, encode, fleet_run):
    summaries = fleet_summaries(run, encode, pumps=120, stuck=12)
    done = fleet_run.feed(summaries)
    [opened] = done.on(None)
    assert (opened["scope"], opened["check"], opened["state"], opened["window_start_ms"]) == ("fleet", "fleet", "OPEN", T0 + HOUR_MS)
    assert opened["assets"] == [f"pump-{i:03d}" for i in range(12)]
    numbers = json.loads(opened["details_json"])
    assert numbers["device_share"] == pytest.approx(0.1) and numbers["reasons"] == ["devices", "readings"]
    assert numbers["checks_open"] == {"stuck": 12}


def test_a_wearable_that_goes_quiet_to_save_battery_gets_a_battery_gap_finding(codec):
    # 50-sample chunks at 50 Hz, one a second, with the device silent for 90 s in the second minute-window.
    stage = QualityStage(codec, window_s=60.0, wearable_fs_hz=50.0)
    run = Run(stage, codec, QualityAssetState.from_bytes)
    rng = np.random.default_rng(3)
    times = [t for t in range(0, 240) if not 70 <= t < 160]
    messages = [RawMessage("wearable.imu.raw", 0, i, b"w-1", codec.encode("wearable.imu.raw", "vigil.falls.ImuChunk", {
        "wearer_id": "w-1", "seq": i, "ts": T0 + t * 1000, "fs_hz": 50.0, "range_g": 16.0,
        "xyz": rng.normal([0.0, 1.0, 0.0], 0.05, (50, 3)).astype("<f4").tobytes()}), T0 + t * 1000 + 1200)
        for i, t in enumerate(times)]
    done = run.feed(messages, batch=50)
    opened = [(f["stream"], f["check"], f["window_start_ms"], f["topology"]) for f in done.on(OPS_QUALITY) if f["state"] == "OPEN"]
    assert opened == [("imu", "battery_gap", T0 + 120_000, "falls")]  # the window in which the device came back
