"""An alert consumer a downstream team can copy: confluent-kafka and fastavro only, no vigil import.

vigil publishes alert episodes to the ``alerts`` topic in Confluent's wire format
(magic byte 0, 4-byte big-endian schema id, Avro body; schema in
schemas/common/Alert.v1.avsc). Each episode has a deterministic ``alert_id``;
its records go OPEN -> UPDATE (severity rose) ... -> CLOSE, and a replay of the
same input yields the same ids. So a consumer that remembers the last state it
acted on per alert id handles redelivery and replays without double paging.

    python alert_consumer.py --bootstrap localhost:9092 --schema schemas/common/Alert.v1.avsc

Run it with a group id of your own: offsets are committed after each alert is
handled, so a restart resumes where it stopped (at-least-once, deduplicated).
"""
from __future__ import annotations

import argparse
import io
import json
import struct
import time
from typing import Any, Callable, Iterator

import fastavro
from confluent_kafka import Consumer

STATES = ("OPEN", "UPDATE", "CLOSE")
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


def progress(alert: dict[str, Any]) -> tuple[int, int]:
    """How far an episode has got: its records only ever move forward in this order."""
    return STATES.index(alert["state"]), SEVERITIES.index(alert["severity"])


def read_alert(value: bytes, schema: Any) -> dict[str, Any]:
    magic, _schema_id = struct.unpack(">bI", value[:5])
    if magic != 0:
        raise ValueError(f"not Confluent wire format (magic byte {magic})")
    return fastavro.schemaless_reader(io.BytesIO(value[5:]), schema)


def alerts(consumer: Consumer, schema: Any, timeout_s: float) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(message, alert) pairs until nothing arrives for ``timeout_s`` (0: forever)."""
    idle_since = time.monotonic()
    while timeout_s <= 0 or time.monotonic() - idle_since < timeout_s:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            raise RuntimeError(str(msg.error()))
        idle_since = time.monotonic()
        yield msg, read_alert(msg.value(), schema)


def consume(
    bootstrap: str,
    group_id: str,
    schema_path: str,
    *,
    topic: str = "alerts",
    timeout_s: float = 0.0,
    handle: Callable[[dict[str, Any]], None] = lambda alert: print(json.dumps(alert)),
) -> dict[str, tuple[int, int]]:
    """Hand every alert record that moves its episode forward to ``handle``, once; returns how far each
    episode got (``progress``) by alert id."""
    with open(schema_path) as f:
        schema = fastavro.parse_schema(json.load(f))
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # Some Kafka-compatible brokers answer far larger fetches than asked for.
        "receive.message.max.bytes": 1_000_000_000,
    })
    consumer.subscribe([topic])
    handled: dict[str, tuple[int, int]] = {}
    try:
        for msg, alert in alerts(consumer, schema, timeout_s):
            # Anything not past what was already handled is a redelivery or a replay.
            if progress(alert) > handled.get(alert["alert_id"], (-1, -1)):
                handle(alert)
                handled[alert["alert_id"]] = progress(alert)
            consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()
    return handled


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="localhost:9092")
    parser.add_argument("--group-id", default="my-team-alert-consumer")
    parser.add_argument("--topic", default="alerts")
    parser.add_argument("--schema", default="schemas/common/Alert.v1.avsc")
    parser.add_argument("--timeout-s", type=float, default=0.0, help="stop after this long with nothing new (0: run forever)")
    args = parser.parse_args()
    consume(args.bootstrap, args.group_id, args.schema, topic=args.topic, timeout_s=args.timeout_s)
