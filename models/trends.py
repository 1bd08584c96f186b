"""Per-pump trend tables: hourly buckets by event time, and the rolling week over them.

Each bucket counts the pump's windows (all streams, commissioning included),
the scored and flagged ones and the alert episodes opened in its hour; it
keeps the mean and max vibration RMS, the mean kurtosis, and the edge score's
mean and 95th percentile. The percentile comes from a sparse histogram of
scores in bins of 0.01 (the score lives in [0, 1]): mergeable across hours
and bounded in size however many windows an hour holds.

The health indicator is a bucket's mean edge score. Its slope is fitted by
least squares over the last ``slope_hours`` of buckets; time to threshold is
where that line meets the edge tier's flag threshold, so "12 h" reads as: at
this rate the pump's typical window is flagged in twelve hours.

>>> trend = PumpTrend()
>>> for hour, score in enumerate([0.40, 0.45, 0.50, 0.55]):
...     _ = trend.add_window(hour * HOUR_MS + 60_000, score=score, threshold=0.65, flagged=False)
>>> view = trend.view()
>>> round(view.health_slope_per_day, 3), round(view.time_to_threshold_h, 1)
(1.2, 2.0)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

HOUR_MS = 3_600_000
WEEK_HOURS = 7 * 24
SCORE_BINS = 100
ALLOWED_LATENESS_MS = HOUR_MS


def hour_start(ts_ms: int) -> int:
    return ts_ms - ts_ms % HOUR_MS


def score_bin(score: float) -> int:
    return min(SCORE_BINS - 1, max(0, int(score * SCORE_BINS)))


def histogram_quantile(bins: Mapping[int, int], q: float) -> float | None:
    """The q-quantile of scores binned by ``score_bin``, interpolated within its bin.

    >>> histogram_quantile({10: 50, 90: 50}, 0.5)
    0.11
    >>> histogram_quantile({}, 0.95) is None
    True
    """
    total = sum(bins.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for b in sorted(bins):
        count = bins[b]
        if seen + count >= rank:
            return round((b + (rank - seen) / count) / SCORE_BINS, 6)
        seen += count
    return 1.0


@dataclass
class HourlyBucket:
    hour_start_ms: int
    windows: int = 0
    scored: int = 0
    flagged: int = 0
    alerts: int = 0
    vibration_windows: int = 0
    edge_score_sum: float = 0.0
    threshold_sum: float = 0.0
    rms_sum_g: float = 0.0
    rms_max_g: float = 0.0
    kurtosis_sum: float = 0.0
    score_bins: dict[int, int] = field(default_factory=dict)

    @property
    def hour_end_ms(self) -> int:
        return self.hour_start_ms + HOUR_MS

    @property
    def health(self) -> float | None:
        return self.edge_score_sum / self.scored if self.scored else None

    @property
    def threshold(self) -> float | None:
        return self.threshold_sum / self.scored if self.scored else None

    @property
    def edge_score_p95(self) -> float | None:
        return histogram_quantile(self.score_bins, 0.95)

    @property
    def rms_mean_g(self) -> float | None:
        return self.rms_sum_g / self.vibration_windows if self.vibration_windows else None

    @property
    def kurtosis_mean(self) -> float | None:
        return self.kurtosis_sum / self.vibration_windows if self.vibration_windows else None

    def summary(self) -> dict[str, Any]:
        return {
            "hour_start_ms": self.hour_start_ms,
            "hour_end_ms": self.hour_end_ms,
            "windows": self.windows,
            "scored": self.scored,
            "flagged": self.flagged,
            "alerts": self.alerts,
            "vibration_windows": self.vibration_windows,
            "rms_mean_g": self.rms_mean_g,
            "rms_max_g": self.rms_max_g if self.vibration_windows else None,
            "kurtosis_mean": self.kurtosis_mean,
            "edge_score_mean": self.health,
            "edge_score_p95": self.edge_score_p95,
            "edge_threshold": self.threshold,
        }


@dataclass(frozen=True)
class TrendView:
    """The rolling window of one pump's buckets ending at ``end_ms``."""

    start_ms: int
    end_ms: int
    buckets: tuple[HourlyBucket, ...]
    windows: int
    scored: int
    flagged: int
    alerts: int
    edge_score_mean: float | None
    edge_score_p95: float | None
    rms_max_g: float | None
    health_indicator: float | None  # the fitted line's value at the latest bucket
    health_slope_per_day: float | None
    time_to_threshold_h: float | None
    threshold: float | None

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("buckets")
        return out


def fit_health_line(hours: np.ndarray, health: np.ndarray) -> tuple[float, float]:
    """(value at the last point, slope per hour) of the least-squares line."""
    slope, intercept = np.polyfit(hours, health, 1)
    return float(intercept + slope * hours[-1]), float(slope)


def time_to_threshold_h(level: float, slope_per_h: float, threshold: float) -> float | None:
    """Hours until a line at ``level`` rising at ``slope_per_h`` reaches ``threshold``; 0 when there,
    None when it is not rising.

    >>> time_to_threshold_h(0.5, 0.01, 0.6), time_to_threshold_h(0.7, 0.0, 0.6), time_to_threshold_h(0.5, -0.1, 0.6)
    (10.0, 0.0, None)
    """
    if level >= threshold:
        return 0.0
    if slope_per_h <= 0:
        return None
    return round((threshold - level) / slope_per_h, 6)


@dataclass
class PumpTrend:
    """One pump's hourly buckets over the last ``hours`` hours of event time (a week by default).

    Buckets older than that behind the newest event are evicted; a record that
    would fall into an evicted hour is counted in ``late_records``, not bucketed.
    """

    buckets: dict[int, HourlyBucket] = field(default_factory=dict)
    watermark_ms: int = -1
    late_records: int = 0
    # Newest event time per stream: an hour is complete once every stream has passed it.
    stream_watermarks: dict[str, int] = field(default_factory=dict)
    hours: int = WEEK_HOURS
    # Buckets evicted since the caller last drained them (not persisted).
    evicted: list[HourlyBucket] = field(default_factory=list, compare=False, repr=False)

    @property
    def window_start_ms(self) -> int:
        """The first hour still kept: ``hours`` hours ending with the newest event's."""
        return hour_start(self.watermark_ms) - (self.hours - 1) * HOUR_MS

    def bucket_at(self, ts_ms: int, stream: str = "") -> HourlyBucket | None:
        """The bucket of ``ts_ms``, created if needed; None (and counted late) when its hour is gone."""
        self.stream_watermarks[stream] = max(ts_ms, self.stream_watermarks.get(stream, ts_ms))
        if ts_ms > self.watermark_ms:
            self.watermark_ms = ts_ms
            start = self.window_start_ms
            for h in [h for h in self.buckets if h < start]:
                self.evicted.append(self.buckets.pop(h))
        hour = hour_start(ts_ms)
        if self.watermark_ms >= 0 and hour < self.window_start_ms:
            self.late_records += 1
            return None
        bucket = self.buckets.get(hour)
        if bucket is None:
            bucket = self.buckets[hour] = HourlyBucket(hour)
        return bucket

    def add_window(
        self,
        ts_ms: int,
        *,
        score: float | None,
        threshold: float | None,
        flagged: bool,
        rms_g: float | None = None,
        kurtosis: float | None = None,
        stream: str = "",
    ) -> HourlyBucket | None:
        """Count one window of ``stream`` (``score`` None: a commissioning window); returns its bucket."""
        bucket = self.bucket_at(ts_ms, stream)
        if bucket is None:
            return None
        bucket.windows += 1
        if score is not None:
            bucket.scored += 1
            bucket.edge_score_sum += score
            bucket.threshold_sum += threshold if threshold is not None else math.nan
            b = score_bin(score)
            bucket.score_bins[b] = bucket.score_bins.get(b, 0) + 1
            bucket.flagged += int(flagged)
        if rms_g is not None and math.isfinite(rms_g):
            bucket.vibration_windows += 1
            bucket.rms_sum_g += rms_g
            bucket.rms_max_g = max(bucket.rms_max_g, rms_g)
            bucket.kurtosis_sum += kurtosis if kurtosis is not None and math.isfinite(kurtosis) else 0.0
        return bucket

    def add_alert(self, opened_ts_ms: int) -> HourlyBucket | None:
        """Count one alert episode in the hour it opened."""
        bucket = self.bucket_at(opened_ts_ms, "alerts")
        if bucket is not None:
            bucket.alerts += 1
        return bucket

    def drain_evicted(self) -> list[HourlyBucket]:
        out, self.evicted = self.evicted, []
        return out

    def closed(self, bucket: HourlyBucket) -> bool:
        """Every window stream of the pump has passed this hour, or the newest event is ``ALLOWED_LATENESS_MS``
        past it (a stream that went quiet does not hold the hour open for ever). Alerts lag their windows,
        so they never hold an hour open; one counted after its hour was published republishes it."""
        streams = [ts for name, ts in self.stream_watermarks.items() if name != "alerts"]
        complete = bool(streams) and min(streams) >= bucket.hour_end_ms
        return complete or self.watermark_ms >= bucket.hour_end_ms + ALLOWED_LATENESS_MS

    def view(self, end_ms: int | None = None, *, slope_hours: int = 24, min_points: int = 3) -> TrendView:
        """The rolling window ending with the hour of ``end_ms`` (default: the newest event)."""
        end_ms = self.watermark_ms if end_ms is None else end_ms
        last_hour = hour_start(max(end_ms, 0))
        start = last_hour - (self.hours - 1) * HOUR_MS
        chosen = tuple(self.buckets[h] for h in sorted(self.buckets) if start <= h <= last_hour)
        scored = sum(b.scored for b in chosen)
        bins: dict[int, int] = {}
        for b in chosen:
            for k, v in b.score_bins.items():
                bins[k] = bins.get(k, 0) + v
        recent = [b for b in chosen if b.scored and b.hour_start_ms > last_hour - slope_hours * HOUR_MS]
        level = slope = ttt = threshold = None
        if recent:
            threshold = float(np.nanmean([b.threshold for b in recent]))
        if len(recent) >= min_points:
            hours = np.array([(b.hour_start_ms - last_hour) / HOUR_MS for b in recent])
            level, slope_h = fit_health_line(hours, np.array([b.health for b in recent]))
            slope = slope_h * 24.0
            ttt = time_to_threshold_h(level, slope_h, threshold) if threshold is not None and math.isfinite(threshold) else None
        vib = [b.rms_max_g for b in chosen if b.vibration_windows]
        return TrendView(
            start_ms=start,
            end_ms=last_hour + HOUR_MS,
            buckets=chosen,
            windows=sum(b.windows for b in chosen),
            scored=scored,
            flagged=sum(b.flagged for b in chosen),
            alerts=sum(b.alerts for b in chosen),
            edge_score_mean=sum(b.edge_score_sum for b in chosen) / scored if scored else None,
            edge_score_p95=histogram_quantile(bins, 0.95),
            rms_max_g=max(vib) if vib else None,
            health_indicator=level,
            health_slope_per_day=slope,
            time_to_threshold_h=ttt,
            threshold=threshold,
        )


def buckets_from_columns(columns: Mapping[str, np.ndarray]) -> dict[int, HourlyBucket]:
    """Inverse of ``bucket_columns``."""
    hours = columns["hour_start_ms"].tolist()
    counts = columns["counts"].tolist()
    sums = columns["sums"].tolist()
    buckets = {h: HourlyBucket(h, *c, *s) for h, c, s in zip(hours, counts, sums)}
    for h, b, n in zip(columns["bin_hour_ms"].tolist(), columns["bin"].tolist(), columns["bin_count"].tolist()):
        buckets[h].score_bins[b] = n
    return buckets


_COUNTS = ("windows", "scored", "flagged", "alerts", "vibration_windows")
_SUMS = ("edge_score_sum", "threshold_sum", "rms_sum_g", "rms_max_g", "kurtosis_sum")


def bucket_columns(buckets: Iterable[HourlyBucket]) -> dict[str, np.ndarray]:
    """Buckets as a few flat arrays, for compact state: one row per hour, one per nonzero score bin."""
    ordered = sorted(buckets, key=lambda b: b.hour_start_ms)
    bins = [(b.hour_start_ms, k, v) for b in ordered for k, v in sorted(b.score_bins.items())]
    return {
        "hour_start_ms": np.array([b.hour_start_ms for b in ordered], dtype=np.int64),
        "counts": np.array([[getattr(b, n) for n in _COUNTS] for b in ordered], dtype=np.int64).reshape(-1, len(_COUNTS)),
        "sums": np.array([[getattr(b, n) for n in _SUMS] for b in ordered], dtype=np.float64).reshape(-1, len(_SUMS)),
        "bin_hour_ms": np.array([h for h, _, _ in bins], dtype=np.int64),
        "bin": np.array([k for _, k, _ in bins], dtype=np.int16),
        "bin_count": np.array([v for _, _, v in bins], dtype=np.int64),
    }
