"""Stages 1 and 2 of fall detection on crafted accelerometer signals (g, 200 Hz)."""
import pickle

import numpy as np
import pytest

from tests.fixtures.falls import LYING, fall, lying_down_slowly, sit_down_hard, still, walking
from vigil.models.falls import (
    FEATURE_NAMES,
    FS_HZ,
    POST_S,
    PRE_S,
    FallClassifier,
    ScreenConfig,
    StreamingScreen,
    candidate_windows,
    fall_window_features,
    screen_impacts,
    stage2_labels,
    to_g,
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_stage1_passes_a_fall_at_its_impact_and_nothing_else(rng):
    signal = fall(rng)
    impacts = screen_impacts(signal)
    assert len(impacts) == 1
    assert abs(impacts[0] - int(5.45 * FS_HZ)) <= 10
    windows = candidate_windows(signal, impacts)
    assert windows.shape == (1, int((PRE_S + POST_S) * FS_HZ), 3)
    assert np.linalg.norm(windows[0, int(PRE_S * FS_HZ)]) == pytest.approx(np.linalg.norm(signal, axis=1).max())  # impact at PRE_S


def test_stage1_stops_impacts_without_a_posture_change_and_posture_changes_without_an_impact(rng):
    assert len(screen_impacts(walking(rng))) == 0
    assert len(screen_impacts(lying_down_slowly(rng))) == 0
    # A fall whose impact stays below the configured peak is not a candidate either.
    assert len(screen_impacts(fall(rng, impact_g=1.6), config=ScreenConfig(peak_g=1.8))) == 0


def test_an_impact_is_only_decided_once_its_post_window_has_arrived(rng):
    signal = fall(rng)
    cut = int(5.45 * FS_HZ) + int(POST_S * FS_HZ) - 20  # 0.1 s short of the post window
    assert len(screen_impacts(signal[:cut])) == 0


def test_the_streaming_screen_finds_what_the_whole_signal_call_finds(rng):
    signal = np.concatenate([walking(rng, 6.0), fall(rng), still(2.0, LYING, rng), walking(rng, 4.0), fall(rng, 6.0)])
    whole = screen_impacts(signal)
    screen = StreamingScreen()
    found, windows = [], []
    for start in range(0, len(signal), 137):  # chunks that never line up with a window
        idx, w = screen.push(signal[start:start + 137])
        found += idx.tolist()
        windows.append(w)
    # Both falls, and getting up from lying into a walk (an impact with a posture change).
    assert found == whole.tolist() and len(found) == 3
    np.testing.assert_array_equal(np.concatenate(windows), candidate_windows(signal, whole))


def test_window_features_describe_the_impact(rng):
    windows = candidate_windows(fall(rng), screen_impacts(fall(np.random.default_rng(0))))
    features = fall_window_features(windows)
    assert features.shape == (1, len(FEATURE_NAMES)) and np.isfinite(features).all()
    named = dict(zip(FEATURE_NAMES, features[0]))
    assert named["peak_g"] == pytest.approx(4.0, abs=0.2)
    assert named["angle_change_deg"] == pytest.approx(90.0, abs=10.0)
    assert named["dip_pre1s_g"] < 0.3  # the free fall


def test_stage2_learns_falls_from_hard_negatives_and_keeps_its_threshold_from_training(rng):
    falls = [fall(rng, impact_g=float(g)) for g in rng.uniform(2.5, 8.0, 40)]
    # Hard negatives: impact and posture change, but a sit-down: small peak, no free fall, upright after.
    sits = [sit_down_hard(rng, float(g)) for g in rng.uniform(1.9, 2.6, 40)]
    windows = np.concatenate([candidate_windows(x, screen_impacts(x, config=ScreenConfig(min_angle_deg=0.0, max_post_std_g=1.0)))
                              for x in falls + sits])
    labels = np.array([1] * 40 + [0] * (len(windows) - 40))
    assert len(windows) == 80
    clf = FallClassifier(seed=0).fit(windows, labels)
    assert 0.0 < clf.threshold_ < 1.0
    assert clf.fires(windows[:40]).mean() >= 0.95 and clf.fires(windows[40:]).mean() <= 0.05
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(windows), clf.predict_proba(windows))


def test_stage2_labels_take_the_largest_passing_impact_of_a_fall_trial():
    trial = np.array([0, 0, 0, 1, 1])
    passed = np.array([True, True, False, True, False])
    peak = np.array([3.0, 5.0, 9.0, 2.0, 2.5])
    use, label = stage2_labels(trial, passed, peak, is_fall=np.array([True, False]))
    assert label.tolist() == [False, True, False, False, False]
    assert use.tolist() == [False, True, False, True, False]  # ADL: its stage-1 candidates are negatives


def test_counts_convert_to_g():
    assert to_g(np.array([[256, -4096, 0]], dtype=np.int16), 0.00390625).tolist() == [[1.0, -16.0, 0.0]]
