"""Data quality of raw pump and wearable streams: per-asset checks per event-time window, findings, the fleet rule.

One ``AssetQuality`` per stream of one asset (a pump's vibration channel, its
process samples, or a wearable's IMU chunks) is fed every valid raw record
(``observe``) and every dead letter (``observe_rejection``); when an event-time
window closes, ``close_window`` returns a ``WindowQuality`` and starts the
next window. ``QualityEpisodes`` turns a stream of windows into findings per
check with hysteresis, and ``fleet_verdict`` applies the fleet rule to the
latest window of every asset. Everything is plain numpy and JSON-safe state,
so a stage can keep it in a changelog table and a test is a list in, a list out.

Checks (stable names, used in records and metrics): see ``CHECKS``.

- ``missing``: records that never arrived: a step of more than one learned
  sequence stride, or (pumps) more than ``missing_factor`` expected intervals
  of event time without a record. Wearables count sequence gaps only: their
  silences are battery-saving naps (``battery_gap``), not lost records.
- ``late``: arrived (broker timestamp) more than ``lateness_ms`` after the
  record's event end.
- ``gap``: the longest silence (event time without data) in the window,
  failing beyond ``max_gap_ms`` (or 1.5 intervals of a sparser stream). On a
  pump a long silence is missing records too, so both fail together.
- ``clock_skew``: median of (broker timestamp - event end) beyond a bound.
- ``stuck``: a chunk whose samples have (near) zero spread, or a process
  variable holding one value for ``stuck_repeats`` records in a row.
- ``out_of_range``, ``non_finite``: shares of the window's readings that were
  dead-lettered for those reasons (``streams.runtime.validation.REASONS``).
- ``sample_rate``: declared ``fs_hz``, or the rate implied by back-to-back
  chunks' timestamps, off the nominal rate.
- ``battery_gap``: a wearable silent for longer than ``battery_gap_ms`` that
  then resumed.

A reading is one record (a chunk is one reading, whatever its sample count).
A window's readings are its valid records, its dead letters and its missing
records; the bad ones are the missing, the dead-lettered, and the valid
records that were late or stuck. A failed window-level check whose damage is
not one record's (``clock_skew``, ``sample_rate``: every timestamp or every
frequency is off) makes all of the window's readings bad.

Sources of the thresholds: the fleet rule is the project brief's data-quality
line, a fleet finding when more than 5 % of devices have an open quality issue
or more than 1 % of readings are bad (``fleet_device_share``,
``fleet_reading_share``); the same 1 % bounds each share-type check of one
asset, so one asset that alone would breach the fleet's reading line is
flagged itself. The other defaults are explained where ``QualityThresholds``
declares them.

>>> t = QualityThresholds(window_ms=60_000, expected_interval_ms=1_000)
>>> q = AssetQuality("pump-1", kind="process")
>>> for s in range(60):
...     if s not in (20, 21, 22):  # three samples lost on the way
...         q.observe(s * 1000, s * 1000 + 300, s, np.array([5.0 + s / 100, 120.0 + s]), 0.0, t)
>>> w = q.close_window(60_000, t)
>>> w.failed, w.checks["missing"]["missing"], w.readings, w.bad_readings
(('missing',), 3, 60, 3)
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

CHECKS = ("missing", "late", "gap", "clock_skew", "stuck", "out_of_range", "non_finite", "sample_rate", "battery_gap")
KINDS = ("vibration", "process", "wearable")
# Damage every reading of the window, not one record's: all of its readings count as bad.
WINDOW_WIDE = ("clock_skew", "sample_rate")
# Slow memory of a stream's typical spread: about 50 healthy chunks, so a sensor that fades
# over minutes is followed, while one flat chunk (never learned from) is measured against it.
SPREAD_ALPHA = 0.02


@dataclass(frozen=True)
class QualityThresholds:
    """Bounds of the checks; every one can be overridden per stream kind by the stage."""

    # The stage's event-time window; trend buckets (models.trends) are hourly too.
    window_ms: int = 3_600_000
    # Expected time between record starts; None: the median of the first ``learn_intervals``
    # intervals (a median, so a drop or a burst while learning does not skew it).
    expected_interval_ms: float | None = None
    learn_intervals: int = 10
    # Sequence step between consecutive records; None: learned like the interval (a vibration
    # channel's seq counts across all of the pump's channels, so one channel steps by their number).
    seq_stride: int | None = None
    # A record is missing once 1.5 intervals passed without it: half an interval of jitter is
    # normal, a whole one is a lost record.
    missing_factor: float = 1.5
    max_missing_share: float = 0.01  # the brief's 1 % of readings
    # Later than this after its event end, a record misses windows that already closed.
    lateness_ms: int = 30_000
    max_late_share: float = 0.01  # the brief's 1 % of readings
    # |median(broker - event end)| beyond 5 s: an unsynchronised device clock (NTP keeps
    # healthy devices within tens of ms; the rest is transport delay, well under a second).
    max_clock_skew_s: float = 5.0
    # False where broker time says nothing about a device's clock: history replayed faster than it
    # happened (the demo, a backfill). Lateness and skew are still measured, never judged.
    clock_checks: bool = True
    # Five minutes without data: longer than any healthy stream's retries, and long enough
    # to empty a good part of an hourly trend bucket.
    max_gap_ms: int = 300_000
    # A wearable off for over a minute while worn leaves a fall undetected for that minute.
    battery_gap_ms: int = 60_000
    # Flat chunk: spread (peak to peak, widest axis) at most stuck_rel_spread of the stream's
    # typical spread, or stuck_abs_spread (in the samples' unit) before one is known. A live
    # accelerometer's noise alone is orders of magnitude above 1e-3 of its usual spread.
    stuck_rel_spread: float = 1e-3
    stuck_abs_spread: float = 1e-6
    # A process variable holding one value (within stuck_abs_spread) for 30 records in a
    # row: sensors with noise never repeat exactly that long; a frozen transmitter does.
    stuck_repeats: int = 30
    # A stopped pump reads exactly 0 flow and current for hours: a repeated 0 is not stuck.
    stuck_ignore_zero: bool = True
    max_out_of_range_share: float = 0.01  # the brief's 1 % of readings
    max_non_finite_share: float = 0.01  # the brief's 1 % of readings
    # Nominal sampling rate; None: the first record's fs_hz.
    nominal_fs_hz: float | None = None
    # 2 % off shifts every spectral feature (bearing fault orders, fall-window lengths) by 2 %.
    max_rate_drift: float = 0.02
    # The implied rate needs 10 s of back-to-back chunks: ms timestamps then resolve 0.01 %.
    rate_min_span_s: float = 10.0
    # The brief: more than 5 % of devices with an open issue, or more than 1 % of readings bad.
    fleet_device_share: float = 0.05
    fleet_reading_share: float = 0.01

    def __post_init__(self) -> None:
        positive = ("window_ms", "learn_intervals", "lateness_ms", "max_clock_skew_s", "max_gap_ms", "battery_gap_ms",
                    "stuck_repeats", "rate_min_span_s", "max_rate_drift")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        shares = ("max_missing_share", "max_late_share", "max_out_of_range_share", "max_non_finite_share",
                  "fleet_device_share", "fleet_reading_share")
        for name in shares:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("stuck_rel_spread", "stuck_abs_spread"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.missing_factor <= 1:
            raise ValueError(f"missing_factor must be > 1, got {self.missing_factor}")
        for name in ("expected_interval_ms", "nominal_fs_hz", "seq_stride"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")


DEFAULT_THRESHOLDS = QualityThresholds()

# P-square marker increments for the median (p = 0.5).
_P2_STEP = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class StreamingMedian:
    """Running median in five numbers: the P-square estimate (Jain and Chlamtac, 1985).

    Exact while it holds at most five values; afterwards within a small fraction of the
    spread for a stable distribution, and its state never grows.

    >>> m = StreamingMedian()
    >>> for x in (5.0, 1.0, 3.0):
    ...     m.add(x)
    >>> m.value
    3.0
    >>> m = StreamingMedian()
    >>> delays = np.random.default_rng(0).normal(20.0, 2.0, 1000)
    >>> for x in delays:
    ...     m.add(x)
    >>> round(m.value, 2), round(float(np.median(delays)), 2), m.count
    (19.83, 19.85, 1000)
    >>> StreamingMedian.from_dict(m.to_dict()) == m
    True
    """

    count: int = 0
    heights: list[float] = field(default_factory=list)
    positions: list[float] = field(default_factory=list)
    desired: list[float] = field(default_factory=list)

    def add(self, x: float) -> None:
        x = float(x)
        self.count += 1
        q = self.heights
        if self.count <= 5:
            bisect.insort(q, x)
            if self.count == 5:
                self.positions = [0.0, 1.0, 2.0, 3.0, 4.0]
                self.desired = [0.0, 1.0, 2.0, 3.0, 4.0]
            return
        n, d = self.positions, self.desired
        if x < q[0]:
            q[0], k = x, 0
        elif x >= q[4]:
            q[4], k = x, 3
        else:
            k = bisect.bisect_right(q, x) - 1  # q[k] <= x < q[k + 1]
        for i in range(k + 1, 5):
            n[i] += 1.0
        for i in range(5):
            d[i] += _P2_STEP[i]
        for i in (1, 2, 3):
            off = d[i] - n[i]
            if (off >= 1 and n[i + 1] - n[i] > 1) or (off <= -1 and n[i - 1] - n[i] < -1):
                s = 1.0 if off > 0 else -1.0
                h = q[i] + s / (n[i + 1] - n[i - 1]) * ((n[i] - n[i - 1] + s) * (q[i + 1] - q[i]) / (n[i + 1] - n[i])
                                                        + (n[i + 1] - n[i] - s) * (q[i] - q[i - 1]) / (n[i] - n[i - 1]))
                if not q[i - 1] < h < q[i + 1]:  # the parabola overshot a neighbour: move linearly
                    j = i + int(s)
                    h = q[i] + s * (q[j] - q[i]) / (n[j] - n[i])
                q[i] = h
                n[i] += s

    @property
    def value(self) -> float | None:
        if self.count == 0:
            return None
        if self.count <= 5:
            return float(np.median(self.heights))
        return self.heights[2]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StreamingMedian:
        return cls(int(d["count"]), [float(v) for v in d["heights"]], [float(v) for v in d["positions"]],
                   [float(v) for v in d["desired"]])


@dataclass
class _WindowCounters:
    """What one asset's open window has seen so far; reset by ``close_window``."""

    received: int = 0  # valid records
    bad_records: int = 0  # valid records that were late or stuck (each counted once)
    missing: int = 0  # records found missing, before rejections are netted out
    late: int = 0
    max_delay_ms: float | None = None
    stuck: int = 0
    stuck_columns: int = 0  # process: bit i set when variable i was stuck
    repeated_max: int = 0  # process: longest run of one value of any variable
    rejected: dict[str, int] = field(default_factory=dict)  # dead letters by reason
    first_ts_ms: int | None = None
    lead_from_ms: float | None = None  # event end of the record before the window's first
    inner_silence_ms: float = 0.0
    battery_gaps: int = 0
    battery_longest_ms: float = 0.0
    rate_samples: int = 0  # samples of back-to-back chunks ...
    rate_ms: float = 0.0  # ... and the event time they spanned
    fs_min_hz: float | None = None
    fs_max_hz: float | None = None
    skew_ms: StreamingMedian = field(default_factory=StreamingMedian)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["rejected"] = dict(self.rejected)
        d["skew_ms"] = self.skew_ms.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _WindowCounters:
        return cls(**{**d, "rejected": dict(d["rejected"]), "skew_ms": StreamingMedian.from_dict(d["skew_ms"])})


@dataclass(frozen=True)
class WindowQuality:
    """One asset's data quality over one closed event-time window.

    ``checks`` holds every check of ``CHECKS`` with its numbers (None where a number is
    undefined or the check does not apply to the stream's kind); ``failed`` the checks
    that failed, in ``CHECKS`` order.
    """

    asset_id: str
    kind: str
    window_start_ms: int
    window_end_ms: int
    readings: int
    bad_readings: int
    checks: dict[str, dict[str, Any]]
    failed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": list(self.failed)}


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass
class AssetQuality:
    """Per-asset (per-stream) quality state: feed records in arrival order, close windows in event time.

    ``kind`` is one of ``KINDS``; None: inferred from the first record (``fs_hz`` 0: process
    samples; a 2-D chunk: a wearable's axes; otherwise a vibration channel). Call
    ``close_window(end)`` before observing the first record at or after ``end``: the
    counters cover every record observed since the previous close. Until the first
    ``learn_intervals`` steps have taught it the cadence (unless the thresholds give it),
    a new stream is not checked for missing records.

    >>> t = QualityThresholds(window_ms=60_000)
    >>> rng = np.random.default_rng(0)
    >>> wearer = AssetQuality("wearer-1", kind="wearable")
    >>> for i in range(240):  # a minute of 50-sample chunks at 200 Hz: one every 250 ms
    ...     xyz = rng.normal([0.0, 1.0, 0.0], 0.02, (50, 3))
    ...     if i >= 200:  # the sensor freezes after 50 s
    ...         xyz = np.tile([0.0, 1.0, 0.0], (50, 1))
    ...     wearer.observe(i * 250, i * 250 + 400, i, xyz, 200.0, t)
    >>> w = wearer.close_window(60_000, t)
    >>> w.failed, w.checks["stuck"]["stuck"], w.readings, w.bad_readings
    (('stuck',), 40, 240, 40)
    """

    asset_id: str = ""
    kind: str | None = None
    # learned from the stream itself
    interval_ms: float | None = None
    seq_stride: int | None = None
    nominal_fs_hz: float | None = None
    typical_spread: float | None = None
    learning_intervals: list[float] = field(default_factory=list)
    learning_strides: list[int] = field(default_factory=list)
    # the latest valid record (in sequence order)
    last_ts_ms: int | None = None
    last_end_ms: float | None = None
    last_seq: int | None = None
    last_n: int = 0
    last_fs_hz: float = 0.0
    # process samples: each variable's last value (None: absent) and how many records it held it
    last_values: list[float | None] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)
    # missing records already counted (at a window close) in the current silence
    pending_missing: int = 0
    window: _WindowCounters = field(default_factory=_WindowCounters)

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} or None, got {self.kind!r}")

    # ------------------------------------------------------------------ per record

    def observe(self, ts_ms: int, broker_ts_ms: int | None, seq: int, samples: np.ndarray, fs_hz: float,
                thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> None:
        """One valid raw record: event time of its first sample, broker timestamp, seq, samples, rate (0: process)."""
        t = thresholds
        x = np.asarray(samples)
        ts_ms, seq, fs = int(ts_ms), int(seq), float(fs_hz)
        if self.kind is None:
            self.kind = "process" if fs <= 0 else ("wearable" if x.ndim == 2 else "vibration")
        chunked = self.kind != "process" and fs > 0
        n = int(x.shape[0]) if x.ndim else 1
        end_ms = ts_ms + (n * 1000.0 / fs if chunked else 0.0)
        w = self.window
        w.received += 1

        bad = False
        if broker_ts_ms is not None:
            delay = float(broker_ts_ms) - end_ms
            w.skew_ms.add(delay)
            w.max_delay_ms = delay if w.max_delay_ms is None else max(w.max_delay_ms, delay)
            if delay > t.lateness_ms and t.clock_checks:
                w.late += 1
                bad = True
        stuck = self._stuck(x, t) if self.kind == "process" else self._flat(x, t)
        if stuck:
            w.stuck += 1
            bad = True
        w.bad_records += bad
        if chunked:
            if self.nominal_fs_hz is None:
                self.nominal_fs_hz = fs
            w.fs_min_hz = fs if w.fs_min_hz is None else min(w.fs_min_hz, fs)
            w.fs_max_hz = fs if w.fs_max_hz is None else max(w.fs_max_hz, fs)

        if self.last_seq is not None and seq <= self.last_seq:
            return  # replayed or overtaken: a reading, but no step of the cadence
        if self.last_seq is not None:
            dt, dseq = ts_ms - self.last_ts_ms, seq - self.last_seq
            self._learn(dt, dseq, t)
            self._count_missing(dt, dseq, t)
            silence = ts_ms - self.last_end_ms
            if w.first_ts_ms is not None:
                w.inner_silence_ms = max(w.inner_silence_ms, silence)
            if self.kind == "wearable" and silence > t.battery_gap_ms:
                w.battery_gaps += 1
                w.battery_longest_ms = max(w.battery_longest_ms, silence)
            stride = t.seq_stride or self.seq_stride or 1
            duration = self.last_n * 1000.0 / self.last_fs_hz if self.last_fs_hz > 0 else 0.0
            # Back to back (next chunk starts within half a chunk of where this one should end):
            # the samples over the time between starts is the rate the device really sampled at.
            if chunked and dseq == stride and duration > 0 and 0.5 * duration <= dt <= 1.5 * duration:
                w.rate_samples += self.last_n
                w.rate_ms += dt
        if w.first_ts_ms is None:
            w.first_ts_ms, w.lead_from_ms = ts_ms, self.last_end_ms
        self.last_ts_ms, self.last_end_ms, self.last_seq, self.last_n, self.last_fs_hz = ts_ms, end_ms, seq, n, fs

    def observe_rejection(self, ts_ms: int | None, reason: str, count: int = 1) -> None:
        """``count`` dead-lettered records of this asset with one reason (``validation.REASONS``); ts_ms may be None."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        rejected = self.window.rejected
        rejected[reason] = rejected.get(reason, 0) + int(count)

    def _learn(self, dt: int, dseq: int, t: QualityThresholds) -> None:
        if self.interval_ms is None and dt > 0:  # dt 0: another channel at the same instant
            self.learning_intervals.append(float(dt))
            if len(self.learning_intervals) >= t.learn_intervals:
                self.interval_ms = float(np.median(self.learning_intervals))
                self.learning_intervals = []
        if self.seq_stride is None:
            self.learning_strides.append(dseq)
            if len(self.learning_strides) >= t.learn_intervals:
                self.seq_stride = max(1, round(float(np.median(self.learning_strides))))
                self.learning_strides = []

    def _count_missing(self, dt: int, dseq: int, t: QualityThresholds) -> None:
        stride = t.seq_stride or self.seq_stride
        by_seq = max(0, round(dseq / stride) - 1) if stride else 0
        interval = t.expected_interval_ms or self.interval_ms
        by_time = 0
        if self.kind != "wearable" and interval and dt > t.missing_factor * interval:
            by_time = round(dt / interval) - 1
        # Both see the same hole; part of it may have been counted when a window closed inside it.
        self.window.missing += max(0, max(by_seq, by_time) - self.pending_missing)
        self.pending_missing = 0

    def _flat(self, x: np.ndarray, t: QualityThresholds) -> bool:
        if x.ndim == 0 or x.shape[0] < 2:
            return False
        # The widest axis: a chunk is flat only when every axis is (one quiet axis of a still wearer is not a fault).
        spread = float(np.ptp(x, axis=0).max()) if x.ndim == 2 else float(np.ptp(x))
        floor = t.stuck_abs_spread
        if self.typical_spread is not None:
            floor = max(floor, t.stuck_rel_spread * self.typical_spread)
        if spread <= floor:
            return True
        if self.typical_spread is None:
            self.typical_spread = spread
        else:  # in log space: one loud chunk does not drag the typical spread up tenfold
            self.typical_spread = math.exp((1 - SPREAD_ALPHA) * math.log(self.typical_spread) + SPREAD_ALPHA * math.log(spread))
        return False

    def _stuck(self, x: np.ndarray, t: QualityThresholds) -> bool:
        # A process sample holds a handful of variables: plain Python beats numpy's per-call overhead here.
        values = np.asarray(x, dtype=np.float64).ravel().tolist()
        if len(self.last_values) != len(values):
            self.last_values, self.repeats = [None] * len(values), [0] * len(values)
        w = self.window
        stuck = False
        for i, (v, last, run) in enumerate(zip(values, self.last_values, self.repeats)):
            if math.isnan(v):  # absent: no run
                self.last_values[i], self.repeats[i] = None, 0
                continue
            same = last is not None and abs(v - last) <= t.stuck_abs_spread and not (t.stuck_ignore_zero and v == 0.0)
            run = run + 1 if same else 1
            self.last_values[i], self.repeats[i] = v, run
            w.repeated_max = max(w.repeated_max, run)
            if run >= t.stuck_repeats:
                w.stuck_columns |= 1 << i
                stuck = True
        return stuck

    # ------------------------------------------------------------------ per window

    def close_window(self, window_end_ms: int, thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> WindowQuality:
        """The window ending at ``window_end_ms`` (``thresholds.window_ms`` long); resets the window's counters."""
        t = thresholds
        end = int(window_end_ms)
        start = end - t.window_ms
        w = self.window
        interval = t.expected_interval_ms or self.interval_ms
        kind = self.kind or "vibration"

        # Records due in the silence since the last one (pumps): counted here, in the window
        # they belonged to, and not again when the stream resumes.
        if kind != "wearable" and interval and self.last_ts_ms is not None:
            due = math.floor((end - self.last_ts_ms) / interval - (t.missing_factor - 1.0))
            new = max(0, due - self.pending_missing)
            w.missing += new
            self.pending_missing += new
        rejected = sum(w.rejected.values())
        # A dead-lettered record leaves a hole in seq like a lost one; it is counted once, as rejected.
        missing = max(0, w.missing - rejected)
        readings = w.received + rejected + missing
        checks: dict[str, dict[str, Any]] = {}
        failed: list[str] = []

        def check(name: str, bad: bool, **numbers: Any) -> None:
            checks[name] = numbers
            if bad:
                failed.append(name)

        share = _share(missing, readings)
        check("missing", share > t.max_missing_share, missing=missing, share=share,
              expected=round(t.window_ms / interval) if interval else None,
              interval_s=interval / 1000.0 if interval else None)
        share = _share(w.late, readings)
        check("late", share > t.max_late_share, late=w.late, share=share, bound_s=t.lateness_ms / 1000.0,
              max_delay_s=None if w.max_delay_ms is None else w.max_delay_ms / 1000.0)

        if self.last_end_ms is None:
            longest = 0.0  # never heard from: nothing to measure a silence from
        elif w.first_ts_ms is None:
            longest = end - max(start, self.last_end_ms)
        else:
            lead = w.first_ts_ms - max(start, w.lead_from_ms) if w.lead_from_ms is not None else 0.0
            longest = max(lead, w.inner_silence_ms, end - max(start, self.last_end_ms))
        longest = min(max(float(longest), 0.0), float(t.window_ms))
        # Periodic captures far apart are silent between captures by design: never below 1.5 intervals.
        gap_bound = max(float(t.max_gap_ms), t.missing_factor * interval if interval else 0.0)
        # Until the cadence is known a silence cannot be told from the capture interval: not judged yet.
        check("gap", interval is not None and longest > gap_bound, longest_s=longest / 1000.0, bound_s=gap_bound / 1000.0)

        skew = w.skew_ms.value
        check("clock_skew", t.clock_checks and skew is not None and abs(skew) > t.max_clock_skew_s * 1000.0,
              skew_s=None if skew is None else skew / 1000.0, records=w.skew_ms.count, bound_s=t.max_clock_skew_s)
        floor = None
        if kind != "process":
            floor = max(t.stuck_abs_spread, t.stuck_rel_spread * (self.typical_spread or 0.0))
        check("stuck", w.stuck > 0, stuck=w.stuck, spread_floor=floor,
              repeated_max=w.repeated_max if kind == "process" else None,
              columns_mask=w.stuck_columns if kind == "process" else None)
        for name, bound in (("out_of_range", t.max_out_of_range_share), ("non_finite", t.max_non_finite_share)):
            share = _share(w.rejected.get(name, 0), readings)
            check(name, share > bound, rejected=w.rejected.get(name, 0), share=share, bound=bound)

        nominal = t.nominal_fs_hz or self.nominal_fs_hz
        implied = w.rate_samples * 1000.0 / w.rate_ms if w.rate_ms >= t.rate_min_span_s * 1000.0 else None
        drift = None
        if kind != "process" and nominal:
            offs = [abs(f / nominal - 1.0) for f in (w.fs_min_hz, w.fs_max_hz, implied) if f is not None]
            drift = max(offs) if offs else None
        check("sample_rate", drift is not None and drift > t.max_rate_drift, nominal_fs_hz=nominal if kind != "process" else None,
              fs_min_hz=w.fs_min_hz, fs_max_hz=w.fs_max_hz, implied_fs_hz=implied, span_s=w.rate_ms / 1000.0,
              drift=drift, bound=t.max_rate_drift)
        wearable = kind == "wearable"
        check("battery_gap", wearable and w.battery_gaps > 0, gaps=w.battery_gaps if wearable else None,
              longest_s=w.battery_longest_ms / 1000.0 if wearable else None, bound_s=t.battery_gap_ms / 1000.0)

        bad = w.bad_records + rejected + missing
        if any(name in WINDOW_WIDE for name in failed):
            bad = readings
        self.window = _WindowCounters()
        return WindowQuality(self.asset_id, kind, start, end, readings, bad, checks, tuple(failed))

    # ------------------------------------------------------------------ state

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (numbers, strings, None, lists, dicts): for a changelog table."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["learning_intervals"] = list(self.learning_intervals)
        d["learning_strides"] = list(self.learning_strides)
        d["last_values"] = list(self.last_values)
        d["repeats"] = list(self.repeats)
        d["window"] = self.window.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AssetQuality:
        return cls(**{**d, "learning_intervals": list(d["learning_intervals"]), "learning_strides": list(d["learning_strides"]),
                      "last_values": list(d["last_values"]), "repeats": list(d["repeats"]),
                      "window": _WindowCounters.from_dict(d["window"])})


@dataclass
class QualityEpisodes:
    """Findings per (asset, check) with hysteresis, like alert episodes.

    A finding opens on a window that fails its check and closes after ``close_after``
    consecutive windows that pass it; a failing window in between restarts the count.

    >>> def window(end_h, *failed):
    ...     checks = {c: {"n": 1} for c in CHECKS}
    ...     return WindowQuality("pump-1", "vibration", (end_h - 1) * 3_600_000, end_h * 3_600_000, 360, 0, checks, failed)
    >>> episodes = QualityEpisodes(close_after=2)
    >>> [(c, s) for c, s, _ in episodes.step(window(1, "stuck"))]
    [('stuck', 'OPEN')]
    >>> episodes.step(window(2)), episodes.open_checks
    ([], ('stuck',))
    >>> [(c, s, d["bad_windows"]) for c, s, d in episodes.step(window(3))]
    [('stuck', 'CLOSE', 1)]
    """

    asset_id: str = ""
    close_after: int = 2
    # open findings only: check -> opened_ms, bad_windows, clean (consecutive clean windows since the last bad)
    episodes: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.close_after < 1:
            raise ValueError(f"close_after must be >= 1, got {self.close_after}")

    @property
    def open_checks(self) -> tuple[str, ...]:
        return tuple(c for c in CHECKS if c in self.episodes)

    @property
    def has_open(self) -> bool:
        return bool(self.episodes)

    def step(self, window: WindowQuality) -> list[tuple[str, str, dict[str, Any]]]:
        """Advance by one closed window (in event order): (check, "OPEN" | "CLOSE", details) per change."""
        events: list[tuple[str, str, dict[str, Any]]] = []
        when = {"window_start_ms": window.window_start_ms, "window_end_ms": window.window_end_ms}
        for name in CHECKS:
            episode = self.episodes.get(name)
            if name in window.failed:
                if episode is None:
                    self.episodes[name] = {"opened_ms": window.window_start_ms, "bad_windows": 1, "clean": 0}
                    events.append((name, "OPEN", {**window.checks.get(name, {}), **when}))
                else:
                    episode["bad_windows"] += 1
                    episode["clean"] = 0
            elif episode is not None:
                episode["clean"] += 1
                if episode["clean"] >= self.close_after:
                    del self.episodes[name]
                    events.append((name, "CLOSE", {"opened_ms": episode["opened_ms"], "bad_windows": episode["bad_windows"],
                                                   **when}))
        return events

    def to_dict(self) -> dict[str, Any]:
        return {"asset_id": self.asset_id, "close_after": self.close_after,
                "episodes": {c: dict(e) for c, e in self.episodes.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QualityEpisodes:
        return cls(d["asset_id"], int(d["close_after"]), {c: {k: int(v) for k, v in e.items()} for c, e in d["episodes"].items()})


def fleet_verdict(windows: Sequence[WindowQuality], assets_with_open_findings: int, assets_total: int,
                  thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> tuple[bool, dict[str, Any]]:
    """The brief's fleet rule: more than 5 % of devices with an open quality finding, or more than 1 % of readings bad.

    ``windows``: the latest closed window of each asset; the device share counts the
    assets with at least one open finding (``QualityEpisodes.has_open``).

    >>> healthy = {c: {} for c in CHECKS}
    >>> windows = [WindowQuality(f"p{i}", "vibration", 0, 3_600_000, 360, 0, healthy, ()) for i in range(100)]
    >>> fleet_verdict(windows, assets_with_open_findings=1, assets_total=100)[0]
    False
    >>> verdict, numbers = fleet_verdict(windows, assets_with_open_findings=6, assets_total=100)
    >>> verdict, numbers["device_share"], numbers["reasons"]
    (True, 0.06, ['devices'])
    """
    if not 0 <= assets_with_open_findings <= assets_total:
        raise ValueError(f"need 0 <= assets_with_open_findings <= assets_total, got {assets_with_open_findings}, {assets_total}")
    t = thresholds
    readings = sum(w.readings for w in windows)
    bad = sum(w.bad_readings for w in windows)
    device_share = _share(assets_with_open_findings, assets_total)
    reading_share = _share(bad, readings)
    reasons = []
    if device_share > t.fleet_device_share:
        reasons.append("devices")
    if reading_share > t.fleet_reading_share:
        reasons.append("readings")
    failing = {c: sum(c in w.failed for w in windows) for c in CHECKS}
    return bool(reasons), {
        "assets_total": assets_total, "assets_with_open_findings": assets_with_open_findings, "device_share": device_share,
        "device_share_bound": t.fleet_device_share, "readings": readings, "bad_readings": bad, "reading_share": reading_share,
        "reading_share_bound": t.fleet_reading_share, "reasons": reasons, "windows_failing": {c: n for c, n in failing.items() if n},
    }
