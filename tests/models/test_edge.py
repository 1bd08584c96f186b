import pickle

import numpy as np
import pytest

from vigil.models.edge import LINEAR_SCALE_FLOOR, LOG_SCALE_FLOOR, Baseline, EdgeScorer, deviation_profile, fit_feature_set
from vigil.models.features import VIBRATION_FEATURES


def test_baseline_deviation_is_a_robust_z_score():
    rng = np.random.default_rng(0)
    X = rng.normal(10.0, 2.0, size=(400, 1))
    baseline = Baseline.fit(X, np.array([False]))
    assert baseline.center[0] == pytest.approx(10.0, abs=0.3)
    assert baseline.scale[0] == pytest.approx(2.0, rel=0.12)
    z = baseline.deviations(np.array([[16.0]]), np.array([False]))
    assert z[0, 0] == pytest.approx((16.0 - baseline.center[0]) / baseline.scale[0])


def test_log_scale_features_deviate_by_ratio_not_difference():
    X = np.full((11, 1), 0.1) * np.linspace(0.98, 1.02, 11)[:, None]
    baseline = Baseline.fit(X, np.array([True]))
    doubled, halved = baseline.deviations(np.array([[0.2], [0.05]]), np.array([True]))[:, 0]
    assert doubled == pytest.approx(-halved, rel=1e-6)
    # the spread of these windows is below the floor, so the floor sets the scale
    assert doubled == pytest.approx(np.log10(2) / LOG_SCALE_FLOOR)


def test_constant_and_missing_features_do_not_blow_up():
    X = np.column_stack([np.full(30, 400.0), np.full(30, np.nan)])
    baseline = Baseline.fit(X, np.array([False, False]))
    z = baseline.deviations(np.array([[440.0, 5.0]]), np.array([False, False]))
    assert z[0, 0] == pytest.approx(40.0 / (LINEAR_SCALE_FLOOR * 400.0))  # scale floor: a fraction of the median
    assert z[0, 1] == 0.0  # never seen -> no evidence either way


def test_deviation_profile_is_sorted_magnitudes_then_mean():
    profile = deviation_profile(np.array([[1.0, -5.0, 2.0, 0.0]]))
    np.testing.assert_allclose(profile, [[5.0, 2.0, 1.0, 2.0]])


def test_scorer_contract():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((2000, 17))
    scorer = EdgeScorer(random_state=3)
    assert scorer.fit(deviation_profile(Z)) is scorer
    again = EdgeScorer(random_state=3).fit(deviation_profile(Z))
    probe = deviation_profile(rng.standard_normal((50, 17)) * 3)
    np.testing.assert_array_equal(scorer.score_many(probe), again.score_many(probe))
    restored = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(restored.score_many(probe), scorer.score_many(probe))
    scores = scorer.score_many(probe)
    assert ((0 < scores) & (scores < 1)).all()
    assert np.mean(scorer.training_scores_ >= scorer.threshold_) == pytest.approx(0.005, abs=0.002)
    with pytest.raises(RuntimeError, match="not fitted"):
        EdgeScorer().score_many(probe)
    with pytest.raises(ValueError, match="threshold_quantile"):
        EdgeScorer(threshold_quantile=1.5).fit(probe)


def test_a_window_far_from_its_own_baseline_is_flagged_and_a_typical_one_is_not():
    rng = np.random.default_rng(1)
    assets = [np.abs(rng.normal(1.0, 0.05, size=(150, len(VIBRATION_FEATURES)))) * rng.uniform(0.5, 2) for _ in range(10)]
    model = fit_feature_set(assets, VIBRATION_FEATURES, baseline_windows=30)
    own = model.fit_baseline(assets[0][:30])
    typical = assets[0][100:101]
    broken = typical.copy()
    broken[0, VIBRATION_FEATURES.index("envelope_bpfo")] *= 50
    z = own.deviations(np.vstack([typical, broken]), model.log_mask)
    s_typical, s_broken = model.score_many(z)
    assert s_typical < model.scorer.threshold_ < s_broken


def test_fit_refuses_assets_shorter_than_the_baseline():
    with pytest.raises(ValueError, match="none left"):
        fit_feature_set([np.ones((30, 3))], ["a", "b", "c"], baseline_windows=30)
