import numpy as np
import pytest

from vigil.models.trends import (
    HOUR_MS,
    WEEK_HOURS,
    HourlyBucket,
    PumpTrend,
    bucket_columns,
    buckets_from_columns,
    histogram_quantile,
    hour_start,
    score_bin,
)

T0 = 1_767_225_600_000  # an hour boundary


@pytest.fixture
def day_of_windows() -> PumpTrend:
    """24 hours, 6 windows an hour: scores rise 0.01 an hour from 0.30, rms 0.1 g, one flagged window an hour from hour 20."""
    trend = PumpTrend()
    for hour in range(24):
        for i in range(6):
            score = 0.30 + 0.01 * hour
            trend.add_window(T0 + hour * HOUR_MS + i * 600_000, score=score, threshold=0.6, flagged=hour >= 20 and i == 0,
                             rms_g=0.1 + 0.01 * i, kurtosis=0.5)
    return trend


def test_buckets_count_and_summarise_their_hour(day_of_windows):
    b = day_of_windows.buckets[T0 + 20 * HOUR_MS]
    assert (b.windows, b.scored, b.flagged, b.vibration_windows) == (6, 6, 1, 6)
    assert b.rms_mean_g == pytest.approx(0.125)
    assert b.rms_max_g == pytest.approx(0.15)
    assert b.kurtosis_mean == pytest.approx(0.5)
    assert b.health == pytest.approx(0.50)
    assert b.edge_score_p95 == pytest.approx(0.50, abs=0.01)


def test_the_rolling_view_fits_the_rising_health_and_extrapolates_to_the_threshold(day_of_windows):
    view = day_of_windows.view()
    assert view.windows == 144 and view.flagged == 4
    assert view.health_slope_per_day == pytest.approx(0.24)
    assert view.health_indicator == pytest.approx(0.53)
    assert view.time_to_threshold_h == pytest.approx((0.6 - 0.53) / 0.01)
    assert view.start_ms == T0 + 23 * HOUR_MS - (WEEK_HOURS - 1) * HOUR_MS


def test_a_falling_or_flat_health_has_no_time_to_threshold():
    trend = PumpTrend()
    for hour in range(5):
        trend.add_window(T0 + hour * HOUR_MS, score=0.5 - 0.01 * hour, threshold=0.6, flagged=False)
    assert trend.view().health_slope_per_day < 0 and trend.view().time_to_threshold_h is None
    two = PumpTrend()
    for hour in range(2):
        two.add_window(T0 + hour * HOUR_MS, score=0.5, threshold=0.6, flagged=False)
    assert two.view().health_slope_per_day is None  # fewer than 3 hours: no line


def test_commissioning_windows_count_but_do_not_score():
    trend = PumpTrend()
    b = trend.add_window(T0, score=None, threshold=0.6, flagged=False, rms_g=0.2)
    assert (b.windows, b.scored, b.health, b.vibration_windows) == (1, 0, None, 1)


def test_a_week_is_kept_and_older_hours_are_evicted_then_counted_late():
    trend = PumpTrend()
    trend.add_window(T0, score=0.4, threshold=0.6, flagged=False)
    trend.add_window(T0 + WEEK_HOURS * HOUR_MS, score=0.4, threshold=0.6, flagged=False)  # a week later: T0's hour leaves
    assert sorted(trend.buckets) == [T0 + WEEK_HOURS * HOUR_MS]
    assert [b.hour_start_ms for b in trend.drain_evicted()] == [T0]
    assert trend.add_window(T0 + 5, score=0.4, threshold=0.6, flagged=False) is None
    assert trend.late_records == 1
    assert trend.add_window(T0 + HOUR_MS, score=0.4, threshold=0.6, flagged=False) is not None  # still inside the week


def test_alerts_count_in_the_hour_they_opened():
    trend = PumpTrend()
    trend.add_window(T0 + 3 * HOUR_MS, score=0.4, threshold=0.6, flagged=False)
    trend.add_alert(T0 + HOUR_MS + 5)
    assert trend.buckets[T0 + HOUR_MS].alerts == 1 and trend.view().alerts == 1


def test_histogram_quantile_matches_numpy_within_a_bin():
    scores = np.random.default_rng(0).uniform(0.2, 0.9, 5000)
    bins: dict[int, int] = {}
    for s in scores:
        bins[score_bin(float(s))] = bins.get(score_bin(float(s)), 0) + 1
    assert histogram_quantile(bins, 0.95) == pytest.approx(np.quantile(scores, 0.95), abs=0.01)


def test_columns_round_trip(day_of_windows):
    again = buckets_from_columns(bucket_columns(day_of_windows.buckets.values()))
    assert again == day_of_windows.buckets
    assert buckets_from_columns(bucket_columns([])) == {}


def test_hour_start_and_closed():
    assert hour_start(T0 + HOUR_MS + 1) == T0 + HOUR_MS
    trend = PumpTrend()
    trend.add_window(T0 + 10, score=0.4, threshold=0.6, flagged=False)
    bucket = trend.buckets[T0]
    assert not trend.closed(bucket)
    trend.add_window(T0 + HOUR_MS, score=0.4, threshold=0.6, flagged=False)
    assert trend.closed(bucket) and isinstance(bucket, HourlyBucket)
