"""The fall topology live on the real embedded broker, through `vigil worker`:
wearable.imu.raw -> fall.candidates -> fall.suspected -> confirmation -> alerts / fall.outcomes.

Wearers replay crafted signals (tests/fixtures/falls.py) against a stage-2 model
fitted on crafted falls; the test plays each wearer's device, answering or not.
One worker is shared by the module; the restart test stops it during a wait
and starts another.
"""
from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace
from typing import Any, Iterator

import numpy as np
import pytest

from tests.fixtures.broker import consume_all, launch_worker
from tests.fixtures.falls import fall, lying_down_slowly, sit_down_hard, walking
from vigil.models.falls import FEATURE_NAMES, ScreenConfig
from vigil.models.registry import FALL_TIER, ModelRegistry
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.falls.replay import WearerTrial, publish_wearers
from vigil.streams.falls.responder import Responder, ResponderPolicy
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import (
    ALERTS,
    FALL_CANDIDATES,
    FALL_CONFIRM_REQUEST,
    FALL_DEADLETTER,
    FALL_OUTCOMES,
    FALL_SUSPECTED,
    SCHEMA_OF_TOPIC,
    WEARABLE_USER_RESPONSE,
    ensure_topics,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

WINDOW_S = 5.0


class FallRig:
    def __init__(self, settings: Settings, codec: AvroCodec, tmp: Any) -> None:
        self.settings, self.codec, self.tmp = settings, codec, tmp
        self.producer = RecordProducer(settings, codec)
        self.workers: list[Any] = []

    def start_worker(self) -> Any:
        worker = launch_worker(self.settings, self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def publish(self, wearer: str, *signals: np.ndarray, is_fall: bool = True) -> None:
        trials = [WearerTrial(s, is_fall, "crafted", "test") for s in signals]
        publish_wearers(self.producer, {wearer: trials})

    def answer(self, request: dict[str, Any], response: str = "OK") -> None:
        self.producer.send_record(WEARABLE_USER_RESPONSE, request["wearer_id"], {
            "request_id": request["request_id"], "wearer_id": request["wearer_id"], "ts_ms": int(time.time() * 1000), "response": response})
        self.producer.flush()

    def read(self, topic: str, timeout_s: float = 2.0) -> list[dict[str, Any]]:
        return [v for _, v in consume_all(self.settings, topic, 0, timeout_s=timeout_s, stop_early=False,
                                         decode=lambda b: self.codec.decode(b, SCHEMA_OF_TOPIC[topic]))]

    def wait_for(self, topic: str, match: Any, count: int = 1, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [r for r in self.read(topic, 1.0) if match(r)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                logs = "\n".join(w.log() for w in self.workers)
                pytest.fail(f"timed out waiting for {count} record(s) on {topic}; found {found}\n{logs}")
            time.sleep(0.5)


def of(wearer: str) -> Any:
    return lambda r: r.get("wearer_id", r.get("asset_id")) == wearer


@pytest.fixture(scope="module")
def rig(broker, models_dir, crafted_fall_model, tmp_path_factory) -> Iterator[FallRig]:
    tmp = tmp_path_factory.mktemp("falls")
    shutil.copytree(models_dir, tmp / "models")  # the session's pump models: a worker runs both topologies
    ModelRegistry(tmp / "models").save(FALL_TIER, crafted_fall_model, {"screen": ScreenConfig().__dict__, "trained_subjects": []}, activate=True)
    settings = replace(
        Settings.from_env({}), broker_hosts=(broker.bootstrap,), app_id="falls", topic_prefix="falls.", partitions=2,
        retention_ms=600_000, session_timeout_s=10.0, heartbeat_interval_s=1.0, models_dir=tmp / "models",
        fall_confirm_window_s=WINDOW_S, fall_confirm_max_hold_s=30.0,
    )
    ensure_topics(settings)
    rig = FallRig(settings, AvroCodec(), tmp)
    rig.start_worker()
    try:
        yield rig
    finally:
        for worker in rig.workers:
            worker.stop()


def test_an_unanswered_fall_raises_one_emergency_alert_after_the_window(rig):
    rig.publish("w-silent", fall(np.random.default_rng(1)))
    request = rig.wait_for(FALL_CONFIRM_REQUEST, of("w-silent"))[0]
    alert = rig.wait_for(ALERTS, of("w-silent"))[0]
    outcome = rig.wait_for(FALL_OUTCOMES, of("w-silent"))[0]
    assert (alert["kind"], alert["state"], alert["severity"], alert["alert_id"]) == ("fall.emergency", "OPEN", "CRITICAL", request["request_id"])
    assert outcome["outcome"] == "EMERGENCY_NO_RESPONSE"
    waited_s = (outcome["decided_ts_ms"] - request["requested_ts_ms"]) / 1000
    assert WINDOW_S <= waited_s < WINDOW_S + 5.0
    time.sleep(1.0)
    assert len([a for a in rig.read(ALERTS) if of("w-silent")(a)]) == 1


def test_im_ok_within_the_window_dismisses_the_fall_and_raises_no_alert(rig):
    rig.publish("w-ok", fall(np.random.default_rng(2), 6.0))
    request = rig.wait_for(FALL_CONFIRM_REQUEST, of("w-ok"))[0]
    rig.answer(request)
    outcome = rig.wait_for(FALL_OUTCOMES, of("w-ok"))[0]
    assert (outcome["outcome"], outcome["label"]) == ("DISMISSED", "false_alarm")
    assert set(outcome["features"]) == set(FEATURE_NAMES) and outcome["seq"] == request["seq"]  # what stage 2 retrains on
    time.sleep(WINDOW_S + 2.0)  # past the deadline: still nothing
    assert [a for a in rig.read(ALERTS) if of("w-ok")(a)] == []
    assert len([o for o in rig.read(FALL_OUTCOMES) if of("w-ok")(o)]) == 1


def test_daily_activities_raise_nothing(rig):
    rng = np.random.default_rng(3)
    rig.publish("w-adl", walking(rng, 20.0), sit_down_hard(rng, 2.4), lying_down_slowly(rng), walking(rng, 10.0, peak_g=3.0), is_fall=False)
    rig.publish("w-marker", fall(np.random.default_rng(4)))  # published after the ADL: once it is asked about, the ADL were screened
    rig.wait_for(FALL_CONFIRM_REQUEST, of("w-marker"))
    assert [r for r in rig.read(FALL_SUSPECTED) if of("w-adl")(r)] == []
    assert [r for r in rig.read(ALERTS) if of("w-adl")(r)] == []
    # The screen passed the hard sit-down (impact and posture change); stage 2 stopped it.
    assert len([c for c in rig.read(FALL_CANDIDATES) if of("w-adl")(c)]) >= 1


def test_a_worker_restart_during_the_wait_keeps_the_pending_confirmations(rig):
    rig.publish("w-restart-silent", fall(np.random.default_rng(5)))
    rig.publish("w-restart-ok", fall(np.random.default_rng(6), 5.0))
    silent = rig.wait_for(FALL_CONFIRM_REQUEST, of("w-restart-silent"))[0]
    ok = rig.wait_for(FALL_CONFIRM_REQUEST, of("w-restart-ok"))[0]
    assert rig.workers[-1].stop() == 0
    stopped_ms = time.time() * 1000
    assert [a for a in rig.read(ALERTS, 1.0) if a["alert_id"] in (silent["request_id"], ok["request_id"])] == []
    rig.answer(ok)  # answered while no worker runs: the new worker must read it before judging the deadline
    time.sleep(max(0.0, (ok["deadline_ts_ms"] - time.time() * 1000) / 1000) + 1.0)
    rig.start_worker()
    alert = rig.wait_for(ALERTS, lambda a: a["alert_id"] == silent["request_id"])[0]
    outcome = rig.wait_for(FALL_OUTCOMES, of("w-restart-ok"))[0]
    assert alert["state"] == "OPEN" and outcome["outcome"] == "DISMISSED"
    silent_outcome = rig.wait_for(FALL_OUTCOMES, of("w-restart-silent"))[0]
    assert silent_outcome["decided_ts_ms"] > stopped_ms  # raised by the new worker, from the recovered table
    time.sleep(2.0)
    assert [a for a in rig.read(ALERTS) if a["alert_id"] == ok["request_id"]] == []


def test_the_responder_simulator_answers_requests(rig):
    responder = Responder(rig.settings, rig.codec, ResponderPolicy(ok_probability=1.0, delay_s=0.5))
    stop = threading.Event()
    thread = threading.Thread(target=responder.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        time.sleep(3.0)  # the responder reads new requests only: let it join first
        rig.publish("w-responder", fall(np.random.default_rng(7)))
        outcome = rig.wait_for(FALL_OUTCOMES, of("w-responder"))[0]
    finally:
        stop.set()
        thread.join(timeout=10)
    assert outcome["outcome"] == "DISMISSED" and responder.stats["OK"] >= 1
    assert (outcome["response_ts_ms"] - outcome["requested_ts_ms"]) / 1000 >= 0.5


def test_nothing_was_dead_lettered_and_the_worker_counts_its_outcomes(rig):
    assert rig.read(FALL_DEADLETTER) == []
    # The worker started after the restart settled w-restart-ok, w-restart-silent and w-responder.
    counted = rig.workers[-1].metrics()
    assert counted['vigil_fall_outcomes_total{outcome="DISMISSED"}'] == 2
    assert counted['vigil_fall_outcomes_total{outcome="EMERGENCY_NO_RESPONSE"}'] == 1
