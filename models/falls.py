"""Fall detection, stages 1 and 2: a cheap impact screen on every sample, then a classifier on its windows.

For a waist-worn 3-axis accelerometer (SisFall's ADXL345, 200 Hz).

Design
------
Stage 1 (every sample, cheap) -- ``screen_impacts``:
    1. acceleration magnitude |a| (g);
    2. impact candidates: samples with |a| >= ``peak_g`` that are the maximum of
       |a| over +-``refractory_s`` (strict on the left, non-strict on the
       right, so plateaus at the +-16 g clip yield one candidate and two
       candidates are always > refractory apart);
    3. keep a candidate only when the trunk orientation changed by at least
       ``min_angle_deg`` (angle between the mean acceleration vector in
       [i-2 s, i-1 s] and in [i+1.5 s, i+3 s]) and the body is quiet
       afterwards (std of |a| over [i+1.5 s, i+3 s] <= ``max_post_std_g``).
    A free-fall dip before the impact was evaluated too but adds nothing once
    the orientation test is in place (falls with hands on a table or from a
    chair have no dip), so it is not part of the default rule.
    The decision for impact i uses only samples in [i - PRE_S*fs, i + POST_S*fs]
    and an impact is only reported once its POST_S samples exist, so a streaming
    caller that keeps the last PRE_S + POST_S seconds plus the new chunk can call
    ``screen_impacts`` repeatedly and emit every absolute index it has not
    emitted yet.

Stage 2 (candidate window only) -- ``FallClassifier``:
    ``fall_window_features`` (peak, dip, impact width, pre/post activity,
    orientation before/after, post-impact posture, SisFall C8-style
    horizontal-plane std after a 5 Hz low-pass, free-fall velocity proxy ...)
    fed to scikit-learn's HistGradientBoostingClassifier.  The alarm threshold
    ``threshold_`` is chosen on training data only: out-of-fold probabilities
    from an inner subject-grouped split, highest threshold that keeps
    ``target_sensitivity`` of the positive windows.

Labels for stage 2 (SisFall gives one label per trial, no onset time): in a
fall trial only the largest-impact candidate that passes stage 1 is a
positive; its other candidates are left out of training (they may be the
walk before, or the subject moving after the fall).  ADL candidates that pass
stage 1 are the negatives (~140 windows; the model only ever sees screened
windows, so that is the distribution it must separate).  Also using the
~4,400 unscreened ADL impact candidates as negatives gave the same
specificity but lower and seed-dependent sensitivity (RESULTS.md).  At test
time a trial counts as detected when stage 2 fires on any stage-1 candidate
of it.

Measured numbers (development pack, 24 subjects, 1125 fall / 1705 ADL trials,
9.19 h ADL; details and alternatives in RESULTS.md; reproduce with
``OMP_NUM_THREADS=1 python run_cv.py``):
    impact candidates (|a| >= 1.8 g local maxima, 1 s refractory):
        472 windows per hour of ADL.
    stage 1 (peak 1.8 g, orientation change 30 deg, post std 0.5 g; tuned
        on all 24 subjects): 99.64 % of fall trials pass, 6.7 % of ADL trials
        pass (93.3 % specificity), 15.1 windows per hour of ADL.
    stage 1 + stage 2, 8-fold leave-subjects-out CV (seed 0): per-trial
        sensitivity 98.84 % (1112/1125), specificity 99.88 % (2/1705 ADL
        trials, D13 + D14), 0.22 false alarms per hour of ADL; 24-fold
        leave-one-subject-out gives the same; seeds 1 and 2 of the 8-fold
        split give 98.49 % / 99.88 %.
    cost: stage 1 ~150 ns per sample (numpy, batch); stage 2 ~140 us per
        window in batches, ~4 ms for a single window (sklearn call overhead);
        training on all subjects 3.6 s.
Caveat: SisFall labels whole trials; a fall trial counts as detected if any
of its windows fires, which cannot prove the alarm was at the fall itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import butter, sosfiltfilt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedGroupKFold
from threadpoolctl import threadpool_limits

FS_HZ = 200
PRE_S = 2.0   # window start before the impact: room for the pre-impact posture
POST_S = 3.0  # window end after the impact: the body has settled in SisFall falls


@dataclass(frozen=True)
class ScreenConfig:
    """Stage-1 thresholds (tuned for >= 99.5 % of development fall trials)."""

    peak_g: float = 1.8          # weakest fall impact in the pack is 1.78 g
    refractory_s: float = 1.0    # at most one candidate per second; <= PRE_S, POST_S
    min_angle_deg: float = 30.0  # trunk orientation change across the impact
    max_post_std_g: float = 0.5  # quiet after the impact (lenient: lying still)


def to_g(counts: np.ndarray, count_to_g: float) -> np.ndarray:
    """Raw ADXL345 counts -> acceleration in g (float32)."""
    return np.asarray(counts, dtype=np.float32) * np.float32(count_to_g)


def _n(seconds: float, fs_hz: float) -> int:
    return int(round(seconds * fs_hz))


def peak_candidates(acc_g: np.ndarray, fs_hz: float, config: ScreenConfig) -> np.ndarray:
    """Impact candidates before the orientation/stillness screen.

    Local maxima of |a| >= peak_g over +-refractory whose POST_S samples exist.
    """
    mag = np.linalg.norm(np.asarray(acc_g, dtype=np.float32), axis=1)
    n = mag.size
    r = max(1, _n(config.refractory_s, fs_hz))
    post = _n(POST_S, fs_hz)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    padded = np.concatenate([np.full(r, -np.inf, np.float32), mag, np.full(r, -np.inf, np.float32)])
    left = sliding_window_view(padded, r)[:n].max(axis=1)            # max |a|[i-r:i]
    right = sliding_window_view(padded, r + 1)[r:r + n].max(axis=1)  # max |a|[i:i+r+1]
    # strict on the left, >= on the right: one candidate per plateau (16 g clip)
    ok = (mag >= config.peak_g) & (mag > left) & (mag >= right)
    idx = np.flatnonzero(ok)
    return idx[idx + post <= n].astype(np.int64)


def screen_features(windows: np.ndarray, fs_hz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(peak_g, orientation change deg, post std g) per candidate window."""
    w = np.asarray(windows, dtype=np.float32)
    c = _n(PRE_S, fs_hz)
    mag = np.linalg.norm(w, axis=2)
    pre_v = w[:, : _n(PRE_S - 1.0, fs_hz)].mean(axis=1)
    post_v = w[:, c + _n(1.5, fs_hz):].mean(axis=1)
    cos = (pre_v * post_v).sum(1) / (np.linalg.norm(pre_v, axis=1) * np.linalg.norm(post_v, axis=1) + 1e-9)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    post_std = mag[:, c + _n(1.5, fs_hz):].std(axis=1)
    return mag[:, c], angle, post_std


def screen_mask(windows: np.ndarray, fs_hz: float, config: ScreenConfig) -> np.ndarray:
    """Stage-1 decision for candidate windows (bool per window)."""
    peak, angle, post_std = screen_features(windows, fs_hz)
    return (peak >= config.peak_g) & (angle >= config.min_angle_deg) & (post_std <= config.max_post_std_g)


def screen_impacts(acc_g: np.ndarray, fs_hz: float = FS_HZ, config: ScreenConfig | None = None) -> np.ndarray:
    """Stage 1: sample indices of candidate fall impacts in a contiguous (n, 3) signal in g.

    At most one per refractory period; only impacts with POST_S samples after
    them; each decision uses samples in [i - PRE_S*fs, i + POST_S*fs] only.
    """
    config = config or ScreenConfig()
    idx = peak_candidates(acc_g, fs_hz, config)
    if idx.size == 0:
        return idx
    return idx[screen_mask(candidate_windows(acc_g, idx, fs_hz), fs_hz, config)]


class StreamingScreen:
    """Stage 1 over a stream of (m, 3) chunks in g; ``push`` returns absolute impact indices.

    Keeps the last (PRE_S + POST_S) s of samples.  Only impacts that became
    decidable with the new chunk (i + POST_S*fs > end of the previous data) are
    returned: those have their full [i - PRE_S, i + POST_S] context in the
    buffer, so the result equals ``screen_impacts`` on the whole signal.
    (Taking "all indices > last emitted" instead is wrong: a sample within the
    refractory period of the buffer start can look like a local maximum.)
    """

    def __init__(self, fs_hz: float = FS_HZ, config: ScreenConfig | None = None,
                 buffer: np.ndarray | None = None, buffer_start: int = 0) -> None:
        """``buffer`` and ``buffer_start`` resume a screen from its saved ``buffer`` and ``buffer_start``."""
        self.fs_hz = fs_hz
        self.config = config or ScreenConfig()
        self._keep = _n(PRE_S + POST_S, fs_hz)
        self._post = _n(POST_S, fs_hz)
        self._buf = np.zeros((0, 3), np.float32) if buffer is None else np.asarray(buffer, np.float32).reshape(-1, 3)
        self._buf_start = int(buffer_start)  # absolute index of self._buf[0]

    @property
    def buffer(self) -> np.ndarray:
        """The samples kept for decisions still open: at most the last PRE_S + POST_S seconds."""
        return self._buf

    @property
    def buffer_start(self) -> int:
        """Absolute index (from the start of the stream) of ``buffer[0]``."""
        return self._buf_start

    @property
    def samples_seen(self) -> int:
        return self._buf_start + len(self._buf)

    def push(self, chunk_g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append a chunk; return (absolute impact indices, their candidate windows)."""
        prev_end = self._buf_start + len(self._buf)
        self._buf = np.concatenate([self._buf, np.asarray(chunk_g, np.float32)])
        local = screen_impacts(self._buf, self.fs_hz, self.config)
        local = local[local + self._buf_start + self._post > prev_end]
        wins = candidate_windows(self._buf, local, self.fs_hz)  # before trimming the buffer
        drop = max(0, len(self._buf) - self._keep)
        idx = local + self._buf_start
        self._buf, self._buf_start = self._buf[drop:], self._buf_start + drop
        return idx, wins


def window_samples(fs_hz: float = FS_HZ) -> int:
    """Samples in a candidate window [impact - PRE_S, impact + POST_S)."""
    return _n(PRE_S, fs_hz) + _n(POST_S, fs_hz)


def candidate_windows(acc_g: np.ndarray, impacts: np.ndarray, fs_hz: float = FS_HZ) -> np.ndarray:
    """(k, window_samples, 3) windows [i - PRE_S, i + POST_S); impact at index PRE_S*fs.

    Impacts closer than PRE_S to the start of the signal are edge-padded (only
    the first seconds of a stream; a buffered streaming caller never hits it).
    """
    acc_g = np.asarray(acc_g, dtype=np.float32)
    pre, post = _n(PRE_S, fs_hz), _n(POST_S, fs_hz)
    impacts = np.asarray(impacts, dtype=np.int64)
    if impacts.size == 0:
        return np.zeros((0, pre + post, 3), np.float32)
    padded = np.pad(acc_g, ((pre, post), (0, 0)), mode="edge")
    rows = impacts[:, None] + np.arange(pre + post)[None, :]  # padded index of i - pre + j
    return padded[rows]


FEATURE_NAMES: tuple[str, ...] = (
    "peak_g", "dip_pre1s_g", "dip_to_peak_s", "ff_velocity_pre1s", "width_above_1p5g_s",
    "mean_mag_pm0p5s", "std_mag_pre", "std_mag_post0p5_1p5", "std_mag_post1p5_3",
    "mean_mag_post1p5_3", "angle_change_deg", "pre_x", "pre_y", "pre_z", "post_x", "post_y", "post_z",
    "c8_hstd_max", "c8_hstd_post", "jerk_max", "range_x", "range_y", "range_z",
    "energy_impact", "p90_mag_post", "n_above_2g",
)


_SOS_CACHE: dict[float, np.ndarray] = {}


def _lowpass5(x: np.ndarray, fs_hz: float) -> np.ndarray:
    sos = _SOS_CACHE.get(fs_hz)
    if sos is None:
        sos = _SOS_CACHE[fs_hz] = butter(4, 5.0, fs=fs_hz, output="sos")
    return sosfiltfilt(sos, x, axis=1)


def fall_window_features(windows: np.ndarray, fs_hz: float = FS_HZ) -> np.ndarray:
    """(k, F) float32 features of candidate windows (columns: FEATURE_NAMES)."""
    w = np.asarray(windows, dtype=np.float32)
    k = w.shape[0]
    if k == 0:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    c = _n(PRE_S, fs_hz)
    s1, s05, s15 = _n(1.0, fs_hz), _n(0.5, fs_hz), _n(1.5, fs_hz)
    mag = np.linalg.norm(w, axis=2)
    peak = mag[:, c]
    pre1 = mag[:, c - s1:c]
    dip = pre1.min(1)
    dip_to_peak = (s1 - pre1.argmin(1)) / fs_hz
    # free fall: integral of (1 - |a|) before the impact ~ downward speed (g*s)
    ffv = np.clip(1.0 - pre1, 0, None).sum(1) / fs_hz
    width = (mag[:, c - s05:c + s05] > 1.5).sum(1) / fs_hz
    mean_pm = mag[:, c - s05:c + s05].mean(1)
    std_pre = mag[:, : c - s05].std(1)
    std_p1 = mag[:, c + s05:c + s15].std(1)
    std_p2 = mag[:, c + s15:].std(1)
    mean_p2 = mag[:, c + s15:].mean(1)
    _, angle, _ = screen_features(w, fs_hz)
    pre_v = w[:, : c - s1].mean(1)
    post_v = w[:, c + s15:].mean(1)
    pre_v = pre_v / (np.linalg.norm(pre_v, axis=1, keepdims=True) + 1e-9)
    post_v = post_v / (np.linalg.norm(post_v, axis=1, keepdims=True) + 1e-9)
    # SisFall C8: std of the horizontal-plane magnitude sqrt(x^2 + z^2) after a
    # 5 Hz low-pass, over 1 s windows (y is the vertical axis when standing)
    lp = _lowpass5(w, fs_hz)
    h = np.sqrt(lp[..., 0] ** 2 + lp[..., 2] ** 2)
    hs = sliding_window_view(h, s1, axis=1)[:, ::_n(0.1, fs_hz)].std(-1)
    c8_max = hs.max(1)
    c8_post = hs[:, -1]
    jerk = np.abs(np.diff(mag[:, c - s05:c + s05], axis=1)).max(1) * fs_hz
    rng = w[:, c - s1:c + s1].max(1) - w[:, c - s1:c + s1].min(1)
    energy = ((mag[:, c - s05:c + s05] - 1.0) ** 2).sum(1) / fs_hz
    p90_post = np.percentile(mag[:, c + s05:], 90, axis=1)
    n2 = (mag > 2.0).sum(1) / fs_hz
    cols = [peak, dip, dip_to_peak, ffv, width, mean_pm, std_pre, std_p1, std_p2, mean_p2, angle,
            pre_v[:, 0], pre_v[:, 1], pre_v[:, 2], post_v[:, 0], post_v[:, 1], post_v[:, 2],
            c8_max, c8_post, jerk, rng[:, 0], rng[:, 1], rng[:, 2], energy, p90_post, n2]
    return np.stack(cols, axis=1).astype(np.float32)


def subject_folds(groups: np.ndarray, labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold id per element of ``groups`` (a subject per trial or window): whole groups go to one fold,
    and positives are spread over the folds (scikit-learn's ``StratifiedGroupKFold``).

    Subjects a and b each had a fall: they land in different folds.

    >>> subject_folds(np.array(["a", "a", "b", "b", "c", "c", "d", "d"]), np.array([1, 0, 1, 0, 0, 0, 0, 0]), 2, seed=0).tolist()
    [1, 1, 0, 0, 0, 0, 1, 1]
    """
    groups = np.asarray(groups)
    n_splits = min(n_folds, len(np.unique(groups)))
    folds = np.full(len(groups), -1)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(groups)), np.asarray(labels).astype(int), groups)):
        folds[held_out] = fold
    return folds


class FallClassifier:
    """Stage 2: gradient boosting on ``fall_window_features``.

    ``fit(windows, labels, groups=None)``; ``groups`` (subject per window)
    makes the inner threshold split subject-wise (recommended).
    ``threshold_`` = highest threshold keeping ``target_sensitivity`` of the
    positive windows in inner out-of-fold predictions (training data only).
    """

    def __init__(self, target_sensitivity: float = 0.99, inner_folds: int = 4, seed: int = 0,
                 fs_hz: float = FS_HZ, n_threads: int | None = 1, **hgb_params: Any) -> None:
        self.target_sensitivity = target_sensitivity
        # 1 thread: OpenMP oversubscription on a busy 2-core host made each
        # fit ~14x slower (575 s vs ~40 s for the 8-fold CV)
        self.n_threads = n_threads
        self.inner_folds = inner_folds
        self.seed = seed
        self.fs_hz = fs_hz
        self.hgb_params = {"max_iter": 300, "learning_rate": 0.05, "max_leaf_nodes": 15,
                           "min_samples_leaf": 10, "l2_regularization": 1.0, **hgb_params}

    def _new_model(self) -> HistGradientBoostingClassifier:
        # class_weight balances the ~1:5 positive:negative ratio
        return HistGradientBoostingClassifier(random_state=self.seed, class_weight="balanced", **self.hgb_params)

    def fit(self, windows: np.ndarray | None, labels: np.ndarray, groups: np.ndarray | None = None,
            features: np.ndarray | None = None) -> "FallClassifier":
        with threadpool_limits(self.n_threads):
            return self._fit(windows, labels, groups, features)

    def _fit(self, windows: np.ndarray | None, labels: np.ndarray, groups: np.ndarray | None,
             features: np.ndarray | None) -> "FallClassifier":
        x = fall_window_features(windows, self.fs_hz) if features is None else features
        y = np.asarray(labels).astype(bool)
        if groups is None:  # no subject ids: plain interleaved folds
            groups = np.arange(len(y))
        groups = np.asarray(groups)
        folds = subject_folds(groups, y, self.inner_folds, self.seed)
        oof = np.zeros(len(y))
        for f in range(self.inner_folds):
            te = folds == f
            if not te.any() or te.all():
                continue
            oof[te] = self._new_model().fit(x[~te], y[~te]).predict_proba(x[te])[:, 1]
        # highest threshold with >= target of positives at or above it
        pos = np.sort(oof[y])
        k = int(np.floor((1.0 - self.target_sensitivity) * pos.size))
        self.threshold_ = float(pos[k]) if pos.size else 0.5
        self.oof_proba_ = oof
        self.model_ = self._new_model().fit(x, y)
        return self

    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0)
        with threadpool_limits(self.n_threads):
            return self.model_.predict_proba(features)[:, 1]

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """(k,) probability that each window is a fall impact."""
        return self.predict_proba_features(fall_window_features(windows, self.fs_hz))

    def fires(self, windows: np.ndarray) -> np.ndarray:
        """(k,) bool: stage 2 raises an alarm for the window."""
        return self.predict_proba(windows) >= self.threshold_


def stage2_labels(trial: np.ndarray, passed: np.ndarray, peak: np.ndarray, is_fall: np.ndarray,
                  negatives_from_all: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(use, label) per candidate: largest passing impact of a fall trial = 1,
    ADL candidates = 0 (all of them, or only stage-1 passers), rest unused."""
    fall_c = is_fall[trial]
    score = np.where(passed & fall_c, peak, -np.inf)
    best = np.full(is_fall.size, -np.inf)
    np.maximum.at(best, trial, score)
    pos = fall_c & passed & (score == best[trial]) & np.isfinite(score)
    # ties (two equal peaks, e.g. both clipped at 16 g): keep the first only
    first = np.zeros(pos.size, bool)
    _, fi = np.unique(trial[pos], return_index=True)
    first[np.flatnonzero(pos)[fi]] = True
    neg = ~fall_c & (np.ones_like(passed) if negatives_from_all else passed)
    return first | neg, first
