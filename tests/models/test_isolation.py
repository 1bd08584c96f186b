import pickle

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from vigil.models.edge import EdgeScorer
from vigil.models.isolation import MAX_ROWS_ALL_TREES_AT_ONCE, FlatForest, average_path_length


@pytest.fixture(scope="module")
def training_rows():
    return np.random.default_rng(0).standard_normal((2000, 5))


@pytest.mark.parametrize("options", [
    {},
    {"max_features": 0.6},  # each tree sees its own subset of columns
    {"bootstrap": True, "max_samples": 64},  # repeated samples: leaves that hold several
    {"max_samples": 5},  # shallow trees, most leaves hold more than one sample
])
@pytest.mark.parametrize("rows", [1, 17, MAX_ROWS_ALL_TREES_AT_ONCE, MAX_ROWS_ALL_TREES_AT_ONCE + 1, 700])
def test_scores_equal_scikit_learns_to_the_last_bit(training_rows, options, rows):
    forest = IsolationForest(n_estimators=60, random_state=1, **options).fit(training_rows)
    rng = np.random.default_rng(rows)
    X = np.vstack([training_rows[:rows // 2], 4 * rng.standard_normal((rows - rows // 2, 5))])
    expected = forest.score_samples(X)
    assert np.array_equal(FlatForest.from_forest(forest).score_samples(X), expected)
    if rows > 1:  # the batch holds outliers and typical rows
        assert expected.max() - expected.min() > 0.1


def test_a_value_on_a_threshold_goes_left_after_the_float32_cast(training_rows):
    forest = IsolationForest(n_estimators=20, random_state=2).fit(training_rows)
    flat = FlatForest.from_forest(forest)
    node = int(np.flatnonzero(flat.feature >= 0)[0])
    row = training_rows[:1].copy()
    # just above the threshold in float64, equal to it once cast to float32 as scikit-learn casts
    row[0, flat.feature[node]] = np.nextafter(np.float32(flat.threshold[node]), np.float32(np.inf), dtype=np.float32) - 1e-12
    assert np.array_equal(flat.score_samples(row), forest.score_samples(row))


def test_rows_with_missing_values_are_scored_by_the_forest_or_refused(training_rows):
    forest = IsolationForest(n_estimators=30, random_state=3).fit(training_rows)
    flat = FlatForest.from_forest(forest)
    X = training_rows[:4].copy()
    X[1, 2], X[3, 0] = np.nan, np.inf
    assert np.array_equal(flat.score_samples(X, forest), forest.score_samples(X))
    with pytest.raises(ValueError, match="NaN or infinity"):
        flat.score_samples(X)
    with pytest.raises(ValueError, match="rows of 5 features"):
        flat.score_samples(X[:, :4])


def test_a_forest_of_one_sample_scores_every_row_one_half():
    forest = IsolationForest(n_estimators=5, random_state=0).fit(np.zeros((1, 2)))
    X = np.array([[0.0, 0.0], [5.0, -5.0]])
    assert FlatForest.from_forest(forest).score_samples(X).tolist() == forest.score_samples(X).tolist() == [-0.5, -0.5]


def test_average_path_length_matches_the_harmonic_approximation():
    n = np.array([0, 1, 2, 3, 256])
    expected = [0.0, 0.0, 1.0, 2 * (np.log(2) + np.euler_gamma) - 4 / 3, 2 * (np.log(255) + np.euler_gamma) - 2 * 255 / 256]
    assert average_path_length(n) == pytest.approx(expected, rel=1e-15)


def test_edge_scorer_pickles_without_its_flat_copy(training_rows):
    scorer = EdgeScorer(n_estimators=40, random_state=0).fit(training_rows)
    before = pickle.dumps(scorer)
    scores = scorer.score_many(training_rows[:10])  # builds the flat copy
    assert "_flat" in scorer.__dict__
    assert pickle.dumps(scorer) == before  # the artifact, and so its sha256, does not change
    assert np.array_equal(pickle.loads(before).score_many(training_rows[:10]), scores)
    assert np.array_equal(scores, -scorer.forest_.score_samples(training_rows[:10]))
