"""Broker conformance: what vigil relies on from a Kafka broker, run against the session broker.

A broker upgrade or swap is judged by this module. It runs on Apache Kafka
(KRaft) wherever Java 17+ and Maven are found; on the noida-db fallback a
measured failure of that broker is a strict xfail with the measured reason.
"""
from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import replace

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from tests.fixtures.broker import consume_all
from tests.fixtures.models import BASELINE_WINDOWS
from vigil.models.simulate import FleetSimulator, make_fleet
from vigil.streams.devtools.broker import start_dev_broker
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.topics import (
    ALL_TOPICS,
    PUMP_FEATURES,
    PUMP_TOPICS,
    PUMP_VIBRATION_RAW,
    SCHEMA_OF_TOPIC,
    ensure_topics,
    topic_configs,
)

pytestmark = pytest.mark.broker

QUIET = {"log_level": 0, "log.connection.close": False}


def new_topic(bootstrap: str, partitions: int = 4, **config: str) -> str:
    name = f"conf-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(timeout=30)
    return name


def consumer(bootstrap: str, group: str, **extra) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 100, "session.timeout.ms": 10000,
                     "heartbeat.interval.ms": 1000, **QUIET, **extra})


def wait_for_assignment(members, expected_total, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for m in members:
            m.poll(0.1)
        if sum(len(m.assignment()) for m in members) == expected_total and all(m.assignment() for m in members):
            return [sorted(tp.partition for tp in m.assignment()) for m in members]
    return [sorted(tp.partition for tp in m.assignment()) for m in members]


def test_topic_creation_with_configs(broker_settings):
    created = ensure_topics(broker_settings)
    assert sorted(created) == sorted(broker_settings.topic(s.name) for s in ALL_TOPICS)
    assert ensure_topics(broker_settings) == []  # idempotent
    admin = AdminClient(broker_settings.confluent_config(**QUIET))
    name = broker_settings.topic(PUMP_VIBRATION_RAW)
    assert len(admin.list_topics(timeout=10).topics[name].partitions) == broker_settings.partitions
    configs = admin.describe_configs([ConfigResource("topic", name)])
    found = {k: v.value for k, v in next(iter(configs.values())).result().items()}
    assert found["retention.ms"] == topic_configs(PUMP_TOPICS[0], broker_settings)["retention.ms"]
    assert found["cleanup.policy"] == "delete"


def test_high_watermark_after_a_batched_produce(broker):
    topic = new_topic(broker.bootstrap)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50, **QUIET})
    delivered = Counter()
    for i in range(1000):
        producer.produce(topic, key=f"k{i % 37}", value=b"x" * 200, on_delivery=lambda err, msg: delivered.update([msg.partition()]) if err is None else None)
    assert producer.flush(30) == 0
    reader = consumer(broker.bootstrap, "hw")
    highs = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(4)}
    reader.close()
    assert {p: hi - lo for p, (lo, hi) in highs.items()} == {p: delivered[p] for p in range(4)}
    assert sum(delivered.values()) == 1000


def test_idempotent_producer_keeps_order(broker_settings):
    ensure_topics(broker_settings)
    producer = RecordProducer(broker_settings, AvroCodec())
    for seq in range(200):
        producer.send_raw(PUMP_VIBRATION_RAW, b"pump-a", seq.to_bytes(4, "big"))
    producer.flush()
    got = consume_all(broker_settings, PUMP_VIBRATION_RAW, 200, timeout_s=30)
    assert [int.from_bytes(v, "big") for _, v in got] == list(range(200))


def test_group_split_and_rebalance_on_graceful_leave(broker):
    topic = new_topic(broker.bootstrap)
    group = f"g-{uuid.uuid4().hex[:6]}"
    a, b = consumer(broker.bootstrap, group), consumer(broker.bootstrap, group)
    a.subscribe([topic])
    b.subscribe([topic])
    split = wait_for_assignment([a, b], 4)
    assert sorted(split[0] + split[1]) == [0, 1, 2, 3] and all(len(s) == 2 for s in split)
    b.close()
    assert wait_for_assignment([a], 4) == [[0, 1, 2, 3]]
    a.close()


def test_offset_commit_and_resume(broker):
    topic = new_topic(broker.bootstrap, partitions=1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, **QUIET})
    for i in range(100):
        producer.produce(topic, value=str(i).encode())
    producer.flush(30)
    group = f"g-{uuid.uuid4().hex[:6]}"
    first = consumer(broker.bootstrap, group)
    first.subscribe([topic])
    seen = []
    while len(seen) < 40:
        seen += [int(m.value()) for m in first.consume(40 - len(seen), timeout=1) if not m.error()]
    first.commit(asynchronous=False)
    first.close()
    second = consumer(broker.bootstrap, group)
    second.subscribe([topic])
    rest = []
    deadline = time.monotonic() + 30
    while len(rest) < 60 and time.monotonic() < deadline:
        rest += [int(m.value()) for m in second.consume(100, timeout=0.5) if not m.error()]
    second.close()
    assert seen == list(range(40)) and rest == list(range(40, 100))


def test_retention_deletes_old_records(broker):
    """vigil bounds raw and derived topics with retention.ms; the broker must apply it."""
    topic = new_topic(broker.bootstrap, partitions=1, **{"retention.ms": "2000"})
    producer = Producer({"bootstrap.servers": broker.bootstrap, **QUIET})
    for i in range(50):
        producer.produce(topic, value=b"old")
    producer.flush(30)
    reader = consumer(broker.bootstrap, "retention")
    tp = TopicPartition(topic, 0)
    assert reader.get_watermark_offsets(tp, timeout=10) == (0, 50)
    deadline = time.monotonic() + 30  # measured here: gone about 3 s after produce
    while time.monotonic() < deadline and reader.get_watermark_offsets(tp, timeout=10)[0] < 50:
        time.sleep(0.5)
    assert reader.get_watermark_offsets(tp, timeout=10) == (50, 50)
    reader.close()

# --- Stateful agents: vigil's own worker is the Faust application under test ---------------------------

PUMPS = 2


def chunks(settings, codec, steps, start=0):
    """Half-second chunks of two healthy pumps (two chunks per 1 s window); steps [start, steps)."""
    simulator = FleetSimulator(make_fleet(PUMPS, seed=3, n_faulty=0, horizon_s=steps), seed=3, chunk_s=0.5)
    out = []
    for step in range(steps):
        for record in simulator.step():
            if record.kind == "vibration" and step >= start:
                out.append((record.key.encode(), codec.encode(settings.topic(PUMP_VIBRATION_RAW), SCHEMA_OF_TOPIC[PUMP_VIBRATION_RAW], record.value)))
    return out


def publish(settings, codec, records):
    producer = RecordProducer(settings, codec)
    for key, value in records:
        producer.send_raw(PUMP_VIBRATION_RAW, key, value)
    producer.flush()


def window_ids(settings, codec, expected, timeout_s=60.0):
    got = consume_all(settings, PUMP_FEATURES, expected, timeout_s=timeout_s, decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[PUMP_FEATURES]))
    return [(f["asset_id"], f["seq"], f["first_input_seq"], f["last_input_seq"]) for _, f in got]


def expected_windows(n_windows):
    # chunk seqs 2w and 2w+1 make window w
    return sorted((f"pump-{p:03d}", w, 2 * w, 2 * w + 1) for p in range(PUMPS) for w in range(n_windows))


@pytest.fixture
def stateful_settings(broker_settings, models_dir):
    return replace(broker_settings, models_dir=models_dir, baseline_windows=BASELINE_WINDOWS)


def test_table_state_recovers_across_a_graceful_restart(stateful_settings, start_worker):
    """Pending samples and the de-duplication state survive a worker restart (changelog recovery)."""
    settings, codec = stateful_settings, AvroCodec()
    ensure_topics(settings)
    first_half = chunks(settings, codec, 41)  # 20.5 windows per pump: half a window is pending at the restart
    publish(settings, codec, first_half)
    worker = start_worker(settings)
    assert sorted(window_ids(settings, codec, 40)) == expected_windows(20)
    assert worker.stop() == 0
    second = start_worker(settings)
    resent = first_half[-10:]  # a producer retrying its last records after the restart
    publish(settings, codec, resent + chunks(settings, codec, 80, start=41))
    windows = window_ids(settings, codec, 80)
    assert sorted(windows) == expected_windows(40)  # no gap at the restart, no window twice
    # The resent records were recognised by their (asset, seq). Faust may also re-deliver a few records it
    # fetched before its start-up seek to the committed offsets; those are skipped the same way.
    assert second.metrics()['vigil_duplicates_total{stage="pump.vibration.raw"}'] >= 10


@pytest.fixture
def private_broker(tmp_path, broker_name):
    """Tests that kill group members get a broker of their own (of the session broker's kind)."""
    running, _ = start_dev_broker(kind="noida" if broker_name == "noida-db" else "kafka", data_dir=tmp_path / "private-broker")
    try:
        yield running
    finally:
        running.close()


def sigkill_scenario(private_broker, stateful_settings, start_worker):
    settings = replace(stateful_settings, broker_hosts=(private_broker.bootstrap,))
    codec = AvroCodec()
    ensure_topics(settings)
    publish(settings, codec, chunks(settings, codec, 40))
    victim = start_worker(settings)
    assert len(window_ids(settings, codec, 40)) >= 40
    victim.kill()
    publish(settings, codec, chunks(settings, codec, 80, start=40))
    return settings, codec


def test_a_sigkilled_worker_is_expired_and_a_new_one_takes_over(private_broker, stateful_settings, start_worker, xfail_on_noida):
    xfail_on_noida("noida-db 0.2.3 never expires a group member killed with SIGKILL (measured: still a member 30 minutes "
                   "later), so the group assigns partitions to nobody until the broker restarts. Apache Kafka expires it.")
    settings, codec = sigkill_scenario(private_broker, stateful_settings, start_worker)
    try:
        worker = start_worker(settings)
        # the session timeout (10 s here) expires the dead member, then a rebalance; a loaded 2-core machine needs more
        windows = window_ids(settings, codec, 80, timeout_s=90)
        counts = {k: v for k, v in worker.metrics().items() if k.startswith(("vigil_records_", "vigil_offset_", "vigil_stale_", "vigil_dupl"))}
        missing = sorted(set(expected_windows(40)) - set(windows))
        assert not missing and len(windows) == 80, f"missing windows {missing}, {len(windows)} read; the worker's counts: {counts}"
        assert worker.metrics()['vigil_seq_gaps_total{stage="pump.vibration.raw"}'] == 0
    finally:
        private_broker.restart()  # noida-db: the dead member would block the group for good; Kafka: harmless


def test_after_sigkill_and_a_broker_restart_nothing_acknowledged_is_lost(private_broker, stateful_settings, start_worker):
    settings, codec = sigkill_scenario(private_broker, stateful_settings, start_worker)
    # The broker keeps its data across the restart (on noida-db the restart is also what frees the dead member).
    private_broker.restart()
    worker = start_worker(settings)
    windows = set(window_ids(settings, codec, 80, timeout_s=90))
    # at least once: every window, maybe some twice. Before streams/delivery.py, about 1 run in 5 lost a
    # record here (Faust resumed the partition before seeking); vigil_offset_reseeks_total counts the catches.
    assert windows == set(expected_windows(40))
    assert worker.metrics()['vigil_seq_gaps_total{stage="pump.vibration.raw"}'] == 0


async def empty_fetches_per_second(bootstrap: str, topic: str, *, max_wait_ms: int = 500, seconds: float = 2.0) -> float:
    """Fetch requests an idle aiokafka consumer (as Faust runs it) sends per second on an empty topic."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"idle-{uuid.uuid4().hex[:6]}",
                                fetch_max_wait_ms=max_wait_ms, auto_offset_reset="earliest")
    await consumer.start()
    try:
        fetcher = consumer._fetcher
        sent = 0
        inner = fetcher._proc_fetch_request

        async def counted(*args):
            nonlocal sent
            sent += 1
            return await inner(*args)

        fetcher._proc_fetch_request = counted
        await asyncio.sleep(1.0)  # join the group, get the assignment
        sent = 0
        await asyncio.sleep(seconds)
        return sent / seconds
    finally:
        await consumer.stop()


def test_an_empty_fetch_is_held_for_the_max_wait(broker, xfail_on_noida):
    """What lets an idle worker cost nothing: measured on Apache Kafka 4.4, about 2 fetches/s at a 500 ms max wait,
    so workers need no pacing of their own (they had one for noida-db, removed with the move to Kafka)."""
    import asyncio

    xfail_on_noida("noida-db 0.2.3 answers an empty fetch at once instead of holding it for fetch.max.wait.ms (measured: "
                   "about 6,100 fetches/s and 86 % of a core for one idle aiokafka consumer, whatever the max wait).")
    topic = new_topic(broker.bootstrap)
    assert asyncio.run(empty_fetches_per_second(broker.bootstrap, topic)) <= 4 * 1000 / 500
