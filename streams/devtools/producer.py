"""Publishing raw records with confluent-kafka, Avro-encoded, keyed by asset (pump or wearer) id."""
from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import Any, Iterable

from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import RAW_TOPIC_OF_KIND, SCHEMA_OF_TOPIC

logger = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    pass


# A producer that hits fatal errors again and again is not riding out a restart: stop and say so.
MAX_PRODUCER_RECREATIONS = 5


class RecordProducer:
    """Idempotent producer (acks=all, no reordering on retry): an asset's records stay in seq order.

    Keys are partitioned with murmur2, as Java clients and the workers (aiokafka) do, so a
    wearer's answers land on the partition number of the suspected falls they answer.

    It rides out a broker restart or a leader change: librdkafka retries each record for up to
    ``message.timeout.ms`` (5 minutes). A restarted broker that lost the producer's sequence state
    makes librdkafka raise a fatal idempotence error (e.g. out of order sequence number), after
    which that producer instance can send nothing more; librdkafka's documentation says to
    recreate it. So the records not yet acknowledged are kept, and on a fatal error the producer
    is recreated and they are sent again, in their order (a record the broker had written without
    the acknowledgement arriving is then written twice: at-least-once, and every stage skips a
    repeated (asset, seq)). After ``MAX_PRODUCER_RECREATIONS`` it stops with DeliveryFailed,
    saying how many records were delivered and how many were not.
    """

    def __init__(self, settings: Settings, codec: AvroCodec, **config: Any) -> None:
        self.settings = settings
        self.codec = codec
        self.config = settings.confluent_config(
            **{"enable.idempotence": True, "acks": "all", "linger.ms": 20, "compression.type": "none",
               # retry a record through a broker restart or a leader election, not just a blip
               "message.timeout.ms": 300_000, "retry.backoff.ms": 200,
               # a broker closing idle connections is routine, not worth a log line
               "log.connection.close": False, "partitioner": "murmur2_random", **config}
        )
        self.delivered = 0
        self.failed: list[str] = []
        self.recreated = 0
        self.handed = 0  # records handed to librdkafka
        # Records handed over and not acknowledged yet, by id, in the order they were produced.
        self._unacked: dict[int, tuple[str, bytes | None, bytes]] = {}
        self._fatal: Any = None  # the fatal KafkaError, until the producer is recreated
        self._generation = 0
        self.producer = self._new_producer()

    def _new_producer(self) -> Any:
        from confluent_kafka import Producer

        self._generation += 1
        return Producer({**self.config, "error_cb": self._on_error})

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._fatal = self._fatal or err
        else:  # brokers down, connections refused: librdkafka retries on its own
            logger.debug("producer error", extra={"error": str(err)})

    def _on_delivery(self, generation: int, record_id: int, err: Any, msg: Any) -> None:
        from confluent_kafka import KafkaError

        if err is None:
            if self._unacked.pop(record_id, None) is not None:  # a record resent may be acknowledged twice: count it once
                self.delivered += 1
        elif generation != self._generation:
            pass  # purged with a producer that was replaced: the record was sent again
        elif err.fatal() or err.code() in (KafkaError._FATAL, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.UNKNOWN_PRODUCER_ID,
                                           KafkaError.INVALID_PRODUCER_EPOCH):
            self._fatal = self._fatal or err  # the producer's idempotence state is broken: recreate it, keep the record
        elif self._unacked.pop(record_id, None) is not None:
            self.failed.append(f"{msg.topic()}: {err}")

    def _produce(self, record_id: int, topic: str, key: bytes | None, value: bytes) -> bool:
        """Hand one record to the current producer; False when that producer turned out to be in a fatal state."""
        from confluent_kafka import KafkaError, KafkaException

        while True:
            try:
                self.producer.produce(topic, key=key, value=value,
                                      on_delivery=functools.partial(self._on_delivery, self._generation, record_id))
                return True
            except BufferError:
                self.producer.poll(0.05)  # local queue full (the broker may be restarting): let deliveries drain
                if self._fatal is not None:
                    return False
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or err.code() == KafkaError._FATAL:
                    self._fatal = self._fatal or err
                    return False
                # This record cannot be sent (e.g. larger than message.max.bytes); the others can.
                self._unacked.pop(record_id, None)
                self.failed.append(f"{topic}: {err}")
                return True

    def _recover(self) -> None:
        """Replace a producer in a fatal state and hand the new one every record not acknowledged yet, in order."""
        while self._fatal is not None:
            fatal = self._fatal
            if self.recreated >= MAX_PRODUCER_RECREATIONS:
                raise DeliveryFailed(self._summary(f"the producer failed fatally {self.recreated + 1} times, last: {fatal}"))
            logger.warning("producer hit a fatal error; recreating it and sending the unacknowledged records again",
                           extra={"error": str(fatal), "unacknowledged": len(self._unacked), "delivered": self.delivered})
            with contextlib.suppress(Exception):
                self.producer.purge()  # fail its queued records now rather than when it is destroyed
                self.producer.poll(0)
            self.producer = self._new_producer()  # a new generation: reports from the old one no longer count failures
            self._fatal = None
            self.recreated += 1
            for record_id, (topic, key, value) in list(self._unacked.items()):
                if record_id in self._unacked and not self._produce(record_id, topic, key, value):
                    break  # fatal again: start over with another producer

    def unacknowledged(self) -> list[int]:
        """Ids of the records handed over and not acknowledged yet (a record's id: how many were handed before it)."""
        return list(self._unacked.copy())

    def _summary(self, why: str) -> str:
        return f"{self.delivered} of {self.handed} records delivered, {self.handed - self.delivered} not: {why}"

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Publish bytes as they are (``topic`` without the prefix)."""
        record_id, full_topic = self.handed, self.settings.topic(topic)
        self.handed += 1
        self._unacked[record_id] = (full_topic, key, value)
        if self._fatal is not None or not self._produce(record_id, full_topic, key, value):
            self._recover()  # sends this record too: it is unacknowledged
        self.producer.poll(0)

    def send(self, kind: str, key: str, value: dict[str, Any]) -> None:
        self.send_record(RAW_TOPIC_OF_KIND[kind], key, value)

    def send_record(self, topic: str, key: str, value: dict[str, Any]) -> None:
        """Encode ``value`` with the schema ``topic`` carries and publish it (``topic`` without the prefix)."""
        self.send_raw(topic, key.encode(), self.codec.encode(self.settings.topic(topic), SCHEMA_OF_TOPIC[topic], value))

    def close(self) -> None:
        """Let go of the librdkafka producer now: its error callback refers back to this object, so without this it lives
        until the garbage collector runs and keeps reconnecting ("Connection refused") to a broker already stopped."""
        self.producer = None

    def flush(self, timeout_s: float = 120.0) -> None:
        """Wait until every record is acknowledged (recreating the producer after a fatal error); raises
        DeliveryFailed, with how many were delivered and how many not, if some never are."""
        deadline = time.monotonic() + timeout_s
        while self._unacked or len(self.producer) > 0:
            if self._fatal is not None:
                self._recover()
            self.producer.flush(0.5)
            if time.monotonic() > deadline:
                raise DeliveryFailed(self._summary(f"still unacknowledged after {timeout_s:g} s"))
        if self.failed:
            raise DeliveryFailed(self._summary(f"{len(self.failed)} failed, first: {self.failed[0]}"))


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
