"""The one loop every stage agent runs: take a batch, run the stage, publish, then persist state."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from vigil.streams.runtime import metrics
from vigil.streams.runtime.delivery import OffsetContinuity
from vigil.streams.runtime.replay_fence import DEFAULT_MARGIN_S, PartitionsFenced, ReplayFence, read_published, scan_start_ms
from vigil.streams.runtime.stage import (
    TRUNCATED_ORIGINAL_BYTES,
    RawMessage,
    StageResult,
    dead_letter,
    process_isolating_errors,
    truncated_dead_letter,
)
from vigil.streams.runtime.tables import TableState
from vigil.streams.runtime.topics import changelog_configs
from vigil.streams.runtime.validation import Rejection

logger = logging.getLogger(__name__)


class Stage(Protocol):
    def process(self, messages: Sequence[RawMessage], state: Any) -> StageResult: ...


class TopologyWiring:
    """The Faust topics and tables of a topology, named as vigil names them (prefix, partitions, codecs)."""

    def __init__(self, app: Any, settings: Any, codec: Any) -> None:
        from vigil.streams.runtime.codec import register_faust_codecs
        from vigil.streams.runtime.topics import SCHEMA_OF_TOPIC

        self.app, self.settings = app, settings
        self.serializers = register_faust_codecs(codec, {settings.topic(t): s for t, s in SCHEMA_OF_TOPIC.items()})

    def consumed(self, *names: str) -> Any:
        # Bytes in: the stage decodes, so an undecodable record becomes a dead letter, not a worker crash.
        return self.app.topic(*(self.settings.topic(n) for n in names), key_serializer="raw", value_serializer="raw",
                              partitions=self.settings.partitions)

    def produced(self, name: str) -> Any:
        topic = self.settings.topic(name)
        return self.app.topic(topic, key_serializer="raw", value_serializer=self.serializers[topic], partitions=self.settings.partitions)

    def table(self, name: str) -> Any:
        return self.app.Table(name, default=None, key_type=str, value_type=bytes, partitions=self.settings.partitions,
                              extra_topic_configs=changelog_configs(self.settings))


def register_stage_agent(
    app: Any,
    *,
    name: str,
    stage: Stage,
    source: Any,
    sink: Any,
    dead_letters: Any,
    table: Any,
    decode_state: Callable[[bytes], Any],
    batch_size: int,
    batch_within_s: float,
    offload: bool = False,
    sinks: Mapping[str, Any] | None = None,
    lock: asyncio.Lock | None = None,
    on_written: Callable[[Sequence[RawMessage], StageResult], None] | None = None,
) -> Any:
    """Register a Faust agent that runs ``stage`` over batches from ``source``.

    Order matters for at-least-once: outputs and dead letters are awaited
    until the broker has them, and only then is the new state written to the
    changelog; offsets are committed after that (Faust flushes the producer
    before every commit). A crash can therefore only replay records, and the
    replayed ones are recognised by their (asset, seq) and skipped.

    ``offload`` runs the stage in a thread (for stages whose compute, like a torch
    forward pass, would otherwise hold the event loop through a whole batch).

    ``sinks`` maps the logical topic names a stage emits to (``StageResult.emit(topic=...)``)
    to their Faust topics, for stages with several outputs. ``lock`` is held from taking a
    batch's state to writing it back, for stages whose state something else (a timer) also
    changes. ``on_written(messages, result)`` is called under that lock once a batch's
    outputs are delivered and its state written.

    On a new consumer generation, before the first batch of each partition it was given, the
    stage reads its output topics' recent records into a ``ReplayFence``, so outputs that the
    partition's previous owner published after its last state write are not published twice.
    """
    state = TableState(table, decode_state)
    continuity = OffsetContinuity()
    fence = ReplayFence()
    publish = StagePublisher(app, name, sink, dead_letters, sinks, fence=fence)
    fenced = PartitionsFenced()

    def log_processing_error(message: RawMessage, exc: Exception) -> None:
        logger.error("stage raised on a record; dead-lettered", exc_info=exc,
                     extra={"stage": name, "partition": message.partition, "offset": message.offset})

    async def run_batch(events: Sequence[Any]) -> None:
        started = time.perf_counter()
        generation = app.consumer_generation_id
        committed = getattr(app.consumer, "_committed_offset", {})  # Faust internal: TP -> committed offset
        messages, reseek, held, stale, jumps_before = [], set(), [], 0, continuity.accepted_jumps
        for e in events:
            m = e.message
            # Events buffered before a rebalance belong to an old generation: Faust seeks back to
            # the committed offsets and delivers them again (faust-streaming issue 221).
            if m.generation_id != generation:
                stale += 1
                continue
            decision = continuity.admit(generation, m.tp, m.offset, committed.get(m.tp))
            if decision == "process":
                messages.append(RawMessage(m.topic, m.partition, m.offset, m.key, m.value,
                                           int(m.timestamp * 1000) if m.timestamp else None))
            elif decision != "skip":
                held.append(e)  # beyond a hole: delivered again after the seek, never committed before that
                if decision == "reseek":
                    reseek.add(m.tp)
        leave_unacknowledged(app, held)
        while continuity.gaps:
            tp, first, last = continuity.gaps.pop()
            logger.error("offsets never delivered after re-seeking for the resync timeout; accepted as a gap",
                         extra={"stage": name, "partition": str(tp), "first": first, "last": last})
            if hasattr(app.consumer, "add_accepted_gap"):
                await app.consumer.add_accepted_gap(tp, first, last)
        if reseek:
            targets = {tp: continuity.next_offset(tp) for tp in reseek}
            for tp, offset in targets.items():
                logger.warning("records skipped by the consumer; seeking back", extra={"stage": name, "partition": str(tp), "offset": offset})
            await seek_on_consumer_thread(app, targets, name)
        try:
            await fence_new_partitions(generation, [e.message for e in events if e.message.generation_id == generation])
        except PublishAbandoned:
            leave_unacknowledged(app, events)
            return
        metrics.STALE_EVENTS.labels(name).inc(stale)
        metrics.RESEEKS.labels(name).inc(len(reseek))
        metrics.OFFSET_JUMPS.labels(name).inc(continuity.accepted_jumps - jumps_before)
        if not messages:
            return
        async with lock or contextlib.nullcontext():
            if offload:
                result = await asyncio.get_running_loop().run_in_executor(
                    None, process_isolating_errors, stage.process, messages, state, log_processing_error)
            else:
                result = process_isolating_errors(stage.process, messages, state, on_error=log_processing_error)
            try:
                await publish(result)
            except PublishAbandoned:
                # Stopping with outputs undelivered: no state written, no offset committed; the next
                # owner of these partitions processes the batch again (replays are recognised by seq).
                leave_unacknowledged(app, events)
                logger.warning("worker stopping; batch left unacknowledged for the next worker",
                               extra={"stage": name, "records": len(messages)})
                return
            state.write(result.state_updates, result.state_partitions)
            if on_written is not None:
                on_written(messages, result)
        metrics.RECORDS_IN.labels(name).inc(len(messages))
        observe_outputs(name, result)
        metrics.BATCH_SECONDS.labels(name).observe(time.perf_counter() - started)
        if result.seq_gaps:
            logger.warning("sequence gaps", extra={"stage": name, "missing_records": result.seq_gaps})
        if result.dead_letters or result.duplicates:
            logger.info(
                "batch",
                extra={"stage": name, "records": len(messages), "outputs": len(result.outputs),
                       "dead_letters": len(result.dead_letters), "duplicates": result.duplicates},
            )

    async def fence_new_partitions(generation: Any, messages: Sequence[Any]) -> None:
        if generation != fenced.generation:
            fence.clear()  # what is still unclaimed is read again for the new assignment
        first_seen = fenced.first_timestamps(generation, messages)
        if not first_seen:
            return
        settings = getattr(app, "vigil_settings", None)
        if settings is None:  # an app not built by create_app (unit tests): nothing to read outputs with
            return
        since_ms = scan_start_ms(first_seen.values(), DEFAULT_MARGIN_S)
        topics = publish.output_topics()
        config = settings.reader_config(f"{settings.group_id}.replay-fence")
        started, delay_s = time.perf_counter(), 0.5
        while True:
            try:
                records = await asyncio.get_running_loop().run_in_executor(None, read_published, config, topics, since_ms)
                break
            except Exception as exc:  # the broker unreachable or slow: publishing would stall on it as well
                if app.should_stop:
                    raise PublishAbandoned(f"stage {name}: worker stopping before its outputs could be read") from exc
                logger.error("could not read the outputs published before the takeover; retrying",
                             extra={"stage": name, "topics": list(topics), "error": repr(exc), "retry_in_s": delay_s})
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
        if fenced.generation != generation:
            return  # rebalanced again while reading: the next batch reads for the new assignment
        fence.add(records)
        fenced.partitions.update(first_seen)
        logger.info("recent outputs read for newly assigned partitions (replay fence)", extra={
            "stage": name, "partitions": sorted(str(tp) for tp in first_seen), "since_ms": since_ms,
            "records": len(records), "seconds": round(time.perf_counter() - started, 3)})

    async def reseek_open_holes() -> None:
        stalled_before = continuity.stalled_reseeks
        targets = dict(continuity.due_reseeks(app.consumer_generation_id, consumer_highwaters(app, continuity.partitions())))
        for tp, offset in targets.items():
            logger.warning("records beyond a hole still arriving or none at all; seeking back again"
                           if continuity.stalled_reseeks == stalled_before else
                           "stage idle with records past the next offset it expects; seeking there again",
                           extra={"stage": name, "partition": str(tp), "offset": offset})
        if targets:
            metrics.RESEEKS.labels(name).inc(len(targets))
            await seek_on_consumer_thread(app, targets, name)

    app.timer(continuity.reseek_interval_s, traced=False, name=f"{name}.reseek_open_holes")(reseek_open_holes)

    async def run_stage(stream: Any) -> None:
        async for events in stream.take_events(batch_size, within=batch_within_s):
            if app.should_stop:
                # A stopping worker starts no new batch: it would only prolong the stop, and the next owner
                # of these partitions reads them again.
                leave_unacknowledged(app, events)
                continue
            continuity.batch_started()
            try:
                await run_batch(events)
            except asyncio.CancelledError:
                # Faust cancels agents when the worker stops. take_events acknowledges a batch when its loop
                # body is left, by cancellation too, so a batch stopped midway would have its offsets committed
                # with its outputs unpublished and its state unwritten: leave it unacknowledged instead.
                leave_unacknowledged(app, events)
                raise
            finally:
                continuity.batch_finished()

    run_stage.__name__ = name.replace(".", "_")
    return app.agent(source, name=name)(run_stage)


def consumer_highwaters(app: Any, partitions: Sequence[Any]) -> dict[Any, int | None]:
    """The consumer's last known end offset of each partition; None where it has none (not assigned any more)."""
    out: dict[Any, int | None] = {}
    for tp in partitions:
        try:
            out[tp] = app.consumer.highwater(tp)
        except Exception:  # aiokafka asserts the partition is assigned; a revoked one has no end to compare
            out[tp] = None
    return out


async def seek_on_consumer_thread(app: Any, offsets: Mapping[Any, int], stage: str) -> None:
    """Seek partitions from the thread that runs the Kafka consumer.

    Faust's ``Consumer.seek`` calls aiokafka from the agent's thread while the consumer thread may be in the
    middle of handing out fetched records: measured, aiokafka's fetcher raised KeyError on the partition just
    sought, Faust's fetcher crashed and the worker stopped. ``seek_wait`` runs the seek on the consumer thread.
    A partition revoked meanwhile makes it fail; the new generation starts from the committed offsets anyway.
    """
    try:
        await app.consumer.seek_wait(dict(offsets))
    except Exception as exc:
        logger.warning("seek failed", extra={"stage": stage, "partitions": sorted(map(str, offsets)), "error": repr(exc)})


def leave_unacknowledged(app: Any, events: Sequence[Any]) -> None:
    """Keep a stopping worker from committing these events' offsets, and from waiting for them.

    ``take_events`` acknowledges every event it handed out once the loop body is left, however it was
    left; one more reference per message makes that acknowledgement leave it pending, so its offset is
    never committed (Faust commits acknowledged offsets only up to the first pending one). Faust's
    shutdown can wait for every pending message it handed out (``Consumer.wait_empty``, with
    ``stream_wait_empty``); these are taken off that list, since nothing will process them here any more.
    """
    pending = getattr(app.consumer, "_unacked_messages", None)  # Faust internal: what wait_empty waits for
    for event in events:
        event.message.incref()
        if pending is not None:
            pending.discard(event.message)


def observe_outputs(name: str, result: StageResult) -> None:
    """Metrics of a published result: outputs, duplicates, gaps, dead letters, edge flags, cloud confirmations, event latency."""
    now_ms = time.time() * 1000.0
    metrics.RECORDS_OUT.labels(name).inc(len(result.outputs))
    metrics.DUPLICATES.labels(name).inc(result.duplicates)
    metrics.SEQ_GAPS.labels(name).inc(result.seq_gaps)
    for letter in result.dead_letters:
        metrics.DEAD_LETTERS.labels(name, letter["reason"]).inc()
    for feature_set, count in result.flagged.items():
        metrics.EDGE_FLAGGED.labels(feature_set).inc(count)
    for feature_set, count in result.confirmed.items():
        metrics.CLOUD_CONFIRMED.labels(feature_set).inc(count)
    for tier, seconds in result.inference_s.items():
        metrics.INFERENCE_SECONDS.labels(tier).observe(seconds)
    latency = metrics.EVENT_LATENCY.labels(name)
    for end_ms in result.event_end_ms:
        latency.observe(max(0.0, (now_ms - end_ms) / 1000.0))


def record_key(record: Mapping[str, Any]) -> bytes:
    """The Kafka key of an output: its pump or wearer."""
    return (record["asset_id"] if "asset_id" in record else record["wearer_id"]).encode()


# Errors about the record itself: the broker (or the client, before sending) refuses it however often
# it is sent, so retrying it would stall its partition for good. Everything else (broker unavailable, a
# leader change, a timeout, a connection reset) is transient: the broker will take the record later.
_PERMANENT_ERROR_NAMES = (
    "MessageSizeTooLargeError", "RecordListTooLargeError", "RecordTooLargeError", "InvalidMessageError",
    "CorruptRecordException", "InvalidTimestampError", "UnsupportedForMessageFormatError",
)
# How long a stopping worker still waits for deliveries already under way before it leaves the batch
# unacknowledged (its offsets uncommitted) for the next owner of the partition to process again.
SHUTDOWN_PUBLISH_GRACE_S = 5.0
_STOP_POLL_S = 0.25


def _permanent_error_types() -> tuple[type[BaseException], ...]:
    from aiokafka import errors

    return tuple(getattr(errors, n) for n in _PERMANENT_ERROR_NAMES if hasattr(errors, n))


def is_permanent(exc: BaseException) -> bool:
    """Whether a failed send can never succeed as it is (record too large or invalid), as opposed to a
    transient failure a retry outlives. Faust wraps client errors (``ProducerSendError ... from exc``), so
    the chain of causes is searched."""
    permanent = _permanent_error_types()
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, permanent):
            return True
        seen = seen.__cause__
    return False


class PublishAbandoned(asyncio.CancelledError):
    """The worker is stopping and a batch's records were not all delivered in the grace period.

    A cancellation: the batch must not be acknowledged nor its state written, and its records are
    processed again by whichever worker owns their partitions next (at-least-once, nothing lost)."""


@dataclass
class Outgoing:
    """One record to publish; ``letter`` or ``record`` says what to do if the broker refuses it for good."""

    topic: str
    key: bytes | None
    value: bytes
    letter: dict[str, Any] | None = None  # it is this dead letter: truncate its original and send it again
    record: dict[str, Any] | None = None  # it is this output: dead-letter it


class StagePublisher:
    """Encodes a result's outputs and dead letters and awaits their delivery.

    Outputs are encoded with the topics' registered Faust codecs and handed
    straight to the producer: measured here, Faust's ``Topic.send`` machinery
    cost a quarter of the worker's throughput (1,208 -> 1,607 records/s).

    A dead letter larger than ``max_dead_letter_bytes`` (default: the producer's max request size
    less headroom), or one the broker refuses as too large, is published with its original truncated
    (size and sha256 of the whole kept in the record). An output the broker refuses for good becomes a
    dead letter. Only transient failures are retried, and only the records not yet delivered.
    """

    def __init__(self, app: Any, name: str, sink: Any, dead_letters: Any, sinks: Mapping[str, Any] | None = None, *,
                 max_dead_letter_bytes: int | None = None, shutdown_grace_s: float = SHUTDOWN_PUBLISH_GRACE_S,
                 fence: ReplayFence | None = None) -> None:
        self.app, self.name, self.fence = app, name, fence
        self.topics = {None: (sink.get_topic_name(), sink.value_serializer)}
        for logical, topic in (sinks or {}).items():
            self.topics[logical] = (topic.get_topic_name(), topic.value_serializer)
        self.dead_letters = (dead_letters.get_topic_name(), dead_letters.value_serializer)
        if max_dead_letter_bytes is None:
            max_request = getattr(getattr(app, "conf", None), "producer_max_request_size", 1_000_000)
            max_dead_letter_bytes = int(max_request) - 1024  # aiokafka counts the batch and record headers too
        self.max_dead_letter_bytes = max_dead_letter_bytes
        # What a truncated original keeps: leaves room for the rest of the dead letter under a small limit too.
        self.truncated_bytes = min(TRUNCATED_ORIGINAL_BYTES, max_dead_letter_bytes // 2)
        self.shutdown_grace_s = shutdown_grace_s
        self._stop_seen: float | None = None

    async def __call__(self, result: StageResult) -> None:
        from faust.serializers import codecs

        outgoing, replayed = [], 0
        keys = result.output_keys if len(result.output_keys) == len(result.outputs) else [None] * len(result.outputs)
        for record, logical, given_key in zip(result.outputs, result.output_topics, keys):
            topic, codec = self.topics[logical]
            key = given_key.encode() if given_key is not None else record_key(record)
            value = codecs.dumps(codec, record)
            if self.fence is not None and self.fence.claim(topic, key, value):
                replayed += 1  # published by this partition's previous owner after its last state write
                continue
            outgoing.append(Outgoing(topic, key, value, record=record))
        for letter in (self.dead_letter(d) for d in result.dead_letters):
            if self.fence is not None and self.fence.claim(letter.topic, letter.key, letter.value):
                replayed += 1  # dead letters carry the refused record's timestamp: a replay is byte for byte the same
                continue
            outgoing.append(letter)
        if replayed:
            metrics.REPLAYS_SUPPRESSED.labels(self.name).inc(replayed)
            logger.info("replayed outputs not published again", extra={"stage": self.name, "records": replayed})
        await self.until_delivered(outgoing)

    def output_topics(self) -> list[str]:
        """The topics the stage's outputs and dead letters go to."""
        return sorted({topic for topic, _ in self.topics.values()} | {self.dead_letters[0]})

    def dead_letter(self, letter: dict[str, Any]) -> Outgoing:
        """A dead letter to publish, its original truncated when the whole would exceed the size limit."""
        from faust.serializers import codecs

        topic, codec = self.dead_letters
        value = codecs.dumps(codec, letter)
        size = len(value) + len(letter["key"] or b"")
        if size > self.max_dead_letter_bytes and not letter.get("original_truncated"):
            metrics.PUBLISH_REFUSED.labels(self.name, "dead_letter_too_large").inc()
            logger.warning("dead letter too large to publish whole; its original is truncated",
                           extra={"stage": self.name, "bytes": size, "limit": self.max_dead_letter_bytes,
                                  "source_topic": letter["source_topic"], "partition": letter["partition"], "offset": letter["offset"]})
            letter = truncated_dead_letter(letter, f"{size} bytes exceed the {self.max_dead_letter_bytes}-byte dead-letter limit",
                                           self.truncated_bytes)
            value = codecs.dumps(codec, letter)
        return Outgoing(topic, letter["key"], value, letter=letter)

    def stand_in(self, item: Outgoing, exc: BaseException) -> Outgoing | None:
        """What to publish instead of a record the broker refused for good; None: nothing can be."""
        error = type(exc.__cause__ or exc).__name__
        metrics.PUBLISH_REFUSED.labels(self.name, error).inc()
        where = {"stage": self.name, "topic": item.topic, "bytes": len(item.value), "error": repr(exc)}
        if item.letter is not None and not item.letter.get("original_truncated"):
            logger.error("broker refused a dead letter for good; publishing it with its original truncated", extra=where)
            return self.dead_letter(truncated_dead_letter(item.letter, f"the broker refused the whole dead letter: {error}",
                                                          self.truncated_bytes))
        if item.record is not None:
            logger.error("broker refused an output for good; dead-lettering it", extra=where)
            refused = RawMessage(item.topic, -1, -1, item.key, item.value)
            reason = "oversized" if "TooLarge" in error else "processing_error"
            detail = f"stage {self.name} could not publish this output to {item.topic}: {exc!r}"[:2000]
            return self.dead_letter(dead_letter(refused, Rejection(reason, detail, item.record.get("asset_id") or item.record.get("wearer_id"))))
        # A dead letter refused even truncated (or a dead letter of a refused output): the log line and the
        # metric are all that can be kept; blocking the partition forever would lose more.
        logger.error("broker refused a dead letter even with its original truncated; dropped", extra=where)
        return None

    def stopping(self) -> bool:
        return bool(getattr(self.app, "should_stop", False))

    async def _unless_stopping(self, awaitable: Awaitable[Any], grace_s: float) -> Any:
        """Await ``awaitable``; once the worker is stopping, at most ``grace_s`` more (from when the stop
        was first seen), then cancel it and raise PublishAbandoned."""
        task = asyncio.ensure_future(awaitable)
        loop = asyncio.get_running_loop()
        try:
            while not task.done():
                if self.stopping():
                    if self._stop_seen is None:
                        self._stop_seen = loop.time()
                    left = self._stop_seen + grace_s - loop.time()
                    if left <= 0:
                        raise PublishAbandoned(f"stage {self.name}: worker stopping with records undelivered")
                    await asyncio.wait({task}, timeout=min(left, _STOP_POLL_S))
                else:
                    await asyncio.wait({task}, timeout=_STOP_POLL_S)
            return task.result()
        finally:
            if not task.done():
                task.cancel()

    async def _attempt(self, items: Sequence[Outgoing]) -> list[BaseException | None]:
        """Send every item once; the error of each that was not delivered (None: delivered)."""
        app = self.app
        errors: list[BaseException | None] = [None] * len(items)
        futures: dict[Any, int] = {}
        for i, item in enumerate(items):
            try:
                futures[await app.producer.send(item.topic, item.key, item.value, None, None, None)] = i
            except Exception as exc:  # aiokafka raises many types; all of them mean "not delivered"
                errors[i] = exc
        if futures:
            await asyncio.wait(list(futures))  # never cancels the delivery futures themselves
            for future, i in futures.items():
                errors[i] = asyncio.CancelledError() if future.cancelled() else future.exception()
        return errors

    async def until_delivered(self, outgoing: Sequence[Outgoing]) -> None:
        """Send and await delivery. Transient failures are retried with backoff, and only for the records
        not delivered yet; a record refused for good is replaced by its stand-in (``stand_in``) at once.
        The batch's events are acknowledged only after this returns, so a failing broker stalls the stage
        instead of letting Faust commit records whose outputs were never written. A stopping worker waits
        ``shutdown_grace_s`` for what is under way, then raises PublishAbandoned."""
        name = self.name
        pending, delay_s = list(outgoing), 0.1
        while pending:
            errors = await self._unless_stopping(self._attempt(pending), self.shutdown_grace_s)
            retry: list[Outgoing] = []
            transient: BaseException | None = None
            for item, exc in zip(pending, errors):
                if exc is None:
                    continue
                if is_permanent(exc):
                    replacement = self.stand_in(item, exc)
                    if replacement is not None:
                        retry.append(replacement)
                else:
                    retry.append(item)
                    transient = transient or exc
            if transient is not None:
                metrics.PUBLISH_RETRIES.labels(name).inc()
                logger.error("publishing failed; retrying the undelivered records",
                             extra={"stage": name, "records": len(retry), "of": len(pending), "error": repr(transient), "retry_in_s": delay_s})
                await self._unless_stopping(asyncio.sleep(delay_s), 0.0)
                delay_s = min(delay_s * 2, 5.0)
            pending = retry
