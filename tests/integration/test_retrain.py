"""`vigil retrain pumps` on the real broker: healthy windows from pump.features, lineage, the gate, promote or shadow."""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import replace

import pytest

from tests.integration.test_cli import vigil
from vigil.models.registry import CLOUD_TIER, EDGE_TIER, ModelRegistry
from vigil.models.retraining import RetrainBounds
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.lifecycle.control import ModelChanges
from vigil.streams.lifecycle.retrain import retrain_pumps
from vigil.streams.pumps.offline import OfflinePumpPipeline
from vigil.streams.pumps.training import PumpTrainingConfig
from vigil.streams.runtime.stage import dead_letter
from vigil.streams.runtime.topics import ALERTS, PUMP_DEADLETTER, PUMP_FEATURES, SCHEMA_OF_TOPIC, ensure_topics
from vigil.streams.runtime.validation import Rejection

pytestmark = pytest.mark.broker

PUMPS, STEPS, EPISODE_WINDOWS = 5, 80, 10
QUICK = PumpTrainingConfig(cloud_epochs=2, edge_trees=50)


@pytest.fixture
def stream(broker_settings, models_dir, simulated_fleet, codec, tmp_path):
    """pump.features of 5 healthy pumps (80 windows per stream), an alert episode over 10 of pump 0's windows and
    dead letters for 20 % of pump 4's records, on the broker; a copy of the session registry."""
    shutil.copytree(models_dir, tmp_path / "models")
    settings = replace(broker_settings, models_dir=tmp_path / "models")
    ensure_topics(settings)
    windows = OfflinePumpPipeline().feed((r.kind, r.key, r.value) for r in simulated_fleet(pumps=PUMPS, steps=STEPS, seed=31)).features
    producer = RecordProducer(settings, codec)
    for topic, records in ((PUMP_FEATURES, windows),):
        for w in records:
            producer.send_raw(topic, w["asset_id"].encode(), codec.encode(settings.topic(topic), SCHEMA_OF_TOPIC[topic], w))
    pumps = sorted({w["asset_id"] for w in windows})
    sick = sorted((w for w in windows if w["asset_id"] == pumps[0] and w["stream"].startswith("vibration")), key=lambda w: w["ts_ms"])
    opened, closed = sick[40]["ts_ms"], sick[40 + EPISODE_WINDOWS - 1]["ts_ms"]
    for state, ts in (("OPEN", opened), ("CLOSE", closed)):
        alert = {"alert_id": "a1", "asset_id": pumps[0], "kind": "pump.anomaly", "state": state, "severity": "HIGH", "ts_ms": ts,
                 "opened_ts_ms": opened, "first_seq": 40, "first_stream": sick[40]["stream"], "last_seq": 49,
                 "last_stream": sick[40]["stream"], "confirmations": 3, "edge_score": 0.8, "cloud_score": 9.0,
                 "model_versions": {}, "top_features": {}, "diagnosis": None, "detail": ""}
        producer.send_raw(ALERTS, pumps[0].encode(), codec.encode(settings.topic(ALERTS), SCHEMA_OF_TOPIC[ALERTS], alert))
    per_pump = sum(w["asset_id"] == pumps[4] for w in windows)
    from vigil.streams.runtime.stage import RawMessage

    for i in range(per_pump // 4):  # 25 % of its records' worth: over the 5 % bound
        letter = dead_letter(RawMessage("pump.vibration.raw", 0, i, pumps[4].encode(), b"\x00bad"), Rejection("non_finite", "NaN", pumps[4]))
        producer.send_raw(PUMP_DEADLETTER, pumps[4].encode(),
                          codec.encode(settings.topic(PUMP_DEADLETTER), SCHEMA_OF_TOPIC[PUMP_DEADLETTER], letter))
    producer.flush()
    in_episode = sum(1 for w in windows if w["asset_id"] == pumps[0] and opened <= w["ts_ms"] <= closed)
    return settings, windows, pumps, in_episode


def test_retrain_keeps_healthy_windows_records_lineage_and_applies_the_gate(stream, synthetic_packs):
    settings, windows, pumps, in_episode = stream
    _, (pack, _) = synthetic_packs
    out = vigil("retrain", "pumps", "--judge", str(pack), "--json", env=settings.to_env(), timeout_s=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    checks = report["checks"]
    assert checks["windows_read"] == len(windows) and checks["windows_in_alert_episodes"] == in_episode
    assert list(checks["assets_over_deadletter_share"]) == [pumps[4]]
    assert checks["assets_kept"] == pumps[:4]
    assert checks["windows_kept"] == sum(w["asset_id"] in pumps[:4] for w in windows) - in_episode
    lineage = report["lineage"]
    assert lineage["topic"] == settings.topic(PUMP_FEATURES) and lineage["windows"] == len(windows)
    assert sum(last - first + 1 for first, last in lineage["offsets"].values()) == len(windows)
    registry = ModelRegistry(settings.models_dir)
    edge_meta = registry.metadata(EDGE_TIER, report["candidate"]["edge"])
    assert edge_meta["source"]["stream"]["offsets"] == lineage["offsets"]
    assert registry.metadata(CLOUD_TIER, report["candidate"]["cloud"])["edge_version"] == report["candidate"]["edge"]
    # The decision follows the gate on the two judgements, and the changes say so.
    active, candidate = report["active_judgement"], report["candidate_judgement"]
    passes = (active["recall"] - candidate["recall"] <= 0.05 + 1e-12) and candidate["false_alarms"] <= 1.5 * active["false_alarms"]
    assert report["decision"] == ("promoted" if passes else "shadow")
    alias = "active" if passes else "shadow"
    history = json.loads(vigil("models", "history", "edge", "--json", env=settings.to_env()).stdout)
    assert [(h["alias"], h["to"], h["who"]) for h in history] == [(alias, report["candidate"]["edge"], "vigil retrain")]
    assert "retrained on" in history[0]["why"] and "recall" in history[0]["why"]


def test_a_candidate_that_fails_the_gate_stays_in_shadow_and_the_active_pair_is_untouched(stream, synthetic_packs):
    settings, _, _, _ = stream
    _, (pack, _) = synthetic_packs
    changes = ModelChanges(settings)
    before = {tier: changes.registry.active_version(tier) for tier in (EDGE_TIER, CLOUD_TIER)}
    impossible = RetrainBounds(max_recall_drop=-1.0)  # no candidate can gain more than 1.0 of recall
    report = retrain_pumps(settings, judge_pack=pack, bounds=impossible, config=QUICK)
    assert report["decision"] == "shadow" and "drop" in report["reasons"][0] and "> -1" in report["reasons"][0]
    assert {c["alias"] for c in report["changes"]} == {"shadow"}
    assert {tier: changes.registry.active_version(tier) for tier in (EDGE_TIER, CLOUD_TIER)} == before
    assert changes.in_force(EDGE_TIER) is None and changes.in_force(EDGE_TIER, "shadow")["version"] == report["candidate"]["edge"]


def test_too_little_healthy_data_is_refused_before_training(stream):
    settings, _, _, _ = stream
    out = vigil("retrain", "pumps", "--min-windows", "500", env=settings.to_env())
    assert out.returncode == 2 and "not retraining" in out.stderr and "500 per stream" in out.stderr
    assert len(ModelRegistry(settings.models_dir).versions(EDGE_TIER)) == 1  # nothing saved


@pytest.mark.dataset
def test_retrain_falls_learns_from_dismissed_confirmations_and_is_judged_on_held_out_subjects(broker_settings, sisfall_pack,
                                                                                             tmp_path, codec):
    import numpy as np

    from vigil.models.falls import FEATURE_NAMES
    from vigil.models.registry import FALL_TIER
    from vigil.streams.falls.offline import load_candidates
    from vigil.streams.falls.training import save_fall_model
    from vigil.streams.lifecycle.retrain import retrain_falls
    from vigil.streams.runtime.topics import FALL_OUTCOMES

    settings = replace(broker_settings, models_dir=tmp_path / "models")
    ensure_topics(settings)
    data = load_candidates(sisfall_pack)
    subjects = sorted(set(data.subject.tolist()))
    trained = subjects[:12]
    active_version, active = save_fall_model(settings, data, trained, str(sisfall_pack))
    # The wearers' "I'm OK" answers: the training subjects' ADL candidates the active model is surest are falls.
    adl = np.flatnonzero(data.passed & ~data.is_fall[data.trial] & np.isin(data.subject, trained)[data.trial])
    dismissed = data.features[adl[np.argsort(-active.predict_proba_features(data.features[adl]))[:20]]]
    producer = RecordProducer(settings, codec)
    topic = settings.topic(FALL_OUTCOMES)
    for i, (outcome, row) in enumerate([("DISMISSED", r) for r in dismissed] + [("EMERGENCY_HELP", dismissed[0])] * 3):
        record = {"request_id": f"r{i}", "wearer_id": f"w{i % 4}", "seq": i, "impact_ts_ms": 1000 * i,
                  "outcome": outcome, "label": "false_alarm" if outcome == "DISMISSED" else "fall", "requested_ts_ms": 1000 * i,
                  "decided_ts_ms": 1000 * i + 10_000, "response_ts_ms": None, "probability": 0.9, "threshold": 0.5,
                  "model_version": active_version, "window_start_ts_ms": 1000 * i - 2000, "fs_hz": data.fs_hz,
                  "features": dict(zip(FEATURE_NAMES, map(float, row)))}
        producer.send_raw(FALL_OUTCOMES, record["wearer_id"].encode(), codec.encode(topic, SCHEMA_OF_TOPIC[FALL_OUTCOMES], record))
    producer.flush()

    report = retrain_falls(settings, sisfall_pack)
    assert report["lineage"]["dismissed"] == 20 and report["active"] == active_version  # help answers are not negatives
    assert report["held_out_subjects"] == subjects[12:]
    registry = ModelRegistry(settings.models_dir)
    candidate, meta = registry.load(FALL_TIER, report["candidate"])
    assert meta["source"]["stream"]["dismissed"] == 20 and meta["trained_subjects"] == trained
    # The dismissed windows are negatives now: the candidate rates them lower than the model that raised them.
    assert candidate.predict_proba_features(dismissed).mean() < active.predict_proba_features(dismissed).mean()
    a, c = report["active_judgement"], report["candidate_judgement"]
    passes = a["recall"] - c["recall"] <= 0.05 + 1e-12 and c["false_alarms"] <= 1.5 * a["false_alarms"]
    assert report["decision"] == ("promoted" if passes else "shadow")
    changes = ModelChanges(settings)
    assert changes.in_force(FALL_TIER, "active" if passes else "shadow")["version"] == report["candidate"]
    assert [h["who"] for h in changes.history(FALL_TIER)] == ["vigil retrain"]


def test_retraining_on_drift_waits_for_a_fleet_feature_finding_and_ignores_the_others(broker_settings, codec):
    import threading

    from vigil.streams.lifecycle.retrain import wait_for_drift
    from vigil.streams.runtime.topics import OPS_DRIFT

    ensure_topics(broker_settings)
    stop, found = threading.Event(), []
    waiter = threading.Thread(target=lambda: found.append(wait_for_drift(broker_settings, stop.is_set, codec=codec)), daemon=True)
    waiter.start()
    time.sleep(3.0)  # the follower starts at the end of ops.drift: what is there before is history
    base = {"feature_set": "process.v1", "model_version": "edge-1", "window": "1h", "state": "OPEN", "opened_ts_ms": 7_200_000,
            "window_start_ms": 3_600_000, "window_end_ms": 7_200_000, "assets": [], "unreferenced": [],
            "features": [{"feature": "flow_l_min", "n": 100, "psi": 1.2, "kl": 0.9, "js": 0.4, "test": "chi2", "p_value": 1e-9,
                          "drifted": True}]}
    producer = RecordProducer(broker_settings, codec)
    for finding in ({**base, "finding_id": "p", "scope": "fleet", "asset_id": "fleet", "kind": "prediction"},
                    {**base, "finding_id": "a", "scope": "asset", "asset_id": "pump-1", "kind": "feature"},
                    {**base, "finding_id": "f", "scope": "fleet", "asset_id": "fleet", "kind": "feature"}):
        producer.send_raw(OPS_DRIFT, finding["asset_id"].encode(),
                          codec.encode(broker_settings.topic(OPS_DRIFT), SCHEMA_OF_TOPIC[OPS_DRIFT], finding))
    producer.flush()
    waiter.join(timeout=60)
    stop.set()
    assert [f["finding_id"] for f in found] == ["f"]


def test_retraining_on_a_missed_failure_waits_for_a_missed_verdict_and_ignores_detected_ones(broker_settings, codec):
    import threading

    from vigil.streams.lifecycle.retrain import wait_for_trigger
    from vigil.streams.runtime.topics import OPS_FAILURES

    ensure_topics(broker_settings)
    stop, found = threading.Event(), []
    waiter = threading.Thread(target=lambda: found.append(wait_for_trigger(broker_settings, stop.is_set, drift_scopes=None,
                                                                           missed_failures=True, codec=codec)), daemon=True)
    waiter.start()
    time.sleep(3.0)  # from the end of ops.failures on
    base = {"asset_id": "pump-1", "failure_ts_ms": 7_200_000, "fault": "seal_leak", "alert_ids": [], "lead_time_h": None,
            "model_version": "e1/c1", "lookback_h": 720.0, "revision": 0}
    producer = RecordProducer(broker_settings, codec)
    for verdict in ({**base, "failure_id": "seen", "verdict": "DETECTED", "alert_ids": ["a1"], "lead_time_h": 2.0},
                    {**base, "failure_id": "missed", "verdict": "MISSED"}):
        producer.send_record(OPS_FAILURES, "pump-1", verdict)
    producer.flush()
    waiter.join(timeout=60)
    stop.set()
    assert [(kind, v["failure_id"]) for kind, v in found] == [("missed_failure", "missed")]


def test_retrain_judges_both_pairs_on_what_maintenance_reported_and_trains_on_the_offsets_asked(stream):
    from vigil.streams.lifecycle.control import read_to_end
    from vigil.streams.runtime.codec import AvroCodec
    from vigil.streams.runtime.topics import ALERTS_FEEDBACK, MAINTENANCE_FAILURES

    settings, windows, pumps, _ = stream
    codec = AvroCodec()
    producer = RecordProducer(settings, codec)
    # The crew found nothing behind pump 0's alert, and pump 1 failed after its last window with no alert before it.
    now = int(time.time() * 1000)
    producer.send_record(ALERTS_FEEDBACK, pumps[0], {"alert_id": "a1", "asset_id": pumps[0], "outcome": "nothing-found", "fault": None,
                                                     "note": None, "resolved_ts_ms": now, "failure_ts_ms": None, "who": "crew-3", "ts_ms": now})
    failed_at = max(w["ts_ms"] for w in windows if w["asset_id"] == pumps[1])
    producer.send_record(MAINTENANCE_FAILURES, pumps[1], {"failure_id": "wo-1", "asset_id": pumps[1], "failure_ts_ms": failed_at,
                                                          "fault": "seal_leak", "note": None, "model_version": None, "who": "crew-3",
                                                          "ts_ms": now})
    producer.flush()
    on_partition = Counter(r.partition for r in read_to_end(settings, PUMP_FEATURES))
    left_out = max(on_partition)  # train without the last partition's windows
    asked = {p: (0, n - 1) for p, n in on_partition.items() if p != left_out}
    report = retrain_pumps(settings, bounds=RetrainBounds(min_assets=1), config=QUICK, offsets=asked)

    assert report["checks"]["windows_read"] == len(windows) - on_partition[left_out]
    assert report["lineage"]["offsets"] == {str(p): [first, last] for p, (first, last) in sorted(asked.items())}
    assert report["lineage"]["offsets_requested"] == {str(p): [first, last] for p, (first, last) in sorted(asked.items())}
    judged = report["stream_judgement"]
    replayed = sum(w["asset_id"] in pumps[:2] for w in windows)  # both pumps' windows from their first, every partition
    for name, versions in (("active", report["active"]), ("candidate", report["candidate"])):
        assert {k: judged[name][k] for k in ("failures", "quiet_episodes", "windows_replayed")} == {
            "failures": 1, "quiet_episodes": 1, "windows_replayed": replayed}
        assert judged[name]["models"] == {"edge": versions["edge"], "cloud": versions["cloud"]}
        assert judged[name]["recall"] == judged[name]["detected"] / 1 and 0 <= judged[name]["false_alarms"] <= 1
    passes = (judged["active"]["recall"] - judged["candidate"]["recall"] <= 0.05 + 1e-12
              and judged["candidate"]["false_alarms"] <= 1.5 * judged["active"]["false_alarms"])
    assert report["decision"] == ("promoted" if passes else "shadow")
    assert all(reason.startswith("stream: ") for reason in report["reasons"]) and len(report["reasons"]) == 2


def test_offsets_that_are_not_ranges_are_refused():
    out = vigil("retrain", "pumps", "--offsets", "0:9-3", env={"VIGIL_BROKER": "kafka://127.0.0.1:9"})
    assert out.returncode == 2 and "--offsets 0:9-3: the first offset is after the last" in out.stderr
