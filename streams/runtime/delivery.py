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
partition back to the first missing offset and drops what arrives beyond it
until that offset comes. A jump that persists for ``resync_timeout_s`` (a
real gap, e.g. transaction markers from a foreign producer) is accepted and
counted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Literal

Decision = Literal["process", "skip", "reseek"]


@dataclass
class _PartitionCursor:
    next_offset: int | None = None
    resync_since: float | None = None


@dataclass
class OffsetContinuity:
    resync_timeout_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    accepted_jumps: int = 0
    reseeks: int = 0
    _generation: Any = None
    _cursors: dict[Hashable, _PartitionCursor] = field(default_factory=dict)

    def next_offset(self, tp: Hashable) -> int | None:
        cursor = self._cursors.get(tp)
        return None if cursor is None else cursor.next_offset

    def admit(self, generation: Any, tp: Hashable, offset: int, committed: int | None = None) -> Decision:
        """Whether to process this record now, skip it (seen, or ahead of a hole), or seek back first.

        ``committed`` is the partition's committed offset when known: the first
        record of a generation should start there.

        >>> guard = OffsetContinuity()
        >>> [guard.admit(1, "p0", o) for o in (5, 6, 6, 8)]
        ['process', 'process', 'skip', 'reseek']
        >>> [guard.admit(1, "p0", o) for o in (8, 9, 7, 8)]
        ['skip', 'skip', 'process', 'process']
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
            cursor.resync_since = None
            return "process"
        now = self.clock()
        if cursor.resync_since is None:
            cursor.resync_since = now
            self.reseeks += 1
            return "reseek"
        if now - cursor.resync_since < self.resync_timeout_s:
            return "skip"
        self.accepted_jumps += 1
        cursor.next_offset = offset + 1
        cursor.resync_since = None
        return "process"
