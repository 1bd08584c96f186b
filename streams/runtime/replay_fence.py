"""Outputs a replacement worker must not publish again: those its dead predecessor published after its last state write.

A stage's state reaches the changelog after its outputs are delivered, so a crash can only make the next owner of
a partition replay records, never lose one. That leaves a window: outputs delivered, state not yet written. A worker
SIGKILLed in it leaves outputs that its replacement, starting from the older state, produces a second time. Measured
on Apache Kafka 4.4 before this fence (``tests/broker/test_worker_crash.py``): 10-198 feature windows written twice
in the takeovers that had duplicates.

Stages are deterministic over their input and state (no wall clock in a pump output), so a replayed output is byte
for byte the record published before the crash. On a new consumer generation, before a stage processes anything from
a partition it was given, it reads what its output topics received since the partition's first replayed record was
written (broker timestamp, less ``margin_s`` for clock skew between producers and workers), and publishes an output
only when no identical record (topic, key, value) is among them. Each one read stands in for one output: an output
repeated legitimately is published as often as it was produced beyond what is already there.

Dead letters are fenced the same way: they carry the refused record's broker timestamp, not the time of refusal.
Not covered: outputs carrying wall-clock time (the fall confirmation's decision times) never match, so these stay
at-least-once; a worker that lost its partitions but is still running (a zombie, e.g. one paused
past its session timeout) can publish after the scan.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

logger = logging.getLogger(__name__)

# How much earlier than a partition's first replayed record an output of it may carry as its timestamp: the
# record's producer and the worker stamp with their own clocks.
DEFAULT_MARGIN_S = 30.0
Published = tuple[str, "bytes | None", "bytes | None"]


def record_digest(topic: str, key: bytes | None, value: bytes | None) -> bytes:
    """A fixed-size identity of a record's topic, key and value (None and empty are told apart)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (topic.encode(), key, value):
        h.update(b"\xff" if part is None else len(part).to_bytes(8, "big") + part)
    return h.digest()


class ReplayFence:
    """The records already on a stage's output topics that a replay would produce again.

    >>> fence = ReplayFence()
    >>> fence.add([("pump.features", b"pump-1", b"w7"), ("pump.features", b"pump-1", b"w8")])
    >>> [fence.claim("pump.features", b"pump-1", v) for v in (b"w7", b"w7", b"w8", b"w9")]
    [True, False, True, False]
    """

    def __init__(self) -> None:
        self._published: Counter[bytes] = Counter()
        self.suppressed = 0

    def __len__(self) -> int:
        return sum(self._published.values())

    def add(self, records: Iterable[Published]) -> None:
        self._published.update(record_digest(*r) for r in records)

    def claim(self, topic: str, key: bytes | None, value: bytes | None) -> bool:
        """True if this record is already published (and counts it as the one replayed); else False: publish it."""
        if not self._published:  # the usual case once the replay is past: no hashing on the publish path
            return False
        digest = record_digest(topic, key, value)
        if self._published[digest] <= 0:
            return False
        self._published[digest] -= 1
        if not self._published[digest]:
            del self._published[digest]
        self.suppressed += 1
        return True

    def clear(self) -> None:
        self._published.clear()


class PartitionsFenced:
    """Which partitions of the current consumer generation have had their outputs read (see ``ReplayFence``)."""

    def __init__(self) -> None:
        self.generation: Any = None
        self.partitions: set[Any] = set()

    def first_timestamps(self, generation: Any, messages: Sequence[Any]) -> dict[Any, float]:
        """The earliest timestamp (s) among ``messages`` of each partition not fenced yet in ``generation``."""
        if generation != self.generation:
            self.generation = generation
            self.partitions.clear()
        first: dict[Any, float] = {}
        for m in messages:
            if m.tp not in self.partitions:
                first[m.tp] = min(first.get(m.tp, m.timestamp), m.timestamp)
        return first


def scan_start_ms(timestamps_s: Iterable[float], margin_s: float = DEFAULT_MARGIN_S) -> int:
    """Where to start reading outputs for partitions whose first records carry these timestamps (seconds).

    A record without a timestamp (0 or negative) means from the beginning.

    >>> scan_start_ms([1_700_000_100.0, 1_700_000_040.5], margin_s=30)
    1700000010500
    >>> scan_start_ms([1_700_000_100.0, 0.0])
    0
    """
    stamps = list(timestamps_s)
    if not stamps or min(stamps) <= 0:
        return 0
    return max(0, int(min(stamps) * 1000 - margin_s * 1000))


def read_published(config: Mapping[str, Any], topics: Sequence[str], since_ms: int,
                   timeout_s: float = 30.0) -> list[Published]:
    """Every record of ``topics`` with a timestamp at or after ``since_ms``, up to the partitions' ends now.

    ``config`` is a confluent-kafka consumer configuration; partitions are assigned, so no group is joined
    and nothing is committed. Raises on a broker error or after ``timeout_s``.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    consumer = Consumer({**config, "enable.partition.eof": False})
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
        wanted = [TopicPartition(t, p, since_ms) for t in topics if t in metadata.topics for p in metadata.topics[t].partitions]
        if not wanted:
            return []
        assignment, ends = [], {}
        for tp in consumer.offsets_for_times(wanted, timeout=timeout_s):
            if tp.error is not None:
                raise KafkaException(tp.error)
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout_s, cached=False)
            start = tp.offset if tp.offset >= 0 else high  # -1: nothing at or after since_ms
            if start < high:
                assignment.append(TopicPartition(tp.topic, tp.partition, start))
                ends[(tp.topic, tp.partition)] = high
        consumer.assign(assignment)
        records: list[Published] = []
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"outputs not read to their end in {timeout_s:g} s: {sorted(ends)}")
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(message.error())
            where = (message.topic(), message.partition())
            if where not in ends:
                continue
            records.append((message.topic(), message.key(), message.value()))
            if message.offset() >= ends[where] - 1:
                del ends[where]
        return records
    finally:
        consumer.close()
