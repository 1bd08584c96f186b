"""SisFall subjects replayed as wearers through `vigil produce falls --pack` and a live worker: the live
cascade detects exactly the trials the offline evaluation detects, with the same model, on subjects it never saw."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from tests.fixtures.broker import consume_all, launch_worker
from vigil.models.registry import FALL_TIER, ModelRegistry
from vigil.streams.falls.offline import load_candidates
from vigil.streams.falls.training import fall_model_metadata, fit_fall_classifier
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import ALERTS, FALL_CANDIDATES, FALL_DEADLETTER, FALL_SUSPECTED, SCHEMA_OF_TOPIC, ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.dataset, pytest.mark.timeout(600)]

HELD_OUT = ("SA13", "SE04")  # a young subject with falls, an elderly one with ADL only


def test_replayed_subjects_alert_on_the_trials_the_offline_evaluation_detects(broker, models_dir, sisfall_pack, tmp_path):
    import shutil

    data = load_candidates(sisfall_pack)
    trained = sorted(set(data.subject.tolist()) - set(HELD_OUT))
    clf = fit_fall_classifier(data, trained)
    shutil.copytree(models_dir, tmp_path / "models")
    ModelRegistry(tmp_path / "models").save(FALL_TIER, clf, fall_model_metadata(data, clf, trained, sisfall_pack), activate=True)
    # Offline: the trials of the held-out subjects that stage 2 fires on, through the evaluation's own functions.
    judged = np.isin(data.subject, HELD_OUT)
    candidates = judged[data.trial] & data.passed
    fires = clf.predict_proba_features(data.features[candidates]) >= clf.threshold_
    offline = set(np.unique(data.trial[candidates][fires]).tolist())
    assert offline, "the held-out falls should be detected offline"

    settings = replace(
        Settings.from_env({}), broker_hosts=(broker.bootstrap,), app_id="fall-replay", topic_prefix="fall-replay.", partitions=2,
        retention_ms=600_000, session_timeout_s=10.0, heartbeat_interval_s=1.0, models_dir=tmp_path / "models",
        fall_confirm_window_s=2.0,
    )
    ensure_topics(settings)
    worker = launch_worker(settings, tmp_path / "worker.log")
    try:
        truth = tmp_path / "truth.json"
        out = subprocess.run(
            [sys.executable, "-m", "vigil", "produce", "falls", "--pack", str(sisfall_pack), "--subjects", *HELD_OUT,
             "--truth", str(truth), "--json"],
            env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=300, check=True)
        stats = json.loads(out.stdout)
        assert (stats["wearers"], stats["trials"]) == (2, int(judged.sum()))
        assert stats["falls"] == int((judged & data.is_fall).sum()) == 75
        spans = json.loads(truth.read_text())
        codec = AvroCodec()

        def read(topic: str) -> list[dict]:
            return [v for _, v in consume_all(settings, topic, 0, timeout_s=1.5, stop_early=False,
                                              decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[topic]))]

        deadline = time.monotonic() + 300
        while True:  # every suspected fall alerts (nobody answers): wait until each has its alert
            suspected, alerts = read(FALL_SUSPECTED), read(ALERTS)
            if suspected and len(alerts) >= len(suspected) and worker.metrics().get('vigil_records_in_total{stage="wearable.imu.raw"}', 0) >= stats["records"]:
                break
            assert time.monotonic() < deadline, f"{len(suspected)} suspected, {len(alerts)} alerts\n{worker.log()}"
            assert worker.process.poll() is None, worker.log()
            time.sleep(2.0)
    finally:
        worker.stop()

    def trial_of(wearer: str, ts_ms: int) -> int:
        span = next(s for s in spans if s["wearer_id"] == wearer and s["start_ts_ms"] <= ts_ms < s["end_ts_ms"])
        return int(span["source"].rsplit("/", 1)[1])

    live = {trial_of(a["asset_id"], a["opened_ts_ms"]) for a in alerts}
    assert live == offline
    assert len(alerts) == len(suspected) == int(fires.sum())  # one alert per suspected impact
    assert len(read(FALL_CANDIDATES)) == int(candidates.sum())  # stage 1 live = stage 1 offline
    assert read(FALL_DEADLETTER) == []
    falls_detected = sum(bool(data.is_fall[t]) for t in live)
    assert falls_detected / 75 >= 0.95 and all(data.is_fall[t] or data.subject[t] == "SE04" for t in live)
