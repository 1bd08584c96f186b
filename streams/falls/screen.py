"""Stage wearable.imu.raw -> fall.candidates: validate, de-duplicate, screen every sample for fall impacts.

Each wearer's chunks are one continuous signal until a chunk starts later
than the previous one ended: that gap starts a new segment, so an impact is
only ever judged on samples that really were consecutive. The screen is
``models.falls.StreamingScreen``; its last 5 s of samples are the wearer's
state, so a restarted worker decides exactly what an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from vigil.models.falls import FS_HZ, POST_S, PRE_S, ScreenConfig, StreamingScreen, screen_features
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.validation import ImuLimits, Rejection, check_imu

SCHEMA = "vigil.falls.ImuChunk"
# Device clocks stamp chunks in whole ms and drift a little: a chunk this close to where the previous one
# ended continues it. A real gap (a lost chunk, the device off) starts a new segment.
CONTINUITY_TOLERANCE_MS = 50.0


@dataclass
class WearerScreenState:
    last_seq: int = -1
    next_candidate_seq: int = 0
    fs_hz: float = 0.0
    segment_start_ms: float = 0.0  # event time of the segment's first sample
    buffer_start: int = 0  # index in the segment of buffer[0]
    buffer: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))

    @property
    def segment_end_ms(self) -> float:
        return self.segment_start_ms + (self.buffer_start + len(self.buffer)) * 1000.0 / self.fs_hz

    def to_bytes(self) -> bytes:
        header = {"last_seq": self.last_seq, "next_candidate_seq": self.next_candidate_seq, "fs_hz": self.fs_hz,
                  "segment_start_ms": self.segment_start_ms, "buffer_start": self.buffer_start}
        return pack_state(header, {"buffer": self.buffer.astype(np.float32)})

    @classmethod
    def from_bytes(cls, data: bytes) -> "WearerScreenState":
        header, arrays = unpack_state(data)
        return cls(buffer=arrays["buffer"].reshape(-1, 3), **header)


def window_bytes(window: np.ndarray) -> bytes:
    return np.ascontiguousarray(window, dtype="<f4").tobytes()


class ScreenStage:
    """Stage 1 over ImuChunk batches: FallCandidate records for impacts that pass the screen."""

    source_topic = "wearable.imu.raw"

    def __init__(self, codec: AvroCodec, config: ScreenConfig | None = None, fs_hz: float = FS_HZ,
                 limits: ImuLimits | None = None) -> None:
        self.codec = codec
        self.config = config or ScreenConfig()
        self.fs_hz = fs_hz  # the rate the fall model was trained at; other rates are dead-lettered
        self.limits = limits or ImuLimits()

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, WearerScreenState]) -> StageResult[WearerScreenState]:
        result: StageResult[WearerScreenState] = StageResult()
        for message in messages:
            record = result.decode(self.codec, message, SCHEMA)
            if record is None:
                continue
            rejection, samples = check_imu(record, message.key, self.fs_hz, self.limits)
            if rejection is not None:
                result.reject(message, rejection)
                continue
            wearer = record["wearer_id"]
            previous = result.pending_state(wearer, state)
            if not result.admit(record["seq"], previous.last_seq if previous else -1):
                continue
            if previous is not None and previous.fs_hz == record["fs_hz"] and record["ts"] < previous.segment_end_ms - CONTINUITY_TOLERANCE_MS:
                result.reject(message, Rejection(
                    "timestamp_backwards",
                    f"chunk starts at {record['ts']} ms, before the previous one ended at {previous.segment_end_ms:.0f} ms", wearer))
                continue
            wearer_state = self.screen_chunk(result, previous, record, samples)
            result.update_state(wearer, wearer_state, message.partition)
        return result

    def screen_chunk(self, result: StageResult[WearerScreenState], previous: WearerScreenState | None,
                     record: Mapping[str, Any], samples: np.ndarray) -> WearerScreenState:
        fs_hz = record["fs_hz"]
        continues = (previous is not None and previous.fs_hz == fs_hz
                     and abs(record["ts"] - previous.segment_end_ms) <= CONTINUITY_TOLERANCE_MS)
        if continues:
            assert previous is not None
            screen = StreamingScreen(fs_hz, self.config, previous.buffer, previous.buffer_start)
            segment_start_ms, next_seq = previous.segment_start_ms, previous.next_candidate_seq
        else:  # the first chunk, or one after a gap: impacts never straddle segments
            screen = StreamingScreen(fs_hz, self.config)
            segment_start_ms = float(record["ts"])
            next_seq = previous.next_candidate_seq if previous is not None else 0
        impacts, windows = screen.push(samples)
        if len(impacts):
            peak, angle, post_std = screen_features(windows, fs_hz)
            for i, index in enumerate(impacts.tolist()):
                impact_ms = segment_start_ms + index * 1000.0 / fs_hz
                result.emit({
                    "wearer_id": record["wearer_id"],
                    "seq": next_seq,
                    "impact_ts_ms": int(round(impact_ms)),
                    "window_start_ts_ms": int(round(impact_ms - PRE_S * 1000.0)),
                    "fs_hz": fs_hz,
                    "source_seq": record["seq"],
                    "peak_g": float(peak[i]),
                    "angle_change_deg": float(angle[i]),
                    "post_std_g": float(post_std[i]),
                    "xyz": window_bytes(windows[i]),
                }, impact_ms + POST_S * 1000.0)
                next_seq += 1
        return WearerScreenState(last_seq=record["seq"], next_candidate_seq=next_seq, fs_hz=fs_hz,
                                 segment_start_ms=segment_start_ms, buffer_start=screen.buffer_start, buffer=screen.buffer)
