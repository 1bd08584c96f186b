"""ops.drift: pumps' scored windows in, closed-window summaries and drift findings out (list in, list out)."""
from typing import Any, Iterable

import numpy as np
import pytest

from vigil.models.drift import reference_score_histogram
from vigil.models.training import reference_histograms
from vigil.streams.ops.drift import DriftAssetState, DriftStage
from vigil.streams.ops.fleet_drift import FleetDriftStage, FleetDriftState
from vigil.streams.ops.references import DriftReferences
from vigil.streams.runtime.stage import RawMessage
from vigil.streams.runtime.topics import OPS_DRIFT, OPS_DRIFT_WINDOWS, PUMP_SCORES_CLOUD

FEATURES = ["rms_g", "kurtosis", "crest", "bpfo_band", "bpfi_band", "envelope_rms"]
T0 = 1_800_000_000_000 - 1_800_000_000_000 % 86_400_000  # midnight UTC
HOUR_MS, STEP_MS = 3_600_000, 10_000  # a window every 10 s: 360 an hour
THRESHOLD = 0.6


def reference_metadata(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.45, 0.05, 20_000)
    return {"reference_histograms": {"vibration.v1": reference_histograms(rng.normal(size=(20_000, len(FEATURES))), FEATURES)},
            "score_reference": {"vibration.v1": reference_score_histogram(scores, THRESHOLD)}}


@pytest.fixture(scope="module")
def references():
    return DriftReferences(known={"edge-1": reference_metadata()})


def scored_windows(asset: str, hours: float, *, seed: int, shift: dict[str, float] | None = None, shift_from_h: float = 0.0,
                   start_ms: int = T0, version: str = "edge-1", spread: float = 1.0,
                   wander: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """CloudScore records of one pump: deviations drawn from the reference (times ``spread``), ``shift`` added from
    ``shift_from_h`` on; ``wander``: features that follow an AR(1) process with this lag-1 correlation instead."""
    rng = np.random.default_rng(seed)
    n = int(hours * HOUR_MS / STEP_MS)
    z = spread * rng.normal(size=(n, len(FEATURES)))
    for name, rho in (wander or {}).items():
        j = FEATURES.index(name)
        for i in range(1, n):
            z[i, j] = rho * z[i - 1, j] + np.sqrt(1 - rho ** 2) * z[i, j]
    ts = start_ms + np.arange(n) * STEP_MS
    for name, by in (shift or {}).items():
        z[ts >= start_ms + shift_from_h * HOUR_MS, FEATURES.index(name)] += by
    scores = rng.normal(0.45, 0.05, n)
    return [{"asset_id": asset, "stream": "vibration/x", "seq": i, "ts_ms": int(ts[i]), "feature_set": "vibration.v1",
             "edge_score": float(scores[i]), "edge_threshold": THRESHOLD, "flagged": bool(scores[i] > THRESHOLD), "evaluated": False,
             "cloud_score": None, "cloud_threshold": 3.0, "confirmed": False, "history_windows": 0, "edge_model_version": version,
             "cloud_model_version": "cloud-1", "deviations": dict(zip(FEATURES, np.round(z[i], 3).tolist())), "features": {}}
            for i in range(n)]


class Run:
    """Feeds a stage like the worker: batches of encoded records, state through its bytes after every batch."""

    def __init__(self, stage, codec, decode_state, topic):
        self.stage, self.codec, self.decode_state, self.topic = stage, codec, decode_state, topic
        self.state: dict[str, Any] = {}
        self.offset = 0
        self.outputs: list[tuple[str | None, dict[str, Any]]] = []

    def feed(self, records: Iterable[dict[str, Any]], schema: str, batch: int = 500) -> "Run":
        records = list(records)
        for i in range(0, len(records), batch):
            messages = [RawMessage(self.topic, 0, self.offset + j, r["asset_id"].encode(), self.codec.encode(self.topic, schema, r))
                        for j, r in enumerate(records[i:i + batch])]
            self.offset += len(messages)
            result = self.stage.process(messages, self.state)
            assert result.dead_letters == []
            self.state.update({k: self.decode_state(v.to_bytes()) for k, v in result.state_updates.items()})
            self.outputs += list(zip(result.output_topics, result.outputs))
        return self

    def on(self, topic):
        return [r for t, r in self.outputs if t == topic]


@pytest.fixture
def run(codec, references):
    def make(**options):
        # reference_s=0: pumps judged against the model's training reference, as the fleet is (the pump's own
        # reference period has its own tests below).
        stage = DriftStage(codec, references, windows_s=(3600.0, 86400.0), grace_s=300.0, **{"reference_s": 0.0, **options})
        return Run(stage, codec, DriftAssetState.from_bytes, PUMP_SCORES_CLOUD)
    return make


def interleaved(*streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for s in streams for r in s), key=lambda r: (r["ts_ms"], r["asset_id"]))


def test_each_closed_hour_is_summarised_once_with_its_counts(run):
    done = run().feed(scored_windows("pump-1", 3.5, seed=1), "vigil.pumps.CloudScore")
    windows = done.on(OPS_DRIFT_WINDOWS)
    # Hours 0-2 closed (the newest event is more than the 5 min grace past their end), hour 3 and the day still open.
    assert [(w["window"], w["start_ms"]) for w in windows] == [("1h", T0 + h * HOUR_MS) for h in range(3)]
    assert [w["windows"] for w in windows] == [360, 360, 360]
    assert all(sum(w["feature_counts"]["kurtosis"]) == 360 and sum(w["score_counts"]) == 360 for w in windows)
    assert done.on(OPS_DRIFT) == []


def test_one_shifted_feature_opens_a_finding_that_names_it_and_no_other(run):
    done = run().feed(scored_windows("pump-1", 8.2, seed=2, shift={"kurtosis": 2.0}, shift_from_h=3), "vigil.pumps.CloudScore")
    findings = done.on(OPS_DRIFT)
    [opened] = findings
    assert (opened["state"], opened["kind"], opened["scope"], opened["window"]) == ("OPEN", "feature", "asset", "1h")
    # Hours 3 and 4 drifted: the episode opens at the end of the second (open_after=2).
    assert opened["opened_ts_ms"] == T0 + 5 * HOUR_MS
    assert [f["feature"] for f in opened["features"]] == ["kurtosis"]
    [kurtosis] = opened["features"]
    # n counts effective samples: the lag-1 autocorrelation of independent draws is about 0, so nearly all 360.
    assert kurtosis["kl"] > 0.3 and kurtosis["test"] == "chi2" and kurtosis["p_value"] < 1e-6 and 330 <= kurtosis["n"] <= 360


def test_the_finding_closes_after_three_clean_hours_and_survives_the_state_bytes(run):
    shifted = scored_windows("pump-1", 6.0, seed=3, shift={"rms_g": 2.5})
    clean = scored_windows("pump-1", 4.2, seed=4, start_ms=T0 + 6 * HOUR_MS)
    for r in clean:
        r["seq"] += len(shifted)
    done = run().feed(shifted + clean, "vigil.pumps.CloudScore")
    states = [(f["state"], f["opened_ts_ms"], f["window_end_ms"]) for f in done.on(OPS_DRIFT)]
    assert states == [("OPEN", T0 + 2 * HOUR_MS, T0 + 2 * HOUR_MS), ("CLOSE", T0 + 2 * HOUR_MS, T0 + 9 * HOUR_MS)]
    assert len({f["finding_id"] for f in done.on(OPS_DRIFT)}) == 1  # one episode, one id


def test_a_stream_drawn_from_the_reference_raises_no_finding_over_many_pump_hours(run):
    """Measured false-finding rate: 0 findings over 10 pumps x 30 h (300 closed pump-hours, 6 features and 2 predictions each)."""
    fleet = interleaved(*(scored_windows(f"pump-{i:02d}", 30.2, seed=100 + i) for i in range(10)))
    done = run().feed(fleet, "vigil.pumps.CloudScore", batch=2000)
    hours = [w for w in done.on(OPS_DRIFT_WINDOWS) if w["window"] == "1h"]
    assert len(hours) == 10 * 30 and done.on(OPS_DRIFT) == []


def test_records_of_a_closed_window_are_counted_late_not_binned(run):
    records = scored_windows("pump-1", 2.5, seed=5)
    late = dict(records[10], seq=len(records))  # hour 0 again, after hour 1 closed
    done = run().feed(records, "vigil.pumps.CloudScore").feed([late], "vigil.pumps.CloudScore")
    assert done.state["pump-1"].late == 1  # its hour had closed; its day is still open and takes it
    assert [w["windows"] for w in done.on(OPS_DRIFT_WINDOWS)] == [360, 360]
    day = done.state["pump-1"].windows[f"1d|vibration.v1|edge-1|{T0}"]
    assert day.windows == len(records) + 1


def test_a_version_without_a_reference_is_reported_unreferenced_never_drift(run):
    done = run().feed(scored_windows("pump-1", 6.2, seed=6, shift={"kurtosis": 4.0}, version="edge-unknown"), "vigil.pumps.CloudScore")
    assert done.on(OPS_DRIFT) == []
    assert len(done.on(OPS_DRIFT_WINDOWS)) == 6  # hours 0-5 closed, each summarised for the fleet


def test_replayed_records_are_not_counted_twice(run):
    records = scored_windows("pump-1", 1.2, seed=7)
    done = run().feed(records[:300], "vigil.pumps.CloudScore").feed(records, "vigil.pumps.CloudScore")
    [hour] = done.on(OPS_DRIFT_WINDOWS)
    assert hour["windows"] == 360


def test_state_stays_small_per_pump(run):
    done = run().feed(scored_windows("pump-1", 30.0, seed=8, shift={"crest": 3.0}, shift_from_h=10), "vigil.pumps.CloudScore")
    # Two open windows (the hour, the day) of 6 features x 10 bins and the episodes: bytes, not a history.
    assert len(done.state["pump-1"].to_bytes()) < 4096


def test_a_steady_pump_is_judged_against_its_own_first_day_not_the_fleet_pool(run):
    """A pump whose deviations sit at a third of the pool's spread 'drifts' against the pooled training reference for as
    long as it runs; against its own first day it raises nothing until its kurtosis shifts."""
    steady = scored_windows("pump-1", 54.2, seed=10, spread=0.33, shift={"kurtosis": 1.0}, shift_from_h=40)
    pooled = run(reference_s=0.0).feed(steady, "vigil.pumps.CloudScore").on(OPS_DRIFT)
    assert pooled and pooled[0]["opened_ts_ms"] == T0 + 2 * HOUR_MS  # from its first hours on
    own = run(reference_s=86400.0).feed(steady, "vigil.pumps.CloudScore").on(OPS_DRIFT)
    [opened] = [f for f in own if f["kind"] == "feature"]
    assert opened["state"] == "OPEN" and [f["feature"] for f in opened["features"]] == ["kurtosis"]
    assert opened["opened_ts_ms"] == T0 + 42 * HOUR_MS  # hours 40 and 41 drifted against hours 0-23
    assert all(f["kind"] == "feature" for f in own)  # the scores did not move: no prediction drift


def test_a_slowly_wandering_feature_counts_as_few_samples_and_raises_nothing(run):
    """A feature with a ~14 h correlation time (rho 0.9998 every 10 s; a motor temperature's thermal lag) sits in a
    different part of its range each day: by count its daily windows differ from the reference day (KL 1.09 measured,
    chi-square p 5e-45 when its 8,640 windows counted as 43), as evidence they are worth a handful of samples."""
    done = run(reference_s=86400.0).feed(scored_windows("pump-1", 96.2, seed=12, wander={"rms_g": 0.9998}), "vigil.pumps.CloudScore")
    assert done.on(OPS_DRIFT) == []
    assert len([w for w in done.on(OPS_DRIFT_WINDOWS) if w["window"] == "1d"]) == 4  # days 0-3 closed: three judged


def test_the_cloud_confirming_far_more_of_a_pumps_flags_than_in_its_first_day_is_prediction_drift(run):
    rng = np.random.default_rng(13)
    records = scored_windows("pump-1", 40.2, seed=13)
    for r in records:  # every window flagged and sent to the cloud; it confirms a fifth of them, then from hour 30 nearly all
        r.update(flagged=True, evaluated=True, confirmed=bool(rng.random() < (0.9 if r["ts_ms"] >= T0 + 30 * HOUR_MS else 0.2)))
    findings = run(reference_s=86400.0).feed(records, "vigil.pumps.CloudScore").on(OPS_DRIFT)
    [opened] = [f for f in findings if f["kind"] == "prediction"]
    assert [f["feature"] for f in opened["features"]] == ["cloud_confirmation_rate"]
    assert opened["opened_ts_ms"] == T0 + 32 * HOUR_MS and opened["features"][0]["test"] == "binomial"
    assert [f for f in findings if f["kind"] == "feature"] == []


def test_no_pump_window_is_judged_before_its_own_reference_day_is_over(run):
    done = run(reference_s=86400.0).feed(scored_windows("pump-1", 20.2, seed=11, shift={"rms_g": 3.0}), "vigil.pumps.CloudScore")
    assert done.on(OPS_DRIFT) == [] and len(done.on(OPS_DRIFT_WINDOWS)) == 20  # summarised for the fleet all the same
    own = done.state["pump-1"].own["vibration.v1"]
    assert (own["windows"], own["complete"]) == (int(20.2 * 360), False)


@pytest.fixture
def fleet_run(codec, references):
    return Run(FleetDriftStage(codec, references), codec, FleetDriftState.from_bytes, OPS_DRIFT_WINDOWS)


def test_the_fleet_finding_names_the_feature_and_the_pumps_that_drifted(run, fleet_run):
    shifted = {f"pump-{i:02d}" for i in range(4)}
    fleet = interleaved(*(scored_windows(f"pump-{i:02d}", 8.2, seed=200 + i, shift={"bpfo_band": 2.0} if f"pump-{i:02d}" in shifted else None,
                                         shift_from_h=2) for i in range(10)))
    summaries = run().feed(fleet, "vigil.pumps.CloudScore", batch=1000).on(OPS_DRIFT_WINDOWS)
    done = fleet_run.feed(summaries, "vigil.ops.DriftWindow", batch=7)
    fleet_findings = done.on(None)
    assert [(f["scope"], f["kind"], f["state"]) for f in fleet_findings] == [("fleet", "feature", "OPEN")]
    [opened] = fleet_findings
    assert [f["feature"] for f in opened["features"]] == ["bpfo_band"]
    assert set(opened["assets"]) == shifted
    # Hours 2 and 3 drifted in the fleet sum (4 of 10 pumps shifted); it opens when hour 3 closes.
    assert opened["opened_ts_ms"] == T0 + 4 * HOUR_MS
    assert done.state["fleet"].last_kl["vibration.v1"]["bpfo_band"] > 0.3 > done.state["fleet"].last_kl["vibration.v1"]["rms_g"]


def test_a_replayed_summary_is_not_summed_twice(run, fleet_run):
    summaries = run().feed(scored_windows("pump-1", 3.2, seed=9), "vigil.pumps.CloudScore").on(OPS_DRIFT_WINDOWS)
    fleet_run.feed(summaries[:1] + summaries[:1], "vigil.ops.DriftWindow")
    [window] = fleet_run.state["fleet"].windows.values()
    assert window.windows == 360 and window.assets == ["pump-1"]


def with_cloud_verdicts(summaries: list[dict[str, Any]], rate_of_hour: Any, scored_per_window: int = 20) -> list[dict[str, Any]]:
    """The summaries with ``scored_per_window`` cloud verdicts each, ``rate_of_hour(hour since T0)`` of them confirmed."""
    return [{**s, "cloud_scored": scored_per_window,
             "cloud_confirmed": round(scored_per_window * rate_of_hour((s["start_ms"] - T0) // HOUR_MS))} for s in summaries]


def fleet_confirmation_findings(run, codec, references, rate_of_hour: Any, hours: float = 14.2) -> tuple[list[dict[str, Any]], Any]:
    # Batches of 300 keep the pumps' summaries in step, so the fleet stage counts none of them late.
    summaries = run().feed(interleaved(*(scored_windows(f"pump-{i}", hours, seed=300 + i) for i in range(3))),
                           "vigil.pumps.CloudScore", batch=300).on(OPS_DRIFT_WINDOWS)
    fleet = Run(FleetDriftStage(codec, references, reference_s=6 * 3600.0), codec, FleetDriftState.from_bytes, OPS_DRIFT_WINDOWS)
    done = fleet.feed(with_cloud_verdicts(summaries, rate_of_hour), "vigil.ops.DriftWindow", batch=5)
    return [f for f in done.on(None) if f["kind"] == "prediction"], done.state["fleet"]


def test_the_fleets_confirmation_rate_is_judged_against_its_own_first_hours(run, codec, references):
    # Three pumps, 60 cloud verdicts an hour: 20 % confirmed over the six reference hours, then 60 % from hour 8.
    findings, _ = fleet_confirmation_findings(run, codec, references, lambda h: 0.6 if h >= 8 else 0.2)
    [opened] = findings
    assert (opened["scope"], opened["state"], opened["window"]) == ("fleet", "OPEN", "1h")
    assert [f["feature"] for f in opened["features"]] == ["cloud_confirmation_rate"]
    assert opened["opened_ts_ms"] == T0 + 10 * HOUR_MS  # hours 8 and 9 drifted: open after the second
    assert "cloud_confirmation_rate" not in opened["unreferenced"]


def test_a_steady_fleet_confirmation_rate_raises_nothing(run, codec, references):
    findings, fleet = fleet_confirmation_findings(run, codec, references, lambda h: 0.2)
    assert findings == [] and fleet.late == 0
    # judged all the same: six reference hours of three pumps' 20 verdicts, a fifth confirmed
    assert fleet.confirm_reference["1h|vibration.v1|edge-1"] == {"start_ms": T0, "cloud_scored": 360, "cloud_confirmed": 72}
