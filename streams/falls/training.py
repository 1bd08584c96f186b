"""The one training path of the fall topology: stage 2 fitted on screened candidates, into the registry.

`vigil train falls`, the demo, the evaluator's cross-validation, the docker trainer and the
test fixtures all fit through ``fit_fall_classifier`` here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from vigil.models.falls import FEATURE_NAMES, FallClassifier, stage2_labels
from vigil.models.registry import FALL_TIER, ModelRegistry
from vigil.models.training import fingerprint
from vigil.streams.falls.offline import FallCandidates, screen_trials
from vigil.streams.runtime.settings import Settings


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


def save_fall_model(settings: Settings, data: FallCandidates, subjects: list[str] | None, source: Any, *, seed: int = 0,
                    extra: dict[str, Any] | None = None) -> tuple[str, FallClassifier]:
    """Stage 2 fitted on the screened candidates of ``subjects`` (None: all) and activated in the registry;
    (version, model)."""
    subjects = sorted(set(data.subject.tolist())) if subjects is None else subjects
    clf = fit_fall_classifier(data, subjects, seed=seed)
    chosen = np.isin(data.subject, subjects)[data.trial]
    metadata = {**fall_model_metadata(data, clf, subjects, source), "training_data_fingerprint": fingerprint([data.features[chosen]]),
                **(extra or {})}
    return ModelRegistry(settings.models_dir).save(FALL_TIER, clf, metadata, activate=True), clf


def train_falls_simulated(settings: Settings, *, falls: int = 240, adl: int = 360, seed: int = 0) -> tuple[str, dict[str, Any]]:
    """Stage 2 fitted on SYNTHETIC wearer trials (``models.wearer_sim``), screened by the same stage 1, into the registry.

    For demos and machines without a dataset; a real deployment trains on recorded falls
    (`vigil train falls --pack`). Trials are grouped into 8 pseudo-subjects for the inner threshold split.
    """
    from vigil.models.wearer_sim import FS_HZ, simulate_trials

    trials = simulate_trials(falls, adl, seed=seed)
    subjects = np.array([f"synthetic-{i % 8}" for i in range(len(trials))])
    data = screen_trials([t.acc_g for t in trials], np.array([t.is_fall for t in trials]), subjects,
                         np.array([t.activity for t in trials]), float(FS_HZ))
    version, clf = save_fall_model(settings, data, None, f"synthetic wearers (models/wearer_sim.py, seed {seed})", seed=seed,
                                   extra={"synthetic": True})
    return version, {"falls": falls, "adl": adl, "threshold": clf.threshold_, "candidates": int(data.passed.sum())}
