"""SisFall-layout packs: training and evaluation of fall-detection stages 1 and 2, by subject.

Protocol (issue 6): a trial counts as detected when stage 2 fires on any
stage-1 candidate in it; sensitivity and specificity are per trial; false
alarms per hour of ADL are given for every stage. Models are only ever
judged on subjects they were not trained on: ``evaluate_falls`` skips the
model's training subjects, and ``cross_validate_falls`` holds out whole
subjects per fold (never random windows: they leak the subject).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from models.falls import (
    FEATURE_NAMES, PRE_S, FallClassifier, ScreenConfig, candidate_windows, fall_window_features, peak_candidates, screen_mask,
    stage2_labels, subject_folds, to_g,
)

SISFALL_ARRAYS = ("acc", "trial_offsets", "subject", "activity", "is_fall", "count_to_g", "fs_hz")


@dataclass(frozen=True)
class FallCandidates:
    """Every impact candidate (|a| >= peak_g local maximum) of every trial, with its stage-1 verdict and features."""

    features: np.ndarray  # (k, F)
    trial: np.ndarray  # (k,) trial index of each candidate
    passed: np.ndarray  # (k,) stage 1 let it through
    peak_g: np.ndarray  # (k,)
    is_fall: np.ndarray  # per trial
    subject: np.ndarray  # per trial
    activity: np.ndarray  # per trial
    trial_seconds: np.ndarray  # per trial
    fs_hz: float
    config: ScreenConfig

    def adl_hours(self, trials: np.ndarray) -> float:
        return float(self.trial_seconds[trials & ~self.is_fall].sum() / 3600.0)


def load_candidates(path: str | Path, config: ScreenConfig = ScreenConfig()) -> FallCandidates:
    """Stage 1 over every trial of a SisFall-layout pack (see ../shared/datasets/README.md)."""
    with np.load(path) as d:
        missing = [a for a in SISFALL_ARRAYS if a not in d.files]
        if missing:
            raise ValueError(f"{path} is not a SisFall-layout pack: it lacks {missing}")
        offsets, fs = d["trial_offsets"], float(d["fs_hz"])
        acc = to_g(d["acc"], float(d["count_to_g"]))
        is_fall, subject, activity = d["is_fall"].astype(bool), d["subject"], d["activity"]
    trials = [acc[offsets[t]:offsets[t + 1]] for t in range(len(offsets) - 1)]
    return screen_trials(trials, is_fall, subject, activity, fs, config)


def screen_trials(trials: Sequence[np.ndarray], is_fall: np.ndarray, subject: np.ndarray, activity: np.ndarray, fs_hz: float,
                  config: ScreenConfig = ScreenConfig()) -> FallCandidates:
    """Stage 1 over trials given as (n, 3) signals in g, with a label, subject and activity per trial."""
    features, trial_of, passed, peaks = [], [], [], []
    for t, trial in enumerate(trials):
        windows = candidate_windows(trial, peak_candidates(trial, fs_hz, config), fs_hz)
        features.append(fall_window_features(windows, fs_hz))
        passed.append(screen_mask(windows, fs_hz, config))
        peaks.append(np.linalg.norm(windows[:, int(round(PRE_S * fs_hz))], axis=1))
        trial_of.append(np.full(len(windows), t))
    return FallCandidates(
        features=np.concatenate(features), trial=np.concatenate(trial_of), passed=np.concatenate(passed),
        peak_g=np.concatenate(peaks), is_fall=np.asarray(is_fall, bool), subject=np.asarray(subject), activity=np.asarray(activity),
        trial_seconds=np.array([len(t) for t in trials]) / fs_hz, fs_hz=fs_hz, config=config,
    )


def fit_fall_classifier(data: FallCandidates, subjects: Iterable[str] | None = None, *, seed: int = 0,
                        target_sensitivity: float = 0.99) -> FallClassifier:
    """Stage 2 from the candidates of ``subjects`` (default all): the largest stage-1 candidate of each
    fall trial is positive, stage-1 candidates of ADL trials negative (``models.falls.stage2_labels``)."""
    use, label = stage2_labels(data.trial, data.passed, data.peak_g, data.is_fall)
    if subjects is not None:
        use &= np.isin(data.subject, list(subjects))[data.trial]
    if not label[use].any() or label[use].all():
        raise ValueError("training needs both fall and ADL trials among the chosen subjects")
    clf = FallClassifier(target_sensitivity=target_sensitivity, seed=seed, fs_hz=data.fs_hz)
    return clf.fit(None, label[use], groups=data.subject[data.trial][use], features=data.features[use])


def summarize(data: FallCandidates, judged: np.ndarray, fires: np.ndarray) -> dict[str, Any]:
    """The evaluation contract's keys over the trials in ``judged`` (bool per trial), given stage 2's
    verdict per candidate (``fires``, False for candidates stage 1 stopped)."""
    n = data.is_fall.size
    stage1 = np.zeros(n, bool)
    np.logical_or.at(stage1, data.trial, data.passed)
    detected = np.zeros(n, bool)
    np.logical_or.at(detected, data.trial, fires & data.passed)
    falls, adl = judged & data.is_fall, judged & ~data.is_fall
    hours = data.adl_hours(judged)
    on_adl = adl[data.trial]

    def per_hour(mask: np.ndarray) -> float | None:
        return round(float((mask & on_adl).sum() / hours), 3) if hours else None

    per_subject = []
    for s in np.unique(data.subject[judged]):
        m = judged & (data.subject == s)
        per_subject.append({"subject": str(s), "falls": int((m & data.is_fall).sum()), "adl": int((m & ~data.is_fall).sum()),
                            "detected": int((m & data.is_fall & detected).sum()),
                            "false_alarm_trials": int((m & ~data.is_fall & detected).sum())})
    false_alarms: dict[str, int] = {}
    for a in data.activity[adl & detected]:
        false_alarms[str(a)] = false_alarms.get(str(a), 0) + 1
    return {
        "fall_trials": int(falls.sum()),
        "adl_trials": int(adl.sum()),
        "adl_hours": round(hours, 3),
        "sensitivity": round(float(detected[falls].mean()), 4) if falls.any() else None,
        "specificity": round(float(1.0 - detected[adl].mean()), 4) if adl.any() else None,
        "false_alarms_per_hour_adl": {"impacts": per_hour(np.ones_like(data.passed)), "stage1": per_hour(data.passed),
                                      "stage2": per_hour(fires & data.passed)},
        "stage1_pass_rate": round(float(stage1[falls].mean()), 4) if falls.any() else None,
        "stage1_adl_pass_rate": round(float(stage1[adl].mean()), 4) if adl.any() else None,
        "stage2_pass_rate": round(float(detected[falls].sum() / max(1, stage1[falls].sum())), 4),
        "stage2_adl_pass_rate": round(float(detected[adl].sum() / max(1, stage1[adl].sum())), 4),
        "false_alarm_trials_by_activity": dict(sorted(false_alarms.items(), key=lambda kv: -kv[1])),
        "missed_falls": [f"{data.subject[t]}/{data.activity[t]}" for t in np.flatnonzero(falls & ~detected)],
        "per_subject": per_subject,
    }


def cross_validate_falls(data: FallCandidates, *, folds: int = 8, seed: int = 0) -> dict[str, Any]:
    """Leave-subjects-out cross-validation: each fold's subjects are judged by a model trained without them."""
    fold_of_trial = subject_folds(data.subject, folds, seed, set(data.subject[data.is_fall]))
    fires = np.zeros(len(data.trial), bool)
    thresholds = []
    for f in range(folds):
        held_out = fold_of_trial == f
        clf = fit_fall_classifier(data, np.unique(data.subject[~held_out]), seed=seed)
        candidates = held_out[data.trial] & data.passed
        fires[candidates] = clf.predict_proba_features(data.features[candidates]) >= clf.threshold_
        thresholds.append(round(clf.threshold_, 4))
    return {**summarize(data, np.ones(data.is_fall.size, bool), fires), "cv": {"by": "subjects", "folds": folds, "seed": seed,
                                                                              "thresholds": thresholds}}


def evaluate_falls(data: FallCandidates, clf: FallClassifier, trained_subjects: Iterable[str]) -> dict[str, Any]:
    """The model on every subject of the pack it was not trained on."""
    seen = set(trained_subjects)
    judged = ~np.isin(data.subject, list(seen))
    if not judged.any():
        raise ValueError("every subject of this pack was in the model's training data; evaluate on other subjects, "
                         "or use --cv subjects for leave-subjects-out cross-validation")
    candidates = judged[data.trial] & data.passed
    fires = np.zeros(len(data.trial), bool)
    fires[candidates] = clf.predict_proba_features(data.features[candidates]) >= clf.threshold_
    skipped = sorted(seen & set(data.subject.tolist()))
    return {**summarize(data, judged, fires), "skipped_training_subjects": skipped}


def fall_model_metadata(data: FallCandidates, clf: FallClassifier, subjects: list[str], pack: str | Path) -> dict[str, Any]:
    return {
        "source": {"pack": str(pack), "subjects": subjects},
        "trained_subjects": subjects,
        "screen": data.config.__dict__,
        "feature_names": list(FEATURE_NAMES),
        "threshold": clf.threshold_,
        "thresholds": {"stage2": clf.threshold_},
        "fs_hz": data.fs_hz,
    }
