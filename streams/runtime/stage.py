"""What every stage takes and returns: Kafka records in, output records, dead letters and state out.

Stages never touch Kafka. The agent hands a batch of ``RawMessage`` and the
current state; the stage returns everything to publish and the state to
write back once the outputs are delivered (outputs first, so a crash can
only cause a replay, never a record that state says was done but was not
published).
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

from vigil.streams.runtime.codec import AvroCodec, DecodeError
from vigil.streams.runtime.validation import Rejection

logger = logging.getLogger(__name__)

S = TypeVar("S")


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # The broker's (or producer's) timestamp of the record, ms; None where there is none (offline replay).
    timestamp_ms: int | None = None


@dataclass
class StageResult(Generic[S]):
    outputs: list[dict[str, Any]] = field(default_factory=list)
    # The topic of each output (logical name, before any prefix); None: the stage's one sink.
    output_topics: list[str | None] = field(default_factory=list)
    # Event time (ms) each output describes up to, for the event-to-output latency metric.
    event_end_ms: list[float] = field(default_factory=list)
    # The Kafka key of each output; None: its asset (or wearer). Fleet summaries share one key, so
    # one partition, and so one worker, sees them all.
    output_keys: list[str | None] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    # Sequence numbers skipped between consecutive records of an asset: records that never
    # arrived (lost upstream, or delivered out of order). A data-quality signal, never silent.
    seq_gaps: int = 0
    state_updates: dict[str, S] = field(default_factory=dict)
    # The input partition each state key lives on: its changelog goes to the same partition
    # number, so whichever worker owns the input partition recovers that state.
    state_partitions: dict[str, int] = field(default_factory=dict)
    # Windows the edge tier flagged, per feature set (vigil_edge_flagged_total).
    flagged: dict[str, int] = field(default_factory=dict)
    # Flagged windows the cloud tier confirmed, per feature set (vigil_cloud_confirmed_total): kept
    # apart from ``flagged`` so the edge panel counts edge verdicts only.
    confirmed: dict[str, int] = field(default_factory=dict)
    # Seconds the batch spent in each tier's model (vigil_inference_seconds), shadows included.
    inference_s: dict[str, float] = field(default_factory=dict)

    def timed(self, tier: str, started_s: float) -> None:
        """Adds the time since ``started_s`` (time.perf_counter) to ``tier``'s inference time."""
        self.inference_s[tier] = self.inference_s.get(tier, 0.0) + time.perf_counter() - started_s

    def admit(self, seq: int, last_seq: int) -> bool:
        """False for a duplicate (seq already processed: skip it, it is counted); counts gaps."""
        if seq <= last_seq:
            self.duplicates += 1
            return False
        if last_seq >= 0 and seq > last_seq + 1:
            self.seq_gaps += seq - last_seq - 1
        return True

    def decode(self, codec: AvroCodec, message: RawMessage, schema: str) -> dict[str, Any] | None:
        """The message's record, or None after dead-lettering it with the decode error's reason."""
        try:
            return codec.decode(message.value, schema)
        except DecodeError as exc:
            self.reject(message, Rejection(exc.reason, exc.detail))
            return None

    def reject(self, message: RawMessage, rejection: Rejection) -> None:
        self.dead_letters.append(dead_letter(message, rejection))

    def emit(self, record: dict[str, Any], event_end_ms: float, topic: str | None = None, key: str | None = None) -> int:
        self.outputs.append(record)
        self.output_topics.append(topic)
        self.event_end_ms.append(event_end_ms)
        self.output_keys.append(key)
        return len(self.outputs) - 1

    def pending_state(self, key: str, state: Mapping[str, S]) -> S | None:
        """The state of ``key`` as this batch has left it so far, else as stored."""
        found = self.state_updates.get(key)
        return found if found is not None else state.get(key)

    def update_state(self, key: str, value: S, partition: int) -> None:
        self.state_updates[key] = value
        self.state_partitions[key] = partition


def dead_letter(message: RawMessage, rejection: Rejection) -> dict[str, Any]:
    """A DeadLetter record (schemas/common/DeadLetter.v2.avsc) for a rejected message."""
    original = message.value if message.value is not None else b""
    return {
        "source_topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": message.key,
        "reason": rejection.reason,
        "detail": rejection.detail,
        "original": original,
        "asset_id": rejection.asset_id,
        # The refused record's own timestamp, so a rejection replayed after a takeover is the same record, byte for
        # byte, and the replay fence does not publish it twice; wall clock only for a record without one.
        "ts_ms": message.timestamp_ms if message.timestamp_ms is not None else int(time.time() * 1000),
        # Size and hash of the whole original, so a truncated one can still be matched with its source record.
        "original_size": len(original),
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "original_truncated": False,
    }


# What a dead letter keeps of an original too large to publish whole: enough for the framing,
# the schema id and the identity fields (they come first in every vigil schema).
TRUNCATED_ORIGINAL_BYTES = 64 * 1024


def truncated_dead_letter(letter: dict[str, Any], why: str, keep_bytes: int = TRUNCATED_ORIGINAL_BYTES) -> dict[str, Any]:
    """``letter`` with only the first ``keep_bytes`` of its original; size and sha256 stay those of the whole."""
    original = letter["original"]
    size = letter.get("original_size")
    size = len(original) if size is None else size
    return {
        **letter,
        "original": original[:keep_bytes],
        "original_size": size,
        "original_sha256": letter.get("original_sha256") or hashlib.sha256(original).hexdigest(),
        "original_truncated": True,
        "detail": f"{letter['detail']} [original truncated to {min(keep_bytes, len(original))} of {size} bytes: {why}]"[:4000],
    }


class _Overlay(Mapping[str, S]):
    """Reads updates made so far first, then the stored state."""

    def __init__(self, updates: Mapping[str, S], state: Mapping[str, S]) -> None:
        self.updates, self.state = updates, state

    def __getitem__(self, key: str) -> S:
        return self.updates[key] if key in self.updates else self.state[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.updates[key] if key in self.updates else self.state.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(set(self.updates) | set(self.state))

    def __len__(self) -> int:
        return len(set(self.updates) | set(self.state))


def process_isolating_errors(
    process: Callable[[Sequence[RawMessage], Mapping[str, S]], StageResult[S]],
    messages: Sequence[RawMessage],
    state: Mapping[str, S],
    on_error: Callable[[RawMessage, Exception], None] | None = None,
) -> StageResult[S]:
    """Run a stage over a batch; if it raises, run it record by record and dead-letter
    each record it raises on (``processing_error``), so one bad record neither stops the
    worker nor takes the rest of the batch with it. The retry reads state through an
    overlay of what earlier records changed, so ``state`` must not be mutated by the
    failed batch run (the worker's TableState decodes a fresh object on every read)."""
    try:
        return process(messages, state)
    except Exception as exc:
        logger.warning("stage raised on a batch; retrying record by record", extra={"records": len(messages), "error": repr(exc)})
    combined: StageResult[S] = StageResult()
    for message in messages:
        try:
            one = process([message], _Overlay(combined.state_updates, state))
        except Exception as exc:
            if on_error is not None:
                on_error(message, exc)
            combined.reject(message, Rejection("processing_error", f"{type(exc).__name__}: {exc}"[:2000]))
            continue
        combined.outputs += one.outputs
        combined.output_topics += one.output_topics
        combined.event_end_ms += one.event_end_ms
        combined.output_keys += one.output_keys
        combined.dead_letters += one.dead_letters
        combined.duplicates += one.duplicates
        combined.seq_gaps += one.seq_gaps
        combined.state_updates.update(one.state_updates)
        combined.state_partitions.update(one.state_partitions)
        for name, count in one.flagged.items():
            combined.flagged[name] = combined.flagged.get(name, 0) + count
        for name, count in one.confirmed.items():
            combined.confirmed[name] = combined.confirmed.get(name, 0) + count
        for tier, seconds in one.inference_s.items():
            combined.inference_s[tier] = combined.inference_s.get(tier, 0.0) + seconds
    return combined
