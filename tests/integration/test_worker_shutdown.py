"""SIGTERM stops a busy `vigil worker` in bounded time, and nothing it acknowledged is lost or repeated.

The backlog is the crash-and-fuzz run's: a few thousand simulated records with three chunks of
255,000 float32 samples (1.02 MB, over the 240,000-sample limit) among them. Their dead letters used
to be refused by the producer on every retry, so the vibration stage never finished its batch, Faust's
shutdown waited for that batch, and the worker ignored SIGTERM until it was killed.
"""
from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from collections import Counter
from dataclasses import replace

import pytest

from tests.fixtures.broker import consume_all
from tests.fixtures.models import BASELINE_WINDOWS
from vigil.models.simulate import FleetSimulator, make_fleet
from vigil.streams.devtools.malformed import malformed_vibration
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.topics import PUMP_DEADLETTER, PUMP_FEATURES, PUMP_VIBRATION_RAW, RAW_TOPIC_OF_KIND, SCHEMA_OF_TOPIC, ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

PUMPS, STEPS = 20, 100  # 4,000 raw records: 2,000 vibration chunks and 2,000 process samples
POISON_STEPS = (2, 3, 4)  # pump-000's chunks of these steps are preceded by a 255,000-sample copy
STOP_BOUND_S = 15.0


def publish_backlog(settings, codec) -> list[bytes]:
    """The backlog, in step order; returns the poison records' bytes."""
    # librdkafka refuses messages over 1,000,000 bytes by default; the fuzz run's producer allowed them.
    producer = RecordProducer(settings, codec, **{"message.max.bytes": 2_000_000})
    simulator = FleetSimulator(make_fleet(PUMPS, seed=9, n_faulty=0, horizon_s=STEPS), seed=9)
    raw_topic = settings.topic(PUMP_VIBRATION_RAW)
    poison = []
    for step in range(STEPS):
        for record in simulator.step():
            if record.kind == "vibration" and record.key == "pump-000" and step in POISON_STEPS:
                key, value = malformed_vibration("oversized", record.value, codec, raw_topic, max_samples=254_999)
                producer.send_raw(PUMP_VIBRATION_RAW, key, value)
                poison.append(value)
            producer.send(record.kind, record.key, record.value)
    producer.flush()
    assert producer.delivered == 2 * PUMPS * STEPS + len(POISON_STEPS) and not producer.failed
    return poison


def wait_for_samples(worker, condition, timeout_s: float) -> dict[str, float]:
    """The worker's metrics once ``condition(samples)`` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.process.poll() is None, worker.log()
        try:
            samples = worker.metrics()
        except OSError:
            samples = {}  # web server not up yet
        if condition(samples):
            return samples
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for the worker\n{worker.log()}")


def reached_the_poison(samples: dict[str, float]) -> bool:
    """The vibration stage has had the poison records: dead-lettered them, or (before the fix) retrying their publication."""
    oversized = samples.get('vigil_deadletters_total{reason="oversized",stage="pump.vibration.raw"}', 0.0)
    return oversized >= len(POISON_STEPS) or samples.get('vigil_publish_retries_total{stage="pump.vibration.raw"}', 0.0) > 0


def test_sigterm_stops_a_busy_worker_in_bounded_time_and_the_next_one_completes_the_stream(broker_settings, models_dir, start_worker):
    settings = replace(broker_settings, models_dir=models_dir, baseline_windows=BASELINE_WINDOWS)
    codec = AvroCodec()
    ensure_topics(settings)
    poison = publish_backlog(settings, codec)
    assert RAW_TOPIC_OF_KIND["vibration"] == PUMP_VIBRATION_RAW and all(len(p) > 1_020_000 for p in poison)

    first = start_worker(settings)
    samples = wait_for_samples(first, reached_the_poison, timeout_s=180)
    assert samples['vigil_records_in_total{stage="pump.vibration.raw"}'] < PUMPS * STEPS, "the backlog was done before the stop"
    stopped_at = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    try:
        first.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker ignored SIGTERM for 60 s\n{first.log()}")
    took_s = time.monotonic() - stopped_at
    assert took_s < STOP_BOUND_S, f"worker took {took_s:.1f} s to stop\n{first.log()}"
    assert first.process.returncode == 0, first.log()

    second = start_worker(settings)
    expected = 2 * PUMPS * STEPS
    assert len(consume_all(settings, PUMP_FEATURES, expected, timeout_s=400)) >= expected, second.log()
    assert second.process.poll() is None, second.log()
    decode = lambda name: lambda b: codec.decode(b, SCHEMA_OF_TOPIC[name])  # noqa: E731
    windows = consume_all(settings, PUMP_FEATURES, 0, timeout_s=5, decode=decode(PUMP_FEATURES), stop_early=False)
    per_window = Counter((w["asset_id"], w["stream"], w["seq"]) for _, w in windows)
    pumps = [f"pump-{i:03d}" for i in range(PUMPS)]
    # Exactly one window per (asset, channel, seq): nothing the first worker acknowledged was lost, nothing repeated.
    assert per_window == Counter({(p, s, i): 1 for p in pumps for s in ("vibration/x", "process") for i in range(STEPS)})

    # The poison records: dead-lettered once each, truncated, with the whole original's size and sha256.
    letters = [d for _, d in consume_all(settings, PUMP_DEADLETTER, 0, timeout_s=3, decode=decode(PUMP_DEADLETTER), stop_early=False)]
    assert sorted((d["reason"], d["original_size"], d["original_sha256"], d["original_truncated"]) for d in letters) == sorted(
        ("oversized", len(p), hashlib.sha256(p).hexdigest(), True) for p in poison)
    assert all(d["original"] == p[:len(d["original"])] and 0 < len(d["original"]) < 100_000 for d, p in zip(letters, poison))
    assert second.metrics().get('vigil_publish_retries_total{stage="pump.vibration.raw"}', 0.0) == 0.0
