"""Stage 1 run in-process over whole trials, without a broker: the screened candidates that training
and evaluation of stage 2 start from.

A SisFall-layout pack (see ../shared/datasets/README.md) or synthetic trials become
``FallCandidates``: every impact candidate of every trial, its stage-1 verdict and its features.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from vigil.models.falls import PRE_S, ScreenConfig, candidate_windows, fall_window_features, peak_candidates, screen_mask, to_g

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
