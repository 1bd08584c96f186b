"""Re-windowing one channel's waveform chunks into fixed-length feature windows.

Chunks that continue each other in event time are concatenated and cut into
windows of ``window_s``. A gap (the next chunk starts later than the previous
one ended, beyond ``gap_tolerance``) ends the segment: what is buffered
becomes a window of its own even if it is shorter than ``window_s``, which
is how periodic snapshots (PRONOSTIA records 0.1 s every 10 s) become one
window each. The buffered tail is only known to be complete when the next
chunk arrives, so a short segment is emitted one chunk late.

Pure and deterministic: the same chunks give the same windows with the same
sequence numbers, which is what makes the stream stage idempotent.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_WINDOW_SAMPLES = 64


@dataclass
class Window:
    seq: int
    ts_ms: float
    fs_hz: float
    rpm: float | None
    samples: np.ndarray
    first_input_seq: int
    last_input_seq: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.fs_hz


@dataclass
class ChannelBuffer:
    """Samples of one channel not yet in a window, and the channel's window counter."""

    fs_hz: float
    rpm: float | None
    start_ts_ms: float
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    first_input_seq: int = -1
    last_input_seq: int = -1
    next_window_seq: int = 0
    discarded_samples: int = 0

    @property
    def end_ts_ms(self) -> float:
        """Event time the next continuous sample would have."""
        return self.start_ts_ms + len(self.samples) * 1000.0 / self.fs_hz


def gap_tolerance_ms(fs_hz: float) -> float:
    """How far a chunk may start from where the previous one ended and still continue it:
    1.5 sample periods, at least 1 ms (timestamps are whole milliseconds)."""
    return max(1.0, 1.5 * 1000.0 / fs_hz)


def continues(buffer: ChannelBuffer, ts_ms: float, fs_hz: float) -> bool:
    return fs_hz == buffer.fs_hz and abs(ts_ms - buffer.end_ts_ms) <= gap_tolerance_ms(fs_hz)


def _flush_segment(buffer: ChannelBuffer, out: list[Window]) -> None:
    if len(buffer.samples) >= MIN_WINDOW_SAMPLES:
        out.append(
            Window(
                buffer.next_window_seq,
                buffer.start_ts_ms,
                buffer.fs_hz,
                buffer.rpm,
                buffer.samples,
                buffer.first_input_seq,
                buffer.last_input_seq,
            )
        )
        buffer.next_window_seq += 1
    else:
        buffer.discarded_samples += len(buffer.samples)


def append_chunk(
    buffer: ChannelBuffer | None,
    *,
    seq: int,
    ts_ms: float,
    fs_hz: float,
    rpm: float | None,
    samples: np.ndarray,
    window_s: float,
) -> tuple[ChannelBuffer, list[Window]]:
    """Add one validated chunk; return the updated buffer and the windows it completed.

    The caller rejects chunks that start before ``buffer.end_ts_ms`` minus the
    tolerance (timestamps going backwards) before calling this.
    """
    out: list[Window] = []
    if buffer is None:
        buffer = ChannelBuffer(fs_hz=fs_hz, rpm=rpm, start_ts_ms=ts_ms)
    elif not continues(buffer, ts_ms, fs_hz):
        if len(buffer.samples):
            _flush_segment(buffer, out)
        buffer = ChannelBuffer(
            fs_hz=fs_hz,
            rpm=rpm if rpm is not None else buffer.rpm,
            start_ts_ms=ts_ms,
            next_window_seq=buffer.next_window_seq,
            discarded_samples=buffer.discarded_samples,
        )
    if len(buffer.samples) == 0:
        buffer.start_ts_ms = ts_ms
        buffer.first_input_seq = seq
        pending = samples
    else:
        pending = np.concatenate([buffer.samples, samples])
    buffer.rpm = rpm if rpm is not None else buffer.rpm
    buffer.last_input_seq = seq
    window_n = max(MIN_WINDOW_SAMPLES, int(round(window_s * fs_hz)))
    start = 0
    while len(pending) - start >= window_n:
        out.append(
            Window(
                buffer.next_window_seq,
                buffer.start_ts_ms,
                fs_hz,
                buffer.rpm,
                pending[start : start + window_n],
                buffer.first_input_seq,
                seq,
            )
        )
        buffer.next_window_seq += 1
        buffer.start_ts_ms += window_n * 1000.0 / fs_hz
        buffer.first_input_seq = seq
        start += window_n
    buffer.samples = pending[start:].copy() if start else pending
    return buffer, out
