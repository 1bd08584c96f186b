import pickle

import numpy as np
import pytest

from vigil.models.cloud import CloudScorer, sliding_sequences, squash


@pytest.fixture(scope="module")
def periodic():
    rng = np.random.default_rng(0)
    t = np.arange(900)
    return np.column_stack([np.sin(2 * np.pi * t / 15), np.cos(2 * np.pi * t / 15), np.sin(2 * np.pi * t / 45)]) + 0.05 * rng.standard_normal((900, 3))


@pytest.fixture(scope="module")
def scorer(periodic):
    return CloudScorer(window=15, hidden=16, epochs=30, random_state=0).fit(sliding_sequences(periodic[:700], 15)[14:], ["a", "b", "c"])


def test_it_learns_a_periodic_sequence(scorer, periodic):
    held_out = sliding_sequences(periodic, 15)[720:]
    scores = scorer.score_many(held_out)
    # Unseen healthy periods score like the training ones: almost all under the 99 % threshold.
    assert np.mean(scores < scorer.threshold_) > 0.95
    assert abs(float(np.median(scores))) < 1.0


def test_an_injected_spike_scores_higher(scorer, periodic):
    held_out = sliding_sequences(periodic, 15)[720:820]
    spiked = held_out.copy()
    spiked[:, 7, 1] += 5.0
    normal, anomalous = scorer.score_many(held_out), scorer.score_many(spiked)
    assert np.all(anomalous > normal)
    assert np.all(anomalous > scorer.threshold_)


def test_a_broken_rhythm_scores_higher_than_the_rhythm(scorer, periodic):
    shuffled = periodic[720:735][np.random.default_rng(1).permutation(15)]
    assert scorer.score_many(shuffled[None])[0] > scorer.threshold_ > scorer.score_many(periodic[None, 720:735])[0]


def test_training_is_seeded_and_reproducible(periodic):
    S = sliding_sequences(periodic[:300], 10)[9:]
    a = CloudScorer(window=10, hidden=8, epochs=3, random_state=5).fit(S)
    b = CloudScorer(window=10, hidden=8, epochs=3, random_state=5).fit(S)
    c = CloudScorer(window=10, hidden=8, epochs=3, random_state=6).fit(S)
    np.testing.assert_array_equal(a.score_many(S[:50]), b.score_many(S[:50]))
    assert not np.array_equal(a.score_many(S[:50]), c.score_many(S[:50]))


def test_the_pickle_holds_numpy_only_and_scores_identically(scorer, periodic):
    payload = pickle.dumps(scorer)
    assert b"torch" not in payload
    restored = pickle.loads(payload)
    S = sliding_sequences(periodic, 15)[800:]
    np.testing.assert_allclose(restored.score_many(S), scorer.score_many(S), rtol=1e-6)
    assert restored.feature_names_ == ("a", "b", "c")


def test_sliding_sequences_pad_with_baseline_zeros():
    S = sliding_sequences(np.arange(1.0, 5.0)[:, None], 3)
    assert S[:, :, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]


def test_squash_keeps_sign_and_compresses():
    np.testing.assert_allclose(squash(np.array([-(np.e - 1), 0.0, 1000.0])), [-1.0, 0.0, np.log(1001.0)])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="sequences must be"):
        CloudScorer(window=4).fit(np.zeros((10, 5, 2)))
    with pytest.raises(RuntimeError, match="not fitted"):
        CloudScorer().score_many(np.zeros((1, 16, 2)))
