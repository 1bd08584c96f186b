"""Drift and data-quality monitoring live on the real embedded broker, through `vigil worker`, across a restart.

Four simulated pumps capture 1 s every 20 s for 3 hours of event time; from
minute 90 one pump's sensors flat-line and another's duty point steps up 40 %.
Windows are 15 minutes (45 captures each) and a pump's own drift reference is
its first scored hour, so the run stays short. The worker is stopped half way
and a new one takes over from the changelogs.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from typing import Any, Iterator

import pytest

from tests.fixtures.broker import consume_all, launch_worker
from tests.integration.test_pump_cascade import metric, wait_for
from vigil.models.simulate import DEFAULT_START_TS_MS, FleetSimulator, inject_changes, make_fleet
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.pumps.training import train_pumps_simulated
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import OPS_DRIFT, OPS_DRIFT_WINDOWS, OPS_QUALITY, OPS_QUALITY_WINDOWS, SCHEMA_OF_TOPIC, ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(900)]

PUMPS, STEPS, INTERVAL_S, SEED = 4, 540, 20.0, 11
WINDOW_S, CHANGE_AT_S = 900.0, 5400.0


def records_in(worker: Any, stage: str) -> float:
    return metric(worker, "vigil_records_in_total", stage)


@pytest.fixture(scope="module")
def monitored(broker, tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("monitoring")
    settings = replace(
        Settings.from_env({}), broker_hosts=(broker.bootstrap,), app_id="monitoring", topic_prefix="monitoring.", partitions=2,
        retention_ms=600_000, session_timeout_s=10.0, heartbeat_interval_s=1.0, models_dir=tmp / "models",
        monitor_window_s=WINDOW_S, monitor_long_window_s=0.0, monitor_grace_s=60.0, drift_reference_s=3600.0,
        quality_clock_checks=0,  # three hours replayed in a minute: broker time says nothing of the devices' clocks
    )
    train_pumps_simulated(settings, pumps=16, windows=150, seed=123, capture_interval_s=INTERVAL_S)
    codec = AvroCodec()
    # Steady duty (a 2 % wave): at a capture every 20 s a cycling demand makes consecutive windows near copies, worth
    # few samples as evidence (DriftStage's effective sample size), and three hours would not judge it.
    steady = [replace(spec, load_drift=0.02) for spec in make_fleet(PUMPS, seed=SEED, n_faulty=0, horizon_s=STEPS * INTERVAL_S)]
    fleet, injected = inject_changes(steady, duty_share=0.25,
                                     duty_at_s=CHANGE_AT_S, duty_step=0.4, stuck=1, stuck_at_s=CHANGE_AT_S, seed=SEED)
    steps = [step for step in FleetSimulator(fleet, seed=SEED, interval_s=INTERVAL_S).steps(STEPS)]
    ensure_topics(settings)
    producer = RecordProducer(settings, codec)
    workers = [launch_worker(settings, tmp / "worker-0.log")]

    def read(topic: str) -> list[dict[str, Any]]:
        return [v for _, v in consume_all(settings, topic, 0, timeout_s=6.0, decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[topic]),
                                          stop_early=False)]

    try:
        half, summaries_before = len(steps) // 2, {OPS_DRIFT_WINDOWS: 0, OPS_QUALITY_WINDOWS: 0}
        for phase, part in enumerate((steps[:half], steps[half:])):
            for step in part:
                for r in step:
                    producer.send(r.kind, r.key, r.value)
            producer.flush()
            # Each worker counts what it read since it started: the second reads at least the second half.
            sent = sum(len(step) for step in part)
            wait_for(lambda: records_in(workers[-1], "ops.quality") >= sent and records_in(workers[-1], "ops.drift") > 0, 480,
                     "the quality and drift stages", workers[-1])
            for topic, stage in ((OPS_DRIFT_WINDOWS, "ops.drift.fleet"), (OPS_QUALITY_WINDOWS, "ops.quality.fleet")):
                total = len(read(topic))
                wait_for(lambda: records_in(workers[-1], stage) >= total - summaries_before[topic], 120, stage, workers[-1])
                summaries_before[topic] = total
            if phase == 0:
                time.sleep(3.0)  # a commit interval or two: the next worker starts from what this one committed
                assert workers[0].stop() == 0
                workers.append(launch_worker(settings, tmp / "worker-1.log"))
        time.sleep(2.0)
        yield {"fleet": fleet, "injected": injected, "drift": read(OPS_DRIFT), "quality": read(OPS_QUALITY),
               "drift_windows": read(OPS_DRIFT_WINDOWS), "quality_windows": read(OPS_QUALITY_WINDOWS), "workers": workers}
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.stop()


def injected(monitored, change: str) -> list[str]:
    return [i.asset_id for i in monitored["injected"] if i.change == change]


def test_the_stuck_pump_and_only_it_gets_stuck_findings_from_the_window_it_stuck_in(monitored):
    opened = [f for f in monitored["quality"] if f["state"] == "OPEN" and f["scope"] == "asset"]
    stuck = [f for f in opened if f["check"] == "stuck"]
    assert {f["asset_id"] for f in stuck} == set(injected(monitored, "stuck_sensor"))
    change_ms = DEFAULT_START_TS_MS + int(CHANGE_AT_S * 1000)
    vibration = [f for f in stuck if f["stream"] == "vibration/x"]
    assert [f["window_start_ms"] for f in vibration] == [change_ms]  # flat from its first capture in that window
    assert [f for f in opened if f["check"] != "stuck"] == []  # nothing else is wrong with these devices


def test_the_duty_point_step_is_named_by_its_pump_and_the_fleet_and_the_untouched_pumps_raise_nothing(monitored):
    change_ms = DEFAULT_START_TS_MS + int(CHANGE_AT_S * 1000)
    [duty] = injected(monitored, "duty_point")
    untouched = {s.asset_id for s in monitored["fleet"]} - {duty, *injected(monitored, "stuck_sensor")}
    opened = [f for f in monitored["drift"] if f["state"] == "OPEN"]
    own = [f for f in opened if f["scope"] == "asset" and f["asset_id"] == duty and f["kind"] == "feature"]
    assert own and min(f["opened_ts_ms"] for f in own) >= change_ms
    named = {s["feature"] for f in own for s in f["features"]}
    assert {"flow_l_min", "pressure_bar"} & named, named
    assert [f for f in opened if f["scope"] == "asset" and f["asset_id"] in untouched] == []
    # The fleet is judged against the training fleet, which cycled more than these steady pumps: its finding may be
    # open before the step (a real difference from training); after the step it must name the stepped variables.
    fleet = [f for f in monitored["drift"] if f["scope"] == "fleet" and f["kind"] == "feature" and f["state"] in ("OPEN", "UPDATE")
             and f["feature_set"] == "process.v1" and f["window_start_ms"] >= change_ms]
    assert {"flow_l_min", "pressure_bar"} <= {s["feature"] for f in fleet for s in f["features"]}


def test_no_finding_is_published_twice_across_the_restart(monitored):
    for topic in ("drift", "quality"):
        counts = Counter((f["finding_id"], f["state"], f["window_end_ms"]) for f in monitored[topic])
        assert [k for k, n in counts.items() if n > 1] == []
    for topic, key in (("quality_windows", ("asset_id", "stream", "start_ms")),
                       ("drift_windows", ("asset_id", "feature_set", "model_version", "window", "start_ms"))):
        counts = Counter(tuple(w[k] for k in key) for w in monitored[topic])
        assert [k for k, n in counts.items() if n > 1] == []
    assert len(monitored["quality_windows"]) >= PUMPS * 2 * (STEPS * INTERVAL_S // WINDOW_S - 1)
