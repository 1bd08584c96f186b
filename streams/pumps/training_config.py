"""The settings of the pump topology's one training path (``vigil.streams.pumps.training``): one set of defaults.

Kept apart from the training code so that the CLI can show these defaults without importing
torch and scikit-learn (that took `vigil --help` from 0.7 s to 7 s).
"""
from __future__ import annotations

from dataclasses import dataclass

from vigil.models.features import FEATURE_NAMES, PROCESS_FEATURE_SET, VIBRATION_ENERGY_FEATURES, VIBRATION_FEATURE_SET

# The simulated healthy fleet `vigil train pumps --simulate` trains on by default.
SIMULATED_PUMPS = 16
SIMULATED_WINDOWS_PER_PUMP = 150
SIMULATED_CAPTURE_INTERVAL_S = 20.0


@dataclass(frozen=True)
class PumpTrainingConfig:
    """Hyper-parameters of both tiers; the defaults are the fleet settings measured in docs/evaluation.md."""

    baseline_windows: int = 30  # per stream, unless the asset catalog says otherwise
    # Features compared with the baseline, per feature set (None: all of the set's). The default
    # leaves out vibration shape statistics (crest factor, skewness, kurtosis, spectral centroid):
    # on PRONOSTIA their healthy wander raised early false alarms (docs/evaluation.md).
    vibration_features: tuple[str, ...] | None = VIBRATION_ENERGY_FEATURES
    process_features: tuple[str, ...] | None = None
    log_scale_floor: float = 0.12  # log10 units: a 30 % spread at least
    edge_trees: int = 500
    edge_quantile: float = 0.999
    cloud_window: int = 16
    cloud_hidden: int = 16
    cloud_epochs: int = 10
    cloud_quantile: float = 0.7
    cloud_threshold: float | None = None  # a fixed calibrated score instead of the quantile
    # Learn from the baseline windows' own deviations too (SKAB: one 400-row healthy span per asset).
    train_on_baseline: bool = False
    seed: int = 0

    def features_of(self, feature_set: str) -> tuple[str, ...]:
        chosen = {VIBRATION_FEATURE_SET: self.vibration_features, PROCESS_FEATURE_SET: self.process_features}.get(feature_set)
        return tuple(chosen) if chosen is not None else FEATURE_NAMES[feature_set]
