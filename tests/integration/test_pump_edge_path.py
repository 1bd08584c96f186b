"""The pump edge path end to end on the real embedded broker, through a `vigil worker` process."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from tests.fixtures.broker import consume_all
from tests.fixtures.models import BASELINE_WINDOWS
from vigil.models.simulate import FleetSimulator, make_fleet
from vigil.streams.devtools.malformed import MALFORMED_VIBRATION, malformed_vibration
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.topics import (
    PUMP_DEADLETTER,
    PUMP_FEATURES,
    PUMP_PROCESS_RAW,
    PUMP_SCORES_EDGE,
    PUMP_VIBRATION_RAW,
    SCHEMA_OF_TOPIC,
    ensure_topics,
)

pytestmark = pytest.mark.broker

PUMPS, VALID_PER_PUMP, MAX_SAMPLES = 3, 90, 20_000


@pytest.fixture
def settings(broker_settings, models_dir):
    return replace(broker_settings, models_dir=models_dir, baseline_windows=BASELINE_WINDOWS, max_chunk_samples=MAX_SAMPLES)


def build_input(settings, codec):
    """270 valid chunks (90 per pump), 20 malformed (2 of each reason), 10 re-sent duplicates, plus process samples."""
    simulator = FleetSimulator(make_fleet(PUMPS, seed=21, n_faulty=0, horizon_s=VALID_PER_PUMP), seed=21)
    reasons = sorted(MALFORMED_VIBRATION) * 2
    vibration, process, malformed, duplicates = [], [], [], []
    topic = settings.topic(PUMP_VIBRATION_RAW)
    for step in range(VALID_PER_PUMP):
        for record in simulator.step():
            if record.kind == "process":
                process.append((record.key.encode(), codec.encode(settings.topic(PUMP_PROCESS_RAW), SCHEMA_OF_TOPIC[PUMP_PROCESS_RAW], record.value)))
                continue
            value = codec.encode(topic, SCHEMA_OF_TOPIC[PUMP_VIBRATION_RAW], record.value)
            if step >= 1 and step % 4 == 1 and reasons:  # a malformed copy goes just before its valid twin
                reason = reasons.pop()
                key, bad = malformed_vibration(reason, record.value, codec, topic, MAX_SAMPLES)
                vibration.append((key, bad))
                malformed.append((reason, bad))
            vibration.append((record.key.encode(), value))
            if step >= 5 and step % 8 == 5 and len(duplicates) < 10:
                vibration.append((record.key.encode(), value))
                duplicates.append(record.value["seq"])
    assert not reasons and len(duplicates) == 10 and len(vibration) == 300
    return vibration, process, malformed


def test_every_chunk_is_accounted_for(settings, start_worker):
    codec = AvroCodec()
    ensure_topics(settings)
    vibration, process, malformed = build_input(settings, codec)
    worker = start_worker(settings)
    producer = RecordProducer(settings, codec)
    for key, value in vibration:
        producer.send_raw(PUMP_VIBRATION_RAW, key, value)
    for key, value in process:
        producer.send_raw(PUMP_PROCESS_RAW, key, value)
    producer.flush()

    valid_windows = PUMPS * VALID_PER_PUMP
    features = consume_all(settings, PUMP_FEATURES, 2 * valid_windows, timeout_s=120,
                           decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[PUMP_FEATURES]))
    scores = consume_all(settings, PUMP_SCORES_EDGE, 2 * valid_windows, timeout_s=60,
                         decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[PUMP_SCORES_EDGE]))
    letters = consume_all(settings, PUMP_DEADLETTER, len(malformed), timeout_s=30,
                          decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[PUMP_DEADLETTER]))
    assert worker.process.poll() is None, worker.log()

    pumps = [f"pump-{i:03d}" for i in range(PUMPS)]
    # Every valid chunk: exactly one 1 s window, keyed by its pump, numbered by its seq.
    vib = [(k, f["asset_id"], f["seq"], f["first_input_seq"], f["last_input_seq"]) for k, f in features if f["stream"] == "vibration/x"]
    assert sorted(vib) == sorted((p.encode(), p, i, i, i) for p in pumps for i in range(VALID_PER_PUMP))
    proc = [(k, f["asset_id"], f["seq"]) for k, f in features if f["stream"] == "process"]
    assert sorted(proc) == sorted((p.encode(), p, i) for p in pumps for i in range(VALID_PER_PUMP))

    # Every window: one edge verdict, commissioning first, then scored.
    by_stream = {}
    for key, s in scores:
        assert key == s["asset_id"].encode()
        by_stream.setdefault((s["asset_id"], s["stream"]), []).append(s)
    assert set(by_stream) == {(p, st) for p in pumps for st in ("vibration/x", "process")}
    for verdicts in by_stream.values():
        assert sorted(v["seq"] for v in verdicts) == list(range(VALID_PER_PUMP))
        assert Counter(v["state"] for v in verdicts) == {"COMMISSIONING": BASELINE_WINDOWS, "SCORED": VALID_PER_PUMP - BASELINE_WINDOWS}
        assert all(0 < v["score"] < 1 for v in verdicts if v["state"] == "SCORED")

    # Every malformed chunk: a dead letter with its reason and its original bytes.
    assert sorted((l["reason"], l["original"]) for _, l in letters) == sorted(malformed)
    assert all(l["source_topic"] == settings.topic(PUMP_VIBRATION_RAW) and l["detail"] for _, l in letters)

    # Duplicates: counted, not re-emitted; and nothing beyond what is expected arrived.
    samples = worker.metrics()
    assert samples['vigil_duplicates_total{stage="pump.vibration.raw"}'] == 10
    assert samples['vigil_records_in_total{stage="pump.vibration.raw"}'] == 300
    assert sum(v for k, v in samples.items() if k.startswith("vigil_deadletters_total{")) == len(malformed)
    flagged = Counter(s["feature_set"] for _, s in scores if s["flagged"])
    for feature_set in ("vibration.v2", "process.v1"):
        assert samples.get(f'vigil_edge_flagged_total{{feature_set="{feature_set}"}}', 0.0) == flagged[feature_set]
    assert len(consume_all(settings, PUMP_FEATURES, 0, timeout_s=3, stop_early=False)) == 2 * valid_windows
    assert len(consume_all(settings, PUMP_SCORES_EDGE, 0, timeout_s=2, stop_early=False)) == 2 * valid_windows
