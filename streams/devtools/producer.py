"""Publishing raw records with confluent-kafka, Avro-encoded, keyed by asset (pump or wearer) id."""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import RAW_TOPIC_OF_KIND, SCHEMA_OF_TOPIC

logger = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    pass


class RecordProducer:
    """Idempotent producer (acks=all, no reordering on retry): an asset's records stay in seq order.

    Keys are partitioned with murmur2, as Java clients and the workers (aiokafka) do, so a
    wearer's answers land on the partition number of the suspected falls they answer.
    """

    def __init__(self, settings: Settings, codec: AvroCodec, **config: Any) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.codec = codec
        self.producer = Producer(
            settings.confluent_config(
                **{"enable.idempotence": True, "acks": "all", "linger.ms": 20, "compression.type": "none",
                   # a broker closing idle connections is routine, not worth a log line
                   "log.connection.close": False, "partitioner": "murmur2_random", **config}
            )
        )
        self.delivered = 0
        self.failed: list[str] = []

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(f"{msg.topic()}: {err}")
        else:
            self.delivered += 1

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Publish bytes as they are (``topic`` without the prefix)."""
        while True:
            try:
                self.producer.produce(self.settings.topic(topic), key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain
        self.producer.poll(0)

    def send(self, kind: str, key: str, value: dict[str, Any]) -> None:
        self.send_record(RAW_TOPIC_OF_KIND[kind], key, value)

    def send_record(self, topic: str, key: str, value: dict[str, Any]) -> None:
        """Encode ``value`` with the schema ``topic`` carries and publish it (``topic`` without the prefix)."""
        self.send_raw(topic, key.encode(), self.codec.encode(self.settings.topic(topic), SCHEMA_OF_TOPIC[topic], value))

    def flush(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.producer.flush(0.5) > 0:
            if time.monotonic() > deadline:
                raise DeliveryFailed(f"{len(self.producer)} records still undelivered after {timeout_s} s")
        if self.failed:
            raise DeliveryFailed(f"{len(self.failed)} records failed, first: {self.failed[0]}")


class Pacer:
    """Sleeps so that ``count`` items take at least ``count / rate_per_s`` seconds (rate 0: no pacing)."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.started = time.monotonic()

    def wait(self, count: float) -> None:
        if self.rate_per_s > 0:
            ahead = count / self.rate_per_s - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


def publish_simulation(
    producer: RecordProducer,
    simulator: Any,
    steps: int | None,
    **options: Any,
) -> dict[str, Any]:
    """Publish ``steps`` steps of a FleetSimulator (None: until ``should_stop``); options as ``publish_steps``."""
    return publish_steps(producer, simulator.steps(steps), **options)


def publish_steps(
    producer: RecordProducer,
    steps: Iterable[list[Any]],
    *,
    rate_per_s: float = 0.0,
    malformed_fraction: float = 0.0,
    duplicate_fraction: float = 0.0,
    seed: int = 0,
    on_step: Any = None,
    on_sent: Any = None,
    should_stop: Any = None,
) -> dict[str, Any]:
    """Publish steps of records (each a list of SimulatedRecord-like ``kind, key, value``); optionally
    inject malformed copies and re-sends. ``on_sent(record)`` is called after each valid record is handed
    to the producer.

    Returns counts: records, vibration, process, malformed (per expected reason), duplicates, per_asset (records sent).
    """
    import numpy as np

    from vigil.streams.devtools.malformed import MALFORMED_VIBRATION, malformed_vibration

    rng = np.random.default_rng([seed, 77])
    reasons = sorted(MALFORMED_VIBRATION)
    stats: dict[str, Any] = {"records": 0, "vibration": 0, "process": 0, "malformed": {}, "duplicates": 0, "per_asset": {}}
    per_asset = stats["per_asset"]
    seen_channel: set[str] = set()
    pacer = Pacer(rate_per_s)
    step = 0
    for records in steps:
        if should_stop is not None and should_stop():
            break
        for record in records:
            topic = RAW_TOPIC_OF_KIND[record.kind]
            if record.kind == "vibration" and malformed_fraction > 0 and rng.random() < malformed_fraction:
                choices = reasons if record.key in seen_channel else [r for r in reasons if r != "timestamp_backwards"]
                reason = str(rng.choice(choices))
                key, value = malformed_vibration(reason, record.value, producer.codec, producer.settings.topic(topic), producer.settings.max_chunk_samples)
                producer.send_raw(topic, key, value)
                stats["malformed"][reason] = stats["malformed"].get(reason, 0) + 1
                stats["records"] += 1
                per_asset[record.key] = per_asset.get(record.key, 0) + 1
            value = producer.codec.encode(producer.settings.topic(topic), SCHEMA_OF_TOPIC[topic], record.value)
            producer.send_raw(topic, record.key.encode(), value)
            if on_sent is not None:
                on_sent(record)
            stats[record.kind] += 1
            stats["records"] += 1
            per_asset[record.key] = per_asset.get(record.key, 0) + 1
            if record.kind == "vibration":
                seen_channel.add(record.key)
                if duplicate_fraction > 0 and rng.random() < duplicate_fraction:
                    producer.send_raw(topic, record.key.encode(), value)
                    stats["duplicates"] += 1
                    stats["records"] += 1
                    per_asset[record.key] += 1
        step += 1
        if on_step is not None:
            on_step(step, stats)
        pacer.wait(stats["records"])
    producer.flush()
    return stats


def publish_pack(
    producer: RecordProducer, chunks: Any, *, speed: float = 0.0, on_record: Any = None, should_stop: Any = None
) -> dict[str, Any]:
    """Replay PackChunks; ``speed`` is the event-time speed-up (1 = real time, 0 = as fast as possible)."""
    stats: dict[str, Any] = {"records": 0, "assets": set()}
    first_ts: int | None = None
    started = time.monotonic()
    for chunk in chunks:
        if should_stop is not None and should_stop():
            break
        if first_ts is None:
            first_ts = chunk.ts_ms
        if speed > 0:
            ahead = (chunk.ts_ms - first_ts) / 1000.0 / speed - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.send("vibration", chunk.asset_id, chunk.as_record())
        stats["records"] += 1
        stats["assets"].add(chunk.asset_id)
        if on_record is not None:
            on_record(stats)
    producer.flush()
    stats["assets"] = sorted(stats["assets"])
    return stats
