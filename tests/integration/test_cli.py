"""The `vigil` command as users run it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.fixtures.broker import consume_all
from vigil.models.registry import ModelRegistry
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.falls.responder import ResponderPolicy
from vigil.streams.pumps.training import PumpTrainingConfig
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.topics import PUMP_PROCESS_RAW, PUMP_VIBRATION_RAW, SCHEMA_OF_TOPIC


def vigil(*args: str, env: dict[str, str] | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigil", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout_s)


def test_train_pumps_simulate_writes_both_tiers_with_the_default_settings(tmp_path):
    out = vigil("train", "pumps", "--simulate", "--pumps", "4", "--windows", "60", "--json", env={"VIGIL_MODELS": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    registry = ModelRegistry(tmp_path)
    assert registry.active_version("edge") == report["edge_version"]
    assert registry.active_version("cloud") == report["cloud_version"]
    model, meta = registry.load("edge")
    assert set(model.feature_sets) == {"vibration.v2", "process.v1"}
    assert meta["source"]["simulation"]["healthy"] is True and meta["baseline_windows"] == 30
    assert meta["training_config"] == json.loads(json.dumps(asdict(PumpTrainingConfig())))
    assert 0.5 < report["metrics"]["edge"]["vibration.v2"]["threshold"] < 1


def test_train_edge_is_gone_with_a_clear_message():
    out = vigil("train", "edge", "--simulate")
    assert out.returncode == 2 and "invalid choice: 'edge'" in out.stderr


@pytest.mark.broker
def test_produce_simulate_publishes_what_it_says(broker_settings):
    env = broker_settings.to_env()
    out = vigil("produce", "pumps", "--simulate", "3", "--steps", "5", "--seed", "4", "--json", env=env)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["vibration"] == 15 and stats["process"] == 15 and stats["delivered"] == 30
    codec = AvroCodec()
    got = consume_all(broker_settings, PUMP_VIBRATION_RAW, 15, timeout_s=20, decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[PUMP_VIBRATION_RAW]))
    assert sorted((k, v["seq"]) for k, v in got) == sorted((f"pump-{p:03d}".encode(), s) for p in range(3) for s in range(5))
    assert len(consume_all(broker_settings, PUMP_PROCESS_RAW, 15, timeout_s=20)) == 15


@pytest.mark.broker
def test_produce_falls_simulate_and_respond_play_wearers_and_their_devices(broker_settings):
    from vigil.streams.runtime.topics import FALL_CONFIRM_REQUEST, WEARABLE_IMU_RAW, WEARABLE_USER_RESPONSE

    env = broker_settings.to_env()
    out = vigil("produce", "falls", "--simulate", "2", "--trials", "3", "--seed", "5", "--json", env=env)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert (stats["wearers"], stats["trials"]) == (2, 6) and stats["delivered"] == stats["records"] == 2 * 3 * 15  # 15 s trials, 1 s chunks
    codec = AvroCodec()
    chunks = consume_all(broker_settings, WEARABLE_IMU_RAW, stats["records"], timeout_s=20,
                         decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[WEARABLE_IMU_RAW]))
    assert {k for k, _ in chunks} == {b"wearer-000", b"wearer-001"} and all(len(v["xyz"]) == 200 * 12 for _, v in chunks)

    producer = RecordProducer(broker_settings, codec)
    for i in range(4):  # what a worker asks; the simulated devices answer OK or nothing, deterministically per request
        producer.send_record(FALL_CONFIRM_REQUEST, "wearer-000", {"request_id": f"wearer-000/fall/{i}", "wearer_id": "wearer-000", "seq": i,
                             "impact_ts_ms": i, "requested_ts_ms": 0, "deadline_ts_ms": 10_000, "probability": 0.9})
    producer.flush()
    out = vigil("respond", "--ok-probability", "0.5", "--delay-s", "0", "--max-seconds", "8", "--from-beginning", "--json", env=env)
    assert out.returncode == 0, out.stderr
    answered = json.loads(out.stdout)
    policy = ResponderPolicy(ok_probability=0.5)
    expected_ok = [f"wearer-000/fall/{i}" for i in range(4) if policy.answer(f"wearer-000/fall/{i}") == "OK"]
    assert (answered["requests"], answered["OK"], answered["silent"]) == (4, len(expected_ok), 4 - len(expected_ok))
    answers = consume_all(broker_settings, WEARABLE_USER_RESPONSE, len(expected_ok), timeout_s=10,
                          decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[WEARABLE_USER_RESPONSE]))
    assert sorted(v["request_id"] for _, v in answers) == sorted(expected_ok) and all(k == b"wearer-000" for k, _ in answers)


@pytest.mark.broker
@pytest.mark.dataset
def test_produce_pack_replays_a_pack(broker_settings, cwru_pack):
    out = vigil("produce", "pumps", "--pack", str(cwru_pack), "--json", env=broker_settings.to_env(), timeout_s=600)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert len(stats["assets"]) == 61 and stats["delivered"] == stats["records"] > 600


@pytest.mark.broker
@pytest.mark.timeout(420)
def test_a_short_demo_completes_and_writes_the_report_with_its_plots(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    out = subprocess.run(
        [sys.executable, "-m", "vigil", "demo", "--pumps", "4", "--faulty", "1", "--days", "3", "--publish-seconds", "40",
         "--max-seconds", "240", "--wearers", "4", "--trials-per-wearer", "8", "--retrain-at", "0.5", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=360,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    steps = 3 * 48  # a capture every 30 minutes
    assert summary["complete"] and summary["assets"] == 4
    funnel = summary["funnel"]
    assert funnel["raw records"] == funnel["windows"] == 4 * steps * 2
    assert funnel["scored"] == funnel["windows"] - 4 * 2 * 30  # 30 commissioning windows per stream
    assert funnel["flagged"] >= funnel["confirmed"] >= 1 and funnel["alerts"] == len(summary["alerts"])
    assert sum(summary["dead_letters"].values()) == summary["malformed_injected"]
    assert summary["detected"] == summary["faulty"] and len(summary["faulty"]) == 1
    assert 0 < summary["lead_hours"][summary["faulty"][0]] < 72
    assert summary["trends_served"] == 4
    assert summary["latency"]["end to end: raw -> pump.scores.cloud"]["n"] == funnel["scored"]
    # Two workers, each in its own group: the scoring path, and the monitoring stages that judged drift and quality.
    assert summary["worker_joined_s"] is not None and summary["monitoring_worker_joined_s"] is not None
    assert summary["throughput"]["worker_cpu_s"] > 0 and summary["throughput"]["monitoring_worker_cpu_s"] > 0

    # Mid-run the demo retrained on pump.features, shadowed the pair, compared and promoted it: both tiers switched
    # (and their shadows were retired) in the one worker, and no window was scored twice or skipped across the switch.
    retrain = summary["retrain"]
    assert summary["model_change_error"] is None and retrain["decision"] == "shadow" and retrain["assets_kept"] >= 3
    switched = {(m["tier"], m["alias"], m["kind"]): m for m in summary["model_switches"]}
    assert set(switched) == {(t, a, k) for t in ("edge", "cloud") for a, k in (("shadow", "model_switched"), ("active", "model_switched"),
                                                                                  ("shadow", "model_retired"))}
    assert switched[("edge", "active", "model_switched")]["to"] == retrain["candidate"]["edge"]
    assert switched[("edge", "active", "model_switched")]["from"] == retrain["active"]["edge"]
    assert all(0 <= m["switch_s"] < 30 for m in summary["model_switches"])
    assert summary["windows_scored_twice"] == 0 and summary["windows_unscored"] == 0
    assert sum(v["windows"] for v in summary["versions_scored"].values()) == funnel["windows"]
    assert set(summary["versions_scored"]) <= {retrain["active"]["edge"], retrain["candidate"]["edge"]}
    assert summary["shadow_comparison"]["windows_compared"] > 0

    # The fall cascade ran beside the pumps: 4 synthetic wearers, 2 falls each, every request settled.
    falls = summary["falls"]
    assert (falls["wearers"], falls["trials"], falls["fall_trials"]) == (4, 32, 8)
    assert falls["falls_suspected"] >= 7 and falls["adl_suspected"] <= 1
    f = falls["funnel"]
    assert f["stage 1: candidates"] >= f["stage 2: suspected falls"] == f["confirmation requests"] >= 7
    settled = falls["outcomes"]
    assert sum(settled.values()) == f["confirmation requests"]
    assert f["emergency alerts"] == len(falls["alerts"]) == settled["no answer: alert"] + settled["help asked: alert"]
    assert falls["responder"]["requests"] == f["confirmation requests"] and falls["responder"]["OK"] == settled["dismissed (wearer said OK)"]
    assert falls["latency"]["unanswered deadline -> alert"]["n"] == settled["no answer: alert"]

    # Day 1.5 a duty-point step on one healthy pump, day 1.8 the other two flat-lined: data quality names the stuck
    # ones (their vibration from the window they stuck in). The simulated crew labelled every pump alert.
    injected = {c["asset_id"]: c for c in summary["injected"]}
    assert sorted(c["change"] for c in injected.values()) == ["duty_point", "stuck_sensor", "stuck_sensor"]
    assert summary["faulty"][0] not in injected
    found = {r["asset_id"]: r for r in summary["time_to_finding"]}
    assert all(0 < found[a]["hours_to_finding"] <= 1.0 for a, c in injected.items() if c["change"] == "stuck_sensor")
    stuck = {f["asset_id"] for f in summary["quality_findings"] if f["named"] == "stuck" and f["scope"] == "asset"}
    assert stuck == {a for a, c in injected.items() if c["change"] == "stuck_sensor"}
    assert all(f["opened_ms"] <= (f["closed_ms"] or f["opened_ms"]) for f in summary["drift_findings"] + summary["quality_findings"])
    realised = summary["realised"]
    assert sum(r["episodes"] for r in realised) == funnel["alerts"] == sum(r["labelled"] for r in realised)
    assert sum(r["fault_found"] for r in realised) >= 1 and all(r["unlabelled"] == 0 for r in realised)
    # The crew reported the faulty pump's failure (its alert warned of it) and a coupling failure on a quiet pump, which no
    # alert warned of: ops.failures judged them DETECTED and MISSED, and the missed one is charged to the serving pair.
    verdicts = {f["asset_id"]: f for f in summary["failures"]}
    assert summary["failures_reported"] == len(verdicts) == 2
    detected = verdicts[summary["faulty"][0]]
    assert detected["verdict"] == "DETECTED" and detected["lead_time_h"] == pytest.approx(summary["lead_hours"][summary["faulty"][0]], abs=0.01)
    (quiet,) = set(verdicts) - set(summary["faulty"])
    assert verdicts[quiet]["verdict"] == "MISSED" and verdicts[quiet]["alert_ids"] == [] and verdicts[quiet]["fault"] == "coupling"
    assert verdicts[quiet]["failure_ts_ms"] == summary["event_start_ms"] + 3 * 86_400_000 // 4  # a quarter into the 3 days
    assert all(a["opened_day"] > 0.75 for a in summary["alerts"] if a["asset_id"] == quiet)  # no alert before it
    assert summary["missed_failures"] == {verdicts[quiet]["model_version"]: 1} and "?" not in verdicts[quiet]["model_version"]

    report = tmp_path / "vigil-report"
    assert summary["report"] == str(Path("vigil-report") / "index.html")
    plots = sorted(p.name for p in (report / "plots").glob("*.svg"))
    assert plots == sorted(["funnel.svg", "latency.svg", "falls-funnel.svg", "falls-latency.svg"] + [f"health-pump-{i:03d}.svg" for i in range(4)])
    page = (report / "index.html").read_text()
    assert page.count("<svg") == len(plots) and summary["faulty"][0] in page
    assert "Model change during the run" in page and retrain["candidate"]["edge"] in page
    assert "Monitoring: drift, data quality and realised performance" in page
    assert "failures the crew reported, judged on ops.failures: 1 missed of 2" in page


@pytest.mark.broker
@pytest.mark.timeout(420)
def test_the_demo_replays_a_pack_and_raises_the_alerts_the_offline_cascade_raises(tmp_path, synthetic_packs):
    from vigil.streams.evaluation.pumps import run_cascade
    from vigil.streams.pumps.training import load_pump_models

    _, (pack, onsets) = synthetic_packs
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    out = subprocess.run(
        [sys.executable, "-m", "vigil", "demo", "--pack", str(pack), "--publish-seconds", "30", "--max-seconds", "240",
         "--wearers", "0", "--retrain-at", "0", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=360,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["complete"] and summary["funnel"]["raw records"] == summary["funnel"]["windows"] == 6 * 240 * 2
    assert {a["asset_id"] for a in summary["alerts"]} == set(onsets)
    assert summary["trends_served"] == 6

    # The same models over the same pack, offline: the same episodes, by id.
    models = load_pump_models(tmp_path / ".vigil" / "demo" / "models")
    _, offline = run_cascade(pack, (models.edge, models.edge_version), (models.cloud, models.cloud_version),
                             cloud_thresholds=models.cloud_thresholds)
    assert sorted(a["alert_id"] for a in summary["alerts"]) == sorted(a["alert_id"] for a in offline.alerts if a["state"] == "OPEN")
