"""The SYNTHETIC wearer simulator against fall-detection stages 1 and 2 (no real data needed)."""
import time

import numpy as np
import pytest

from vigil.models.falls import ScreenConfig, candidate_windows, screen_features, screen_impacts
from vigil.models.wearer_sim import ADL_ACTIVITIES, CLIP_G, FALL_ACTIVITIES, FS_HZ, LSB_G, SimulatedTrial, simulate_trial, simulate_trials
from vigil.streams.evaluation.falls import summarize
from vigil.streams.falls.offline import FallCandidates, screen_trials
from vigil.streams.falls.training import fit_fall_classifier

N_FALLS, N_ADL = 200, 300


@pytest.fixture(scope="module")
def train_trials() -> list[SimulatedTrial]:
    return simulate_trials(N_FALLS, N_ADL, seed=0)


@pytest.fixture(scope="module")
def test_trials() -> list[SimulatedTrial]:
    return simulate_trials(N_FALLS, N_ADL, seed=1)


def stage1_candidates(trials: list[SimulatedTrial]) -> FallCandidates:
    """Stage 1 over the trials, as the evaluation screens a pack; trial index % 8 stands in for the subject."""
    return screen_trials([t.acc_g for t in trials], np.array([t.is_fall for t in trials]),
                         np.array([f"group-{i % 8}" for i in range(len(trials))]), np.array([t.activity for t in trials]), FS_HZ)


def stage1_passed(c: FallCandidates) -> np.ndarray:
    """(n_trials,) bool: stage 1 let at least one candidate of the trial through."""
    out = np.zeros(c.is_fall.size, bool)
    np.logical_or.at(out, c.trial, c.passed)
    return out


@pytest.fixture(scope="module")
def test_candidates(test_trials):
    return stage1_candidates(test_trials)


def main_impact(trial: SimulatedTrial) -> tuple[float, float, float]:
    """(peak g, orientation change deg, post std g) of the trial's largest stage-1 impact."""
    idx = screen_impacts(trial.acc_g, FS_HZ, ScreenConfig())
    assert idx.size, f"{trial.activity}: stage 1 found no impact"
    peak, angle, post_std = screen_features(candidate_windows(trial.acc_g, idx, FS_HZ), FS_HZ)
    k = int(np.argmax(peak))
    return float(peak[k]), float(angle[k]), float(post_std[k])


def test_same_seed_same_trials_other_seed_other_trials():
    a, b, c = simulate_trials(6, 9, seed=3), simulate_trials(6, 9, seed=3), simulate_trials(6, 9, seed=4)
    assert [t.activity for t in a] == [t.activity for t in b]
    assert all(np.array_equal(x.acc_g, y.acc_g) for x, y in zip(a, b))
    assert not any(np.array_equal(x.acc_g, y.acc_g) for x, y in zip(a, c))


def test_counts_labels_and_shuffled_order():
    trials = simulate_trials(20, 30, seed=7)
    assert sum(t.is_fall for t in trials) == 20 and len(trials) == 50
    assert {t.activity for t in trials if t.is_fall} == set(FALL_ACTIVITIES)
    assert {t.activity for t in trials if not t.is_fall} == set(ADL_ACTIVITIES)
    assert all(t.is_fall == (t.activity in FALL_ACTIVITIES) for t in trials)
    labels = [t.is_fall for t in trials]
    assert labels != sorted(labels) and labels != sorted(labels, reverse=True)


def test_shape_dtype_resolution_and_clip(train_trials):
    for t in train_trials[:60]:
        assert t.acc_g.shape == (15 * FS_HZ, 3) and t.acc_g.dtype == np.float32
        assert np.abs(t.acc_g).max() <= CLIP_G
        counts = t.acc_g / LSB_G
        assert np.array_equal(counts, np.rint(counts))  # ADXL345 steps of 3.9 mg
    clipped = [t for t in train_trials if t.is_fall and np.abs(t.acc_g).max() == CLIP_G]
    assert 5 <= len(clipped) <= 25  # 10 % of the 120 slip/trip falls are severe and clip
    assert all(np.abs(t.acc_g).max() < CLIP_G for t in train_trials if not t.is_fall)


def test_standing_reads_minus_one_g_on_y_with_sensor_noise():
    rng = np.random.default_rng(11)
    still = np.stack([simulate_trial("bend_pick_up", rng).acc_g[:FS_HZ] for _ in range(20)])  # first second: standing
    mean = still.mean(axis=1)
    assert np.all(mean[:, 1] < -0.85) and np.all(np.abs(mean[:, 0]) < 0.35)
    assert np.all(np.abs(np.linalg.norm(mean, axis=1) - 1.0) < 0.15)
    noise = still.std(axis=1).mean(axis=1)
    assert np.all((noise > 0.008) & (noise < 0.025))


def test_other_fs_and_duration_and_bad_arguments():
    t = simulate_trial("fall_forward", np.random.default_rng(0), fs_hz=100.0, seconds=12.0)
    assert t.acc_g.shape == (1200, 3) and len(screen_impacts(t.acc_g, 100.0)) >= 1
    with pytest.raises(ValueError, match="unknown activity"):
        simulate_trial("skydive", np.random.default_rng(0))
    with pytest.raises(ValueError, match="seconds"):
        simulate_trial("walk", np.random.default_rng(0), seconds=5.0)


def test_fifty_trials_well_under_a_second():
    start = time.perf_counter()
    simulate_trials(20, 30, seed=2)
    assert time.perf_counter() - start < 0.5


def test_stage1_passes_falls_and_few_adl(test_candidates):
    passed = stage1_passed(test_candidates)
    falls, adl = test_candidates.is_fall, ~test_candidates.is_fall
    assert passed[falls].mean() >= 0.97
    assert 0.02 <= passed[adl].mean() <= 0.15  # a few ADL reach stage 2, as in SisFall (6.7 %)
    # impacts that stage 1 must reject: gait, landings, trips, seat contacts
    act = test_candidates.activity
    for kind in ("walk", "jog", "jump", "stumble_recover", "sit_down"):
        trials = np.flatnonzero(act == kind)
        assert np.isin(trials, test_candidates.trial).mean() > 0.5, kind
        assert not passed[trials].any(), kind


def test_fall_impact_and_orientation_change_in_documented_ranges(test_trials):
    for t in (t for t in test_trials if t.is_fall):
        peak, angle, post_std = main_impact(t)
        assert 55.0 <= angle <= 110.0, (t.activity, angle)  # 60-100 deg by construction, +-sensor offsets
        assert post_std < 0.1  # lying still after the fall
        if t.activity == "faint_from_sitting":
            assert 1.9 <= peak <= 3.4, peak
        elif np.abs(t.acc_g).max() < CLIP_G:
            assert 2.4 <= peak <= 12.6, (t.activity, peak)
        else:  # severe: an axis clipped
            assert peak >= CLIP_G, (t.activity, peak)


def test_faint_from_sitting_has_no_free_fall_but_slip_falls_do(test_trials):
    def lowest_before_impact(t: SimulatedTrial) -> float:
        i = screen_impacts(t.acc_g)[-1]  # the fall's own impact (the last one: lying still after it)
        return float(np.linalg.norm(t.acc_g[i - FS_HZ:i], axis=1).min())

    faint = [lowest_before_impact(t) for t in test_trials if t.activity == "faint_from_sitting"]
    slips = [lowest_before_impact(t) for t in test_trials if t.activity in ("fall_forward", "fall_backward", "fall_lateral")]
    assert min(faint) > 0.6
    assert np.median(slips) < 0.5


def test_adl_ranges(test_trials):
    def peak(t):
        return float(np.linalg.norm(t.acc_g, axis=1).max())

    def lasting_turn_deg(t):
        a, b = t.acc_g[: 2 * FS_HZ].mean(0), t.acc_g[-2 * FS_HZ:].mean(0)
        return float(np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))))

    by = {a: [t for t in test_trials if t.activity == a] for a in ADL_ACTIVITIES}
    assert max(peak(t) for t in by["lie_down"] + by["bend_pick_up"]) < 1.5
    assert all(lasting_turn_deg(t) > 50 for t in by["lie_down"] + by["flop_onto_bed"])
    assert all(5 < lasting_turn_deg(t) < 30 for t in by["sit_down"])
    assert all(lasting_turn_deg(t) < 10 for t in by["walk"] + by["jog"] + by["jump"] + by["stumble_recover"])
    jog = [peak(t) for t in by["jog"]]
    assert 2.3 < min(jog) and max(jog) < 4.5 and 2.8 < np.median(jog) < 3.8
    assert 1.4 < np.median([peak(t) for t in by["walk"]]) < 2.4


def test_stage2_trained_on_one_seed_detects_falls_of_another(train_trials, test_candidates):
    clf = fit_fall_classifier(stage1_candidates(train_trials))
    c = test_candidates
    fires = np.zeros(c.passed.size, bool)
    fires[c.passed] = clf.predict_proba_features(c.features[c.passed]) >= clf.threshold_
    report = summarize(c, np.ones(c.is_fall.size, bool), fires)
    assert (report["fall_trials"], report["adl_trials"]) == (N_FALLS, N_ADL)
    assert report["sensitivity"] >= 0.95 and report["specificity"] >= 0.99
