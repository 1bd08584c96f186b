"""The raw-record producer (`vigil produce`) keeps going through a broker restart: every record arrives.

Written against the broker fixture's interface only (``bootstrap``, ``restart()``), whichever broker it runs.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.fixtures.broker import consume_all
from vigil.models.simulate import FleetSimulator, make_fleet
from vigil.streams.devtools.producer import RecordProducer, publish_simulation
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.topics import PUMP_PROCESS_RAW, PUMP_VIBRATION_RAW, RAW_TOPIC_OF_KIND, SCHEMA_OF_TOPIC, ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(400)]

# 16,000 records (1 s chunks, 20 KB each) as fast as the producer goes: a restart finds many of them in flight.
PUMPS, STEPS = 8, 1000


def test_a_producer_rides_out_a_broker_restart(broker, broker_settings):
    ensure_topics(broker_settings)
    codec = AvroCodec()
    producer = RecordProducer(broker_settings, codec)
    simulator = FleetSimulator(make_fleet(PUMPS, seed=4, horizon_s=STEPS), seed=4)
    sent: list[tuple[str, bytes, int]] = []  # (topic, key, seq) of each record, in the order handed to the producer
    outcome: dict[str, Any] = {}

    def publish() -> None:
        try:
            outcome["stats"] = publish_simulation(producer, simulator, STEPS, on_sent=lambda r: sent.append(
                (RAW_TOPIC_OF_KIND[r.kind], r.key.encode(), r.value["seq"])))
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever ended the producer
            outcome["error"] = exc

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while producer.delivered < 4000:  # well under way: records acknowledged, in flight, and most still to come
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.05)
    broker.restart()
    handed, pending = producer.handed, set(producer.unacknowledged())  # as the broker is back
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in outcome, repr(outcome.get("error"))
    assert outcome["stats"]["records"] == producer.delivered == len(sent) == 2 * PUMPS * STEPS and not producer.failed

    on_broker: set[tuple[str, bytes, int]] = set()
    for topic in (PUMP_VIBRATION_RAW, PUMP_PROCESS_RAW):
        records = consume_all(broker_settings, topic, PUMPS * STEPS, timeout_s=60,
                              decode=lambda b, t=topic: codec.decode(b, SCHEMA_OF_TOPIC[t]))
        on_broker |= {(topic, key, r["seq"]) for key, r in records}
    # Every record the producer had not had acknowledged by the time the broker was back is on the broker.
    # Records acknowledged before are the broker's to keep: Apache Kafka keeps them; the embedded noida-db
    # loses its last seconds of writes when it is killed (it ignores SIGTERM while busy, and restart()
    # kills it after a grace period), acknowledged or not.
    acknowledged_before = {sent[i] for i in range(handed) if i not in pending}
    missing = set(sent) - on_broker
    assert missing <= acknowledged_before, (len(missing), len(missing - acknowledged_before), len(pending), handed)
