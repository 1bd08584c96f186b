"""SisFall-layout packs: evaluation of fall-detection stages 1 and 2, by subject.

Protocol (issue 6): a trial counts as detected when stage 2 fires on any
stage-1 candidate in it; sensitivity and specificity are per trial; false
alarms per hour of ADL are given for every stage. Models are only ever
judged on subjects they were not trained on: ``evaluate_falls`` skips the
model's training subjects, and ``cross_validate_falls`` holds out whole
subjects per fold (never random windows: they leak the subject).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from vigil.models.falls import FallClassifier, subject_folds
from vigil.streams.falls.offline import FallCandidates
from vigil.streams.falls.training import fit_fall_classifier


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
    fold_of_trial = subject_folds(data.subject, data.is_fall, folds, seed)
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
