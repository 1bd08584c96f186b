"""StagePublisher against a producer that behaves like aiokafka's: what is retried, what is replaced, what stops."""
from __future__ import annotations

import asyncio
import hashlib
import time
import io
import struct
from dataclasses import dataclass, field
from typing import Any

import fastavro
import numpy as np
import pytest

from vigil import schemas
from vigil.streams.pumps.vibration import VibrationStage
from vigil.streams.runtime import metrics
from vigil.streams.runtime.agent_loop import PublishAbandoned, StagePublisher, is_permanent
from vigil.streams.runtime.codec import AvroCodec, register_faust_codecs
from vigil.streams.runtime.stage import TRUNCATED_ORIGINAL_BYTES, RawMessage, StageResult

FEATURES, DEADLETTER = "pump.features", "pump.deadletter"
DEAD_LETTER = "vigil.common.DeadLetter"
MAX_REQUEST = 1_000_000  # Faust's producer_max_request_size, which aiokafka checks before sending


@dataclass
class FakeTopic:
    name: str
    value_serializer: str

    def get_topic_name(self) -> str:
        return self.name


@dataclass
class FakeProducer:
    """aiokafka as Faust drives it: too large for max_request_size raises at send (wrapped by Faust);
    too large for the broker, or a transient fault, fails the delivery future."""

    broker_limit: int = 10**9
    transient_failures: int = 0  # the first this many sends fail with a timeout
    hang: bool = False  # deliveries never complete (a broker gone quiet)
    sends: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    delivered: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)

    async def send(self, topic, key, value, partition, timestamp, headers):
        from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
        from faust.exceptions import ProducerSendError

        self.sends.append((topic, key, value))
        if len(value) + len(key or b"") + 82 > MAX_REQUEST:
            try:
                raise MessageSizeTooLargeError(f"The message is {len(value)} bytes")
            except MessageSizeTooLargeError as exc:
                raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        future = asyncio.get_running_loop().create_future()
        if self.hang:
            return future
        if self.transient_failures > 0:
            self.transient_failures -= 1
            future.set_exception(KafkaTimeoutError())
        elif len(value) > self.broker_limit:
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.delivered.append((topic, key, value))
            future.set_result(None)
        return future


class FakeApp:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer
        self.should_stop = False


@pytest.fixture
def publisher_for(codec):
    names = register_faust_codecs(codec, {FEATURES: "vigil.pumps.FeatureWindow", DEADLETTER: DEAD_LETTER})

    def make(producer: FakeProducer, **options: Any) -> tuple[StagePublisher, FakeApp]:
        app = FakeApp(producer)
        return StagePublisher(app, "test.stage", FakeTopic(FEATURES, names[FEATURES]), FakeTopic(DEADLETTER, names[DEADLETTER]),
                              **options), app

    return make


def counter(metric: Any, *labels: str) -> float:
    return metric.labels(*labels)._value.get()


def poison_then_valid(chunk, codec, n_poison=3, n_valid=20):
    """The crash-and-fuzz input: chunks of 255,000 float32 samples (1.02 MB, over the 240,000 limit), then valid ones."""
    messages = []
    for i in range(n_poison):
        record = chunk(i, n=255_000)
        messages.append(RawMessage("pump.vibration.raw", 0, i, b"pump-1", codec.encode("pump.vibration.raw", "vigil.pumps.VibrationChunk", record)))
    for i in range(n_valid):
        record = chunk(i)
        messages.append(RawMessage("pump.vibration.raw", 0, n_poison + i, b"pump-1", codec.encode("pump.vibration.raw", "vigil.pumps.VibrationChunk", record)))
    return messages


async def test_poison_records_are_dead_lettered_truncated_and_the_windows_published_once(publisher_for, chunk, codec):
    messages = poison_then_valid(chunk, codec)
    result = VibrationStage(codec).process(messages, {})
    assert [d["reason"] for d in result.dead_letters] == ["oversized"] * 3 and len(result.outputs) == 20
    producer = FakeProducer()
    publish, _ = publisher_for(producer)
    retries = counter(metrics.PUBLISH_RETRIES, "test.stage")

    await asyncio.wait_for(publish(result), timeout=10)

    windows = [codec.decode(v, "vigil.pumps.FeatureWindow") for t, _, v in producer.delivered if t == FEATURES]
    assert sorted(w["seq"] for w in windows) == list(range(20))  # each exactly once: nothing re-published
    letters = [codec.decode(v, DEAD_LETTER) for t, _, v in producer.delivered if t == DEADLETTER]
    assert [(d["offset"], d["reason"], d["original_truncated"]) for d in letters] == [(0, "oversized", True), (1, "oversized", True), (2, "oversized", True)]
    for letter, message in zip(letters, messages):
        assert letter["original"] == message.value[:TRUNCATED_ORIGINAL_BYTES]
        assert letter["original_size"] == len(message.value) > 1_020_000
        assert letter["original_sha256"] == hashlib.sha256(message.value).hexdigest()
        assert "truncated to 65536 of" in letter["detail"]
    assert counter(metrics.PUBLISH_RETRIES, "test.stage") == retries  # a permanent problem is not retried


async def test_a_dead_letter_the_broker_refuses_as_too_large_is_sent_again_truncated_not_retried(publisher_for, codec):
    original = b"\x00" * 600_000
    letter = VibrationStage(codec).process([RawMessage("pump.vibration.raw", 2, 7, b"pump-9", original)], {}).dead_letters[0]
    producer = FakeProducer(broker_limit=500_000)
    publish, _ = publisher_for(producer, max_dead_letter_bytes=10**7)
    retries, refused = counter(metrics.PUBLISH_RETRIES, "test.stage"), counter(metrics.PUBLISH_REFUSED, "test.stage", "MessageSizeTooLargeError")

    await asyncio.wait_for(publish(StageResult(dead_letters=[letter])), timeout=5)

    assert len(producer.sends) == 2 and len(producer.delivered) == 1
    sent = codec.decode(producer.delivered[0][2], DEAD_LETTER)
    assert (sent["reason"], sent["partition"], sent["offset"], sent["original_truncated"]) == ("unknown_schema_id", 2, 7, True)
    assert (len(sent["original"]), sent["original_size"]) == (TRUNCATED_ORIGINAL_BYTES, 600_000)
    assert counter(metrics.PUBLISH_RETRIES, "test.stage") == retries
    assert counter(metrics.PUBLISH_REFUSED, "test.stage", "MessageSizeTooLargeError") == refused + 1


async def test_an_output_the_broker_refuses_for_good_is_dead_lettered(publisher_for, chunk, codec, as_messages):
    result = VibrationStage(codec).process(as_messages([chunk(0), chunk(1)]), {})
    result.outputs[0]["features"] = {f"f{i}": float(i) for i in range(3000)}  # ~40 KB: over this broker's limit
    producer = FakeProducer(broker_limit=4000)
    publish, _ = publisher_for(producer, max_dead_letter_bytes=3000)
    await asyncio.wait_for(publish(result), timeout=5)
    windows = [codec.decode(v, "vigil.pumps.FeatureWindow") for t, _, v in producer.delivered if t == FEATURES]
    assert [w["seq"] for w in windows] == [1]
    (letter,) = [codec.decode(v, DEAD_LETTER) for t, _, v in producer.delivered if t == DEADLETTER]
    assert (letter["reason"], letter["source_topic"], letter["asset_id"], letter["original_truncated"]) == ("oversized", FEATURES, "pump-1", True)
    assert len(letter["original"]) == 1500 and letter["original_size"] > 40_000
    assert "could not publish this output to pump.features: MessageSizeTooLargeError" in letter["detail"]
    assert len(producer.sends) == 3  # the refused window, the dead letter that replaced it, the other window


async def test_transient_failures_resend_only_what_was_not_delivered(publisher_for, chunk, codec, as_messages):
    result = VibrationStage(codec).process(as_messages([chunk(i) for i in range(5)]), {})
    producer = FakeProducer(transient_failures=2)
    publish, _ = publisher_for(producer)
    retries = counter(metrics.PUBLISH_RETRIES, "test.stage")
    await asyncio.wait_for(publish(result), timeout=5)
    assert len(producer.sends) == 7
    assert sorted(codec.decode(v, "vigil.pumps.FeatureWindow")["seq"] for _, _, v in producer.delivered) == [0, 1, 2, 3, 4]
    assert counter(metrics.PUBLISH_RETRIES, "test.stage") == retries + 1


async def test_a_stopping_worker_abandons_undelivered_records_after_the_grace(publisher_for, chunk, codec, as_messages):
    result = VibrationStage(codec).process(as_messages([chunk(0)]), {})
    publish, app = publisher_for(FakeProducer(hang=True), shutdown_grace_s=0.3)
    task = asyncio.ensure_future(publish(result))
    await asyncio.sleep(0.5)
    assert not task.done()  # not stopping: it waits as long as the broker takes
    app.should_stop = True
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    with pytest.raises(PublishAbandoned):
        await asyncio.wait_for(task, timeout=5)
    assert loop.time() - stopped_at < 1.0


def test_permanent_and_transient_errors_are_told_apart():
    from aiokafka import errors
    from faust.exceptions import ProducerSendError

    wrapped = ProducerSendError("Error while sending")
    wrapped.__cause__ = errors.MessageSizeTooLargeError()
    assert is_permanent(wrapped) and is_permanent(errors.RecordListTooLargeError()) and is_permanent(errors.CorruptRecordException())
    for transient in (errors.KafkaTimeoutError(), errors.NotLeaderForPartitionError(), errors.LeaderNotAvailableError(),
                      errors.KafkaConnectionError(), errors.RequestTimedOutError(), errors.BrokerNotAvailableError()):
        assert not is_permanent(transient)


def test_dead_letters_written_as_v1_still_decode(codec):
    v1 = next(e for e in schemas.manifest() if e.name == DEAD_LETTER and e.version == 1)
    record = {"source_topic": "pump.vibration.raw", "partition": 1, "offset": 5, "key": b"pump-1", "reason": "empty",
              "detail": "chunk has no samples", "original": b"abc", "asset_id": "pump-1", "ts_ms": 1}
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, v1.id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(v1.schema), record)
    decoded = codec.decode(buf.getvalue(), DEAD_LETTER)
    assert decoded == {**record, "original_size": None, "original_sha256": None, "original_truncated": False}
    assert schemas.latest(DEAD_LETTER).version == 2 and struct.unpack(">I", codec.encode("t", DEAD_LETTER, decoded)[1:5])[0] == 16


def test_an_oversized_record_is_rejected_before_it_is_decoded(chunk, codec, monkeypatch):
    # Over the limit in bytes: oversized, whatever else is wrong with it (here: a foreign key and fs 0).
    value = codec.encode("pump.vibration.raw", "vigil.pumps.VibrationChunk", chunk(0, n=255_000, fs_hz=0.0))
    decoded = []
    monkeypatch.setattr(codec, "decode", lambda *a: decoded.append(a) or AvroCodec.decode(codec, *a))
    result = VibrationStage(codec).process([RawMessage("pump.vibration.raw", 0, 0, b"someone-else", value)], {})
    assert [(d["reason"], d["original_size"]) for d in result.dead_letters] == [("oversized", len(value))]
    assert "more than the 964096 a chunk of at most 240000 samples can take" in result.dead_letters[0]["detail"]
    assert decoded == [] and result.outputs == [] and result.state_updates == {}
    assert np.frombuffer(result.dead_letters[0]["original"][-4:], "<f4").size == 1


def test_a_batch_left_unacknowledged_is_neither_committed_nor_waited_for():
    import weakref
    from types import SimpleNamespace

    from faust.types import TP
    from faust.types.tuples import ConsumerMessage

    from vigil.streams.runtime.agent_loop import leave_unacknowledged

    class Consumer:  # the parts of Faust's consumer a message's acknowledgement goes through
        def __init__(self) -> None:
            self._unacked_messages: weakref.WeakSet = weakref.WeakSet()
            self.committable: list[int] = []

        def ack(self, message) -> bool:
            message.acked = True
            self._unacked_messages.discard(message)
            self.committable.append(message.offset)
            return True

    consumer = Consumer()
    messages = [ConsumerMessage("t", 0, offset, 0.0, 0, None, b"k", b"v", None, tp=TP("t", 0)) for offset in range(3)]
    for m in messages:
        m.incref()  # one stream reads the topic (the conductor's reference)
        consumer._unacked_messages.add(m)
    messages[0].ack(consumer)  # processed and acknowledged before the stop
    leave_unacknowledged(SimpleNamespace(consumer=consumer), [SimpleNamespace(message=m) for m in messages[1:]])
    for m in messages[1:]:
        m.ack(consumer)  # what take_events does with every event it handed out, once the loop body is left
    assert consumer.committable == [0] and not any(m.acked for m in messages[1:])
    assert len(consumer._unacked_messages) == 0  # a stop waiting for pending messages does not wait for these


async def test_outputs_the_previous_owner_published_are_not_published_again(publisher_for, chunk, codec):
    # The takeover: the dead worker published windows 0-11 but its state stopped at window 4, so the
    # replacement's replay from that state produces 5-11 again, byte for byte, then 12-19 for the first time.
    from vigil.streams.pumps.vibration import VibrationAssetState
    from vigil.streams.runtime.replay_fence import ReplayFence

    messages = [RawMessage("pump.vibration.raw", 0, i, b"pump-1",
                           codec.encode("pump.vibration.raw", "vigil.pumps.VibrationChunk", chunk(i))) for i in range(20)]
    stage = VibrationStage(codec)
    before_crash = FakeProducer()
    first_publish, _ = publisher_for(before_crash)
    written = stage.process(messages[:5], {})
    await first_publish(written)
    # what reached the changelog, as the replacement decodes it
    changelog = {key: VibrationAssetState.from_bytes(value.to_bytes()) for key, value in written.state_updates.items()}
    await first_publish(stage.process(messages[5:12], written.state_updates))

    fence = ReplayFence()
    fence.add(before_crash.delivered)
    after_takeover = FakeProducer()
    publish, _ = publisher_for(after_takeover, fence=fence)
    suppressed = counter(metrics.REPLAYS_SUPPRESSED, "test.stage")

    await publish(stage.process(messages[5:], changelog))

    seqs = [codec.decode(v, "vigil.pumps.FeatureWindow")["seq"] for _, _, v in before_crash.delivered + after_takeover.delivered]
    assert sorted(seqs) == list(range(20))  # each window once across both workers
    assert counter(metrics.REPLAYS_SUPPRESSED, "test.stage") - suppressed == 7
    assert len(fence) == 5  # windows 0-4 stay unclaimed: the replay never produced them again


async def test_a_poison_record_replayed_after_a_takeover_is_not_dead_lettered_twice(publisher_for, chunk, codec):
    # Regression (clean-clone CI): a worker stopped after publishing a poison record's dead letter but before committing
    # it; its replacement read the record again and published a second dead letter. Dead letters now carry the record's
    # broker timestamp, not the wall clock, so the replay is the same bytes and the fence recognises it.
    from vigil.streams.runtime.replay_fence import ReplayFence

    messages = [RawMessage(m.topic, m.partition, m.offset, m.key, m.value, 1_800_000_000_000 + m.offset)
                for m in poison_then_valid(chunk, codec, n_poison=2, n_valid=3)]
    stage = VibrationStage(codec)
    before_stop = FakeProducer()
    publish, _ = publisher_for(before_stop)
    await publish(stage.process(messages, {}))
    time.sleep(0.01)  # a later wall clock must not matter
    fence = ReplayFence()
    fence.add(before_stop.delivered)
    after_takeover = FakeProducer()
    publish, _ = publisher_for(after_takeover, fence=fence)
    await publish(stage.process(messages, {}))
    assert after_takeover.delivered == []
    letters = [codec.decode(v, DEAD_LETTER) for t, _, v in before_stop.delivered if t == DEADLETTER]
    assert [d["ts_ms"] for d in letters] == [1_800_000_000_000, 1_800_000_000_001]
