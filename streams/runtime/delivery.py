"""Hands a stage each partition's records in offset order, once per consumer generation.

Faust 0.15.3 can hand an agent records out of offset order when a worker
starts with a backlog (it resumes source partitions before seeking to the
committed offsets; faust-streaming issues 216 and 221). Measured here: in
about one start in five, one record of the backlog never reached the agent,
and since stages skip any seq at or below the last one they accepted, that
record was lost and the pump's later windows shifted by one chunk.

``OffsetContinuity`` watches the offsets an agent receives. Offsets within a
partition are consecutive (vigil's topics are neither compacted nor written
transactionally), so a jump means records were skipped: the agent seeks the
partition back to the first missing offset and holds what arrives beyond it
until that offset comes.

One seek is not enough: Faust's fetch loop drops any record below the highest
offset it has handed out (``Consumer._drain_messages``), and the records it
had already fetched past the hole keep coming after the seek, raising that
mark again, so the re-fetched hole was dropped. Measured on Apache Kafka 4.4
in the worker-crash test before the seek was repeated: in 3 of 7 takeovers the
hole never came back and 675-6,273 records were skipped once the jump was
accepted. The seek is therefore repeated every ``reseek_interval_s`` while the
hole persists, on a timer (``due_reseeks``): once Faust has dropped every
record up to the partition's end, none arrives to ask for it (measured: a
takeover stuck with 8,897 records uncommitted). Records held beyond the hole
are left unacknowledged, so Faust does not commit past them. A jump that
persists for ``resync_timeout_s`` (a real gap, e.g. records removed by
retention or transaction markers from a foreign producer) is accepted and
counted.

A hole at a partition's end shows no jump: nothing arrives beyond it. Faust
drops records it fetched when the generation changes or its flow stops in the
middle of a fetch, and events of an old generation are discarded here; if no
seek follows, the partition's last records never come. Measured in the
SIGKILL conformance test on Apache Kafka 4.4: 1 run in 12 ended with the
stage idle, 17 records short of the partition's end, for the test's 90 s.
So a stage idle for ``stall_s`` while the consumer knows of records past the
next offset it expects (the high watermark) seeks there again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Literal, Mapping

Decision = Literal["process", "skip", "hold", "reseek"]


@dataclass
class _PartitionCursor:
    next_offset: int | None = None
    resync_since: float | None = None
    last_seek: float | None = None


@dataclass
class OffsetContinuity:
    resync_timeout_s: float = 60.0
    reseek_interval_s: float = 0.5
    clock: Callable[[], float] = time.monotonic
    stall_s: float = 10.0
    accepted_jumps: int = 0
    reseeks: int = 0
    stalled_reseeks: int = 0
    # (partition, first missing offset, last missing offset) of each jump accepted, for the caller to take
    gaps: list[tuple[Hashable, int, int]] = field(default_factory=list)
    _generation: Any = None
    _cursors: dict[Hashable, _PartitionCursor] = field(default_factory=dict)
    _last_activity: float | None = None
    _busy: bool = False

    def batch_started(self) -> None:
        """The stage took a batch: while it works on one, records waiting behind it are not a stall."""
        self._busy, self._last_activity = True, self.clock()

    def batch_finished(self) -> None:
        self._busy, self._last_activity = False, self.clock()

    def partitions(self) -> list[Hashable]:
        return list(self._cursors)

    def next_offset(self, tp: Hashable) -> int | None:
        cursor = self._cursors.get(tp)
        return None if cursor is None else cursor.next_offset

    def admit(self, generation: Any, tp: Hashable, offset: int, committed: int | None = None) -> Decision:
        """Whether to process this record now, skip it (seen before), hold it (it is beyond a hole: neither
        processed nor acknowledged, it comes again after the seek) or seek back first (a new hole; hold it too).

        ``committed`` is the partition's committed offset when known: the first
        record of a generation should start there.

        >>> guard = OffsetContinuity()
        >>> [guard.admit(1, "p0", o) for o in (5, 6, 6, 8)]
        ['process', 'process', 'skip', 'reseek']
        >>> [guard.admit(1, "p0", o) for o in (8, 9, 7, 8)]
        ['hold', 'hold', 'process', 'process']
        """
        if generation != self._generation:  # a rebalance: Faust seeks to committed offsets again
            self._generation = generation
            self._cursors.clear()
        cursor = self._cursors.setdefault(tp, _PartitionCursor())
        if cursor.next_offset is None:
            cursor.next_offset = committed if committed is not None and committed <= offset else offset
        if offset < cursor.next_offset:
            return "skip"
        if offset == cursor.next_offset:
            cursor.next_offset = offset + 1
            cursor.resync_since = cursor.last_seek = None
            return "process"
        now = self.clock()
        if cursor.resync_since is None:
            cursor.resync_since = cursor.last_seek = now
            self.reseeks += 1
            return "reseek"
        if now - cursor.resync_since < self.resync_timeout_s:
            return "hold"
        self.accepted_jumps += 1
        self.gaps.append((tp, cursor.next_offset, offset - 1))
        cursor.next_offset = offset + 1
        cursor.resync_since = cursor.last_seek = None
        return "process"

    def due_reseeks(self, generation: Any, highwaters: Mapping[Hashable, int | None] | None = None) -> list[tuple[Hashable, int]]:
        """The partitions whose hole is still open after ``reseek_interval_s`` since the last seek, with the
        offset to seek to. Called on a timer: when the records beyond the hole have all been dropped, none
        arrives to ask for the seek, and the partition would stay stuck behind it.

        ``highwaters`` (the consumer's end offsets) also finds a hole at a partition's end: the stage idle for
        ``stall_s`` and records beyond the next offset it expects.

        >>> now = [0.0]
        >>> guard = OffsetContinuity(reseek_interval_s=0.5, clock=lambda: now[0])
        >>> [guard.admit(1, "p0", o) for o in (0, 1, 4)]
        ['process', 'process', 'reseek']
        >>> guard.due_reseeks(1), guard.due_reseeks(2)
        ([], [])
        >>> now[0] = 0.6
        >>> guard.due_reseeks(1), guard.due_reseeks(1)
        ([('p0', 2)], [])
        """
        if generation != self._generation:
            return []
        now, due = self.clock(), []
        idle = not self._busy and self._last_activity is not None and now - self._last_activity >= self.stall_s
        for tp, cursor in self._cursors.items():
            if cursor.next_offset is None:
                continue
            if cursor.resync_since is None:
                end = (highwaters or {}).get(tp)
                stale_seek = cursor.last_seek is None or now - cursor.last_seek >= self.stall_s
                if idle and end is not None and end > cursor.next_offset and stale_seek:
                    cursor.last_seek = now
                    self.reseeks += 1
                    self.stalled_reseeks += 1
                    due.append((tp, cursor.next_offset))
                continue
            if now - cursor.last_seek >= self.reseek_interval_s and now - cursor.resync_since < self.resync_timeout_s:
                cursor.last_seek = now
                self.reseeks += 1
                due.append((tp, cursor.next_offset))
        return due


def committed_after_seek(recorded: Mapping[Hashable, int | None],
                         fetched: Mapping[Hashable, int | None]) -> dict[Hashable, int | None]:
    """The committed offset to record per partition once the seek to the committed offsets returns.

    Faust resumes the source partitions before it seeks them to their committed offsets
    (``Consumer.perform_seek``), so stages run and Faust commits while the committed offsets
    are still being fetched. Faust then recorded the fetched values over those newer commits.
    It advances a partition's commit only from the recorded offset, through a contiguous run of
    acknowledged offsets, and the offsets between the stale record and the newer commit had
    already been acknowledged and committed, so that partition was never committed again.
    Measured in the worker-crash test on Apache Kafka 4.4: offsets 373 and 384 committed during
    the seek, 314 and 326 recorded after it, and those two partitions still uncommitted 120 s later.

    ``recorded`` is what this worker has committed in this assignment; ``fetched`` is the broker's
    committed offsets as the seek read them (None or 0: nothing committed, recorded as None, as Faust does).
    The later of the two is kept.

    >>> committed_after_seek({"p0": 373}, {"p0": 314, "p1": 5, "p2": 0})
    {'p0': 373, 'p1': 5, 'p2': None}
    >>> committed_after_seek({"p0": 300}, {"p0": 314})
    {'p0': 314}
    """
    out: dict[Hashable, int | None] = {}
    for tp, offset in fetched.items():
        known = recorded.get(tp)
        out[tp] = known if known is not None and (not offset or offset < known) else (offset or None)
    return out
