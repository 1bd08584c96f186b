"""ReplayFence: which outputs a replacement worker leaves out, and reading them back from a real broker."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from vigil.streams.runtime.replay_fence import PartitionsFenced, ReplayFence, read_published, record_digest, scan_start_ms


def test_a_record_is_its_topic_key_and_value_and_none_differs_from_empty():
    digests = {record_digest(t, k, v) for t, k, v in [("a", b"k", b"v"), ("b", b"k", b"v"), ("a", b"k2", b"v"), ("a", b"k", b"v2"),
                                                      ("a", None, b"v"), ("a", b"", b"v"), ("a", b"kv", b""), ("a", b"k", b"v" * 2)]}
    assert len(digests) == 8
    assert record_digest("a", b"k", b"v") == record_digest("a", b"k", b"v")


def test_each_published_copy_stands_in_for_one_replayed_output():
    fence = ReplayFence()
    fence.add([("t", b"k", b"same"), ("t", b"k", b"same"), ("t", b"k", b"other")])
    assert [fence.claim("t", b"k", b"same") for _ in range(3)] == [True, True, False]
    assert (fence.suppressed, len(fence)) == (2, 1)
    fence.clear()
    assert not fence.claim("t", b"k", b"other") and len(fence) == 0


def test_partitions_are_fenced_once_per_generation_from_their_earliest_record():
    fenced = PartitionsFenced()
    batch = [SimpleNamespace(tp="p0", timestamp=t) for t in (105.0, 100.0)] + [SimpleNamespace(tp="p1", timestamp=90.0)]
    assert fenced.first_timestamps(1, batch) == {"p0": 100.0, "p1": 90.0}
    fenced.partitions.update({"p0", "p1"})
    assert fenced.first_timestamps(1, batch) == {}
    assert fenced.first_timestamps(2, batch[:1]) == {"p0": 105.0}  # a rebalance: read again
    assert scan_start_ms([100.0, 90.0], margin_s=30) == 60_000


@pytest.mark.broker
def test_read_published_returns_what_the_topics_got_since_a_time_and_nothing_older(broker_settings):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    settings = broker_settings
    topics = [settings.topic("fence.a"), settings.topic("fence.b")]
    admin = AdminClient(settings.confluent_config())
    for future in admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1) for t in topics]).values():
        future.result(timeout=30)
    now_ms = int(time.time() * 1000)
    old = [(topics[0], f"old-{i}".encode(), f"o{i}".encode(), now_ms - 600_000) for i in range(6)]
    new = [(topics[i % 2], f"new-{i}".encode(), f"n{i}".encode(), now_ms - 1_000 + i) for i in range(9)]
    new.append((topics[1], None, b"keyless", now_ms))
    producer = Producer(settings.confluent_config(**{"enable.idempotence": True}))
    for topic, key, value, ts in old + new:
        producer.produce(topic, value, key, timestamp=ts)
    assert producer.flush(30) == 0

    got = read_published(settings.reader_config("fence-test"), [*topics, settings.topic("fence.absent")], since_ms=now_ms - 5_000)

    assert sorted(got, key=repr) == sorted([(t, k, v) for t, k, v, _ in new], key=repr)
    assert read_published(settings.reader_config("fence-test"), topics, since_ms=now_ms + 60_000) == []
    assert len(read_published(settings.reader_config("fence-test"), topics, since_ms=0)) == len(old) + len(new)
