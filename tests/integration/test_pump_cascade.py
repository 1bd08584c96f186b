"""The whole pump cascade live on the real embedded broker, through one `vigil worker`:
raw -> features -> edge -> cloud -> alerts, and the trend tables beside it.

One run is shared by the module: four simulated pumps, one developing an outer-race
fault, a 1 s capture every minute for 150 minutes of event time. After the first
pass, every stage's input is published again (raw records, edge scores, cloud
scores) to check that a replay changes nothing downstream.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fixtures.broker import consume_all, launch_worker
from vigil.models.simulate import DEFAULT_START_TS_MS, FleetSimulator, make_fleet
from vigil.models.trends import HOUR_MS, hour_start
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.pumps.training import load_pump_models, train_pumps_simulated
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import (
    ALERTS,
    PUMP_PROCESS_RAW,
    PUMP_SCORES_CLOUD,
    PUMP_SCORES_EDGE,
    PUMP_TRENDS,
    PUMP_VIBRATION_RAW,
    RAW_TOPIC_OF_KIND,
    SCHEMA_OF_TOPIC,
    ensure_topics,
)

# The module's run (training, a worker, 1,200 records and their replay) is shared by its tests and
# counted in the first one's time; a loaded machine can take several times the usual 35 s.
pytestmark = [pytest.mark.broker, pytest.mark.timeout(900)]

PUMPS, STEPS, INTERVAL_S, SEED = 4, 150, 60.0, 5
FAILURE_TS_MS = DEFAULT_START_TS_MS + int(STEPS * INTERVAL_S * 1000)
EXPECTED_DIAGNOSIS = {"outer": "outer_race", "inner": "inner_race"}
REPO = Path(__file__).resolve().parents[2]


def wait_for(condition: Any, timeout_s: float, what: str, worker: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{worker.log()}")
        if worker.process.poll() is not None:
            pytest.fail(f"worker exited with {worker.process.returncode}\n{worker.log()}")
        time.sleep(0.5)


def metric(worker: Any, name: str, stage: str) -> float:
    try:
        return worker.metrics().get(f'{name}{{stage="{stage}"}}', 0.0)
    except OSError:
        return 0.0


@pytest.fixture(scope="module")
def cascade(broker, tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cascade")
    settings = replace(
        Settings.from_env({}), broker_hosts=(broker.bootstrap,), app_id="cascade", topic_prefix="cascade.", partitions=4,
        retention_ms=600_000, session_timeout_s=10.0, heartbeat_interval_s=1.0, models_dir=tmp / "models",
        alert_quiet_s=600.0,
    )
    # Models trained on healthy captures at the same interval, as `vigil demo` trains them.
    train_pumps_simulated(settings, pumps=16, windows=150, seed=123, capture_interval_s=INTERVAL_S)
    codec = AvroCodec()
    fleet = make_fleet(PUMPS, seed=SEED, n_faulty=1, horizon_s=STEPS * INTERVAL_S)
    records = [r for step in FleetSimulator(fleet, seed=SEED, interval_s=INTERVAL_S).steps(STEPS) for r in step]
    ensure_topics(settings)
    worker = launch_worker(settings, tmp / "worker.log")
    try:
        producer = RecordProducer(settings, codec)
        for r in records:
            producer.send(r.kind, r.key, r.value)
        producer.flush()

        def read(topic: str, expected: int = 0, timeout_s: float = 5.0, raw: bool = False) -> list[Any]:
            decode = None if raw else (lambda b: codec.decode(b, SCHEMA_OF_TOPIC[topic]))
            return consume_all(settings, topic, expected, timeout_s=timeout_s, decode=decode, stop_early=expected > 0)

        windows = len(records)
        edge = read(PUMP_SCORES_EDGE, windows, timeout_s=480)
        scored = sum(s["state"] == "SCORED" for _, s in edge)
        cloud = read(PUMP_SCORES_CLOUD, scored, timeout_s=240)
        wait_for(lambda: metric(worker, "vigil_records_in_total", "pump.scores.cloud") >= len(cloud), 240, "the alert stage", worker)
        alerts_first = read(ALERTS, timeout_s=3)
        wait_for(lambda: metric(worker, "vigil_records_in_total", "pump.trends") >= len(edge) + len(alerts_first), 240, "the trend stage", worker)
        trends_first = {spec.asset_id: worker.get_json(f"/pumps/{spec.asset_id}/trend") for spec in fleet}
        fleet_page = worker.get_json("/pumps")

        # Replay every stage's input: raw records, edge scores and cloud scores, as the same bytes.
        before = {stage: metric(worker, "vigil_duplicates_total", stage)
                  for stage in (PUMP_VIBRATION_RAW, PUMP_PROCESS_RAW, PUMP_SCORES_EDGE, PUMP_SCORES_CLOUD, PUMP_TRENDS)}
        for r in records:
            producer.send(r.kind, r.key, r.value)
        for topic in (PUMP_SCORES_EDGE, PUMP_SCORES_CLOUD):
            for key, value in read(topic, len(edge) if topic == PUMP_SCORES_EDGE else len(cloud), timeout_s=30, raw=True):
                producer.send_raw(topic, key, value)
        producer.flush()
        kinds = Counter(r.kind for r in records)
        replayed = {RAW_TOPIC_OF_KIND["vibration"]: kinds["vibration"], RAW_TOPIC_OF_KIND["process"]: kinds["process"],
                    PUMP_SCORES_EDGE: len(edge), PUMP_SCORES_CLOUD: len(cloud), PUMP_TRENDS: len(edge)}
        for stage, count in replayed.items():
            wait_for(lambda: metric(worker, "vigil_duplicates_total", stage) - before[stage] >= count, 120, f"replayed {stage}", worker)
        time.sleep(2.0)  # anything a replay wrongly produced would be out by now

        yield {
            "settings": settings, "fleet": fleet, "records": records, "worker": worker, "codec": codec, "read": read,
            "edge": [s for _, s in edge], "cloud": [s for _, s in cloud], "alerts": [a for _, a in alerts_first],
            "trends": trends_first, "fleet_page": fleet_page, "replayed": replayed, "before": before,
            "models": load_pump_models(settings.models_dir),
        }
    finally:
        worker.stop()


def test_degrading_pump_alerts_before_its_failure_and_healthy_pumps_stay_quiet(cascade):
    faulty = [s for s in cascade["fleet"] if s.fault]
    assert len(faulty) == 1
    pump = faulty[0]
    alerts = cascade["alerts"]
    assert {a["asset_id"] for a in alerts} == {pump.asset_id}, "healthy pumps raised alerts"
    opens = [a for a in alerts if a["state"] == "OPEN"]
    assert opens, "the degrading pump raised no alert"
    first = min(opens, key=lambda a: a["opened_ts_ms"])
    onset_ms = DEFAULT_START_TS_MS + pump.fault_onset_s * 1000
    assert onset_ms < first["opened_ts_ms"] < FAILURE_TS_MS
    models = cascade["models"]
    assert first["model_versions"] == {"edge": models.edge_version, "cloud": models.cloud_version}
    assert first["kind"] == "pump.anomaly" and first["confirmations"] == 1  # the opening window itself
    assert max(a["confirmations"] for a in alerts) > 1
    assert alerts[-1]["diagnosis"]["fault"] == EXPECTED_DIAGNOSIS[pump.fault]
    # Only flagged windows reach the cloud tier: the cascade's point.
    evaluated = [c for c in cascade["cloud"] if c["evaluated"]]
    assert len(evaluated) == sum(s["flagged"] for s in cascade["edge"] if s["state"] == "SCORED")
    assert len(evaluated) < 0.25 * len(cascade["cloud"])


def test_replaying_every_stage_input_adds_no_alert_and_changes_no_trend(cascade):
    alerts_after = [a for _, a in consume_all(
        cascade["settings"], ALERTS, 0, timeout_s=3, stop_early=False, decode=lambda b: cascade["codec"].decode(b, SCHEMA_OF_TOPIC[ALERTS]))]
    assert alerts_after == cascade["alerts"]
    assert len({a["alert_id"] for a in alerts_after if a["state"] == "OPEN"}) == len([a for a in alerts_after if a["state"] == "OPEN"])
    assert len(cascade["read"](PUMP_SCORES_CLOUD, timeout_s=3)) == 2 * len(cascade["cloud"])  # the originals plus our re-sent copies
    worker = cascade["worker"]
    for stage, count in cascade["replayed"].items():
        assert metric(worker, "vigil_duplicates_total", stage) - cascade["before"][stage] == count
    for spec in cascade["fleet"]:
        assert worker.get_json(f"/pumps/{spec.asset_id}/trend") == cascade["trends"][spec.asset_id]


def test_trend_buckets_equal_the_counts_in_the_topics(cascade):
    truth: dict[tuple[str, int], Counter] = defaultdict(Counter)
    for s in cascade["edge"]:
        c = truth[(s["asset_id"], hour_start(s["ts_ms"]))]
        c["windows"] += 1
        c["scored"] += s["state"] == "SCORED"
        c["flagged"] += s["state"] == "SCORED" and s["flagged"]
        c["vibration_windows"] += s["stream"].startswith("vibration/")
    for a in cascade["alerts"]:
        if a["state"] == "OPEN":
            truth[(a["asset_id"], hour_start(a["opened_ts_ms"]))]["alerts"] += 1
    rms_max: dict[tuple[str, int], float] = defaultdict(float)
    for s in cascade["edge"]:
        if s["stream"].startswith("vibration/"):
            key = (s["asset_id"], hour_start(s["ts_ms"]))
            rms_max[key] = max(rms_max[key], s["features"]["rms_g"])

    hours = sorted({h for _, h in truth})
    assert len(hours) == 3  # 150 minutes from midnight: three hourly buckets
    for spec in cascade["fleet"]:
        trend = cascade["trends"][spec.asset_id]
        buckets = {b["hour_start_ms"]: b for b in trend["buckets"]}
        assert sorted(buckets) == hours
        for hour, b in buckets.items():
            expected = truth[(spec.asset_id, hour)]
            assert {k: b[k] for k in ("windows", "scored", "flagged", "vibration_windows", "alerts")} == \
                {k: expected[k] for k in ("windows", "scored", "flagged", "vibration_windows", "alerts")}
            assert b["rms_max_g"] == pytest.approx(rms_max[(spec.asset_id, hour)])
        assert trend["windows"] == sum(truth[(spec.asset_id, h)]["windows"] for h in hours) == 2 * STEPS
        assert trend["alerts"] == len({a["alert_id"] for a in cascade["alerts"] if a["asset_id"] == spec.asset_id})

    # Published buckets: every hour the pumps' events have passed; the latest revision has the counts. An hour can
    # be republished: an alert reaches the trend stage after its windows, and at start-up one stream's backlog can
    # run ahead of a stream the stage has not seen yet.
    published = [t for _, t in cascade["read"](PUMP_TRENDS, timeout_s=3)]
    latest = {}
    for t in sorted(published, key=lambda t: t["revision"]):
        latest[(t["asset_id"], t["hour_start_ms"])] = t
    assert sorted(latest) == sorted((spec.asset_id, h) for spec in cascade["fleet"] for h in hours[:-1])
    assert {(t["asset_id"], t["hour_start_ms"]) for t in published if t["revision"] == 0} == set(latest)
    for key, t in latest.items():
        assert (t["windows"], t["flagged"], t["alerts"]) == (truth[key]["windows"], truth[key]["flagged"], truth[key]["alerts"])
        assert t["hour_end_ms"] == t["hour_start_ms"] + HOUR_MS
    revisions = defaultdict(list)
    for t in published:
        revisions[(t["asset_id"], t["hour_start_ms"])].append(t["revision"])
    assert all(sorted(r) == list(range(len(r))) for r in revisions.values())

    # The fleet page puts the pump with an open alert first, and its health is rising.
    page = cascade["fleet_page"]
    faulty = next(s.asset_id for s in cascade["fleet"] if s.fault)
    assert page["count"] == PUMPS and page["pumps"][0]["asset_id"] == faulty
    assert page["pumps"][0]["open_alerts"]


def test_alerts_tail_and_the_documented_consumer_read_every_alert(cascade, tmp_path):
    settings, alerts = cascade["settings"], cascade["alerts"]
    result = subprocess.run(
        [sys.executable, "-m", "vigil", "alerts", "tail", "--from-beginning", "--json", "--max", str(len(alerts)), "--timeout-s", "20"],
        env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    tailed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(a["alert_id"], a["state"], a["severity"]) for a in tailed] == [(a["alert_id"], a["state"], a["severity"]) for a in alerts]

    spec = importlib.util.spec_from_file_location("alert_consumer", REPO / "docs" / "examples" / "alert_consumer.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    handled: list[dict[str, Any]] = []
    progress = example.consume(
        settings.bootstrap_servers, "downstream-team", str(REPO / "schemas" / "common" / "Alert.v1.avsc"),
        topic=settings.topic(ALERTS), timeout_s=3.0, handle=handled.append,
    )
    # Replayed cloud scores produced no new alert records, and the consumer saw each state change once.
    assert [a["alert_id"] for a in handled] == [a["alert_id"] for a in alerts]
    assert set(progress) == {a["alert_id"] for a in alerts}
