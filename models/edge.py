"""Edge tier: per-asset commissioning baselines and a fleet Isolation Forest.

Each asset's first windows are its commissioning baseline: every feature is
compared with that asset's own median and robust spread (log scale for
energies), so one fleet model serves pumps of different sizes and speeds.

The Isolation Forest sees each window's deviation profile: the ``TOP_K``
largest absolute deviations, sorted, and the mean absolute deviation. It
learns how far and how broadly healthy windows stray from their own baseline
across the fleet, and scores new ones in [0, 1] (the anomaly score of Liu et
al.: about 0.5 and below is normal, towards 1 is isolated quickly). Why a
profile and not the raw deviation vector: a bearing defect typically moves
one or two of 17 features by tens of standard deviations, and a forest that
splits on randomly chosen raw features rarely picks those (measured here: a
single feature 20 sd out scored 0.50 against a 99.5 % healthy quantile of
0.56; as a profile it scores 0.72 against 0.67). Which features moved is
kept beside the score (``deviations``) for diagnosis.

Scoring is batch-first and goes through ``FlatForest`` (models/isolation.py),
which gives scikit-learn's scores without its per-tree cost per call.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from sklearn.ensemble import IsolationForest

from vigil.models.features import LOG_SCALE_FEATURES
from vigil.models.isolation import FlatForest

MAD_TO_SD = 1.4826
LOG_SCALE_FLOOR = 0.05  # log10 units: a 12 % spread at least
LINEAR_SCALE_FLOOR = 0.05  # relative to |median|
ABSOLUTE_SCALE_FLOOR = 1e-6
MAX_DEVIATION = 1000.0
TINY = 1e-12
TOP_K = 3


def _log_mask(feature_names: Sequence[str]) -> np.ndarray:
    return np.array([name in LOG_SCALE_FEATURES for name in feature_names])


def to_baseline_space(X: np.ndarray, log_mask: np.ndarray) -> np.ndarray:
    Y = np.array(X, dtype=np.float64, copy=True)
    if log_mask.any():
        Y[:, log_mask] = np.log10(np.maximum(Y[:, log_mask], TINY))
    return Y


def deviations(X: np.ndarray, center: np.ndarray, scale: np.ndarray, log_mask: np.ndarray) -> np.ndarray:
    """Robust z-scores of X (n, features) against a baseline; center and scale are
    (features,) or one row per window (n, features). A missing value (NaN) counts as no deviation."""
    Z = (to_baseline_space(X, log_mask) - center) / scale
    Z = np.where(np.isfinite(Z), Z, 0.0)
    return np.clip(Z, -MAX_DEVIATION, MAX_DEVIATION)


@dataclass
class Baseline:
    """Median and robust spread of one asset's commissioning windows."""

    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, log_mask: np.ndarray, log_scale_floor: float = LOG_SCALE_FLOOR) -> "Baseline":
        if len(X) < 2:
            raise ValueError(f"a baseline needs at least 2 windows, got {len(X)}")
        Y = to_baseline_space(X, log_mask)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a sensor absent from every window: all-NaN column
            # A feature never seen during commissioning keeps a NaN center: it then never counts as deviating.
            center = np.nanmedian(Y, axis=0)
            mad = np.nanmedian(np.abs(Y - center), axis=0) * MAD_TO_SD
        floor = np.where(log_mask, log_scale_floor, np.maximum(LINEAR_SCALE_FLOOR * np.nan_to_num(np.abs(center)), ABSOLUTE_SCALE_FLOOR))
        scale = np.maximum(np.where(np.isfinite(mad), mad, 0.0), floor)
        return cls(center=center, scale=scale)

    def deviations(self, X: np.ndarray, log_mask: np.ndarray) -> np.ndarray:
        return deviations(X, self.center, self.scale, log_mask)


def deviation_profile(Z: np.ndarray) -> np.ndarray:
    """(n, features) deviations -> (n, TOP_K + 1): largest |z| first, then mean |z|."""
    A = np.abs(np.asarray(Z, dtype=np.float64))
    k = min(TOP_K, A.shape[1])
    top = -np.sort(-A, axis=1)[:, :k]
    if k < TOP_K:
        top = np.pad(top, ((0, 0), (0, TOP_K - k)))
    return np.column_stack([top, A.mean(axis=1)])


class EdgeScorer:
    """Isolation Forest over deviation profiles, scores in [0, 1].

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> healthy_deviations = rng.standard_normal((3000, 17))
    >>> scorer = EdgeScorer(random_state=0).fit(deviation_profile(healthy_deviations))
    >>> one_feature_off = np.zeros((1, 17)); one_feature_off[0, 3] = 20.0
    >>> typical, broken = scorer.score_many(deviation_profile(np.vstack([healthy_deviations[:1], one_feature_off])))
    >>> bool(typical < 0.5 < scorer.threshold_ < broken)
    True
    """

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        max_samples: int = 256,
        threshold_quantile: float = 0.995,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.threshold_quantile = threshold_quantile
        self.random_state = random_state

    def fit(self, Z: np.ndarray) -> "EdgeScorer":
        if not 0.5 <= self.threshold_quantile < 1:
            raise ValueError(f"threshold_quantile must be in [0.5, 1), got {self.threshold_quantile}")
        Z = np.asarray(Z, dtype=np.float64)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, len(Z)),
            random_state=self.random_state,
        ).fit(Z)
        self.training_scores_ = self.score_many(Z)
        self.threshold_ = float(np.quantile(self.training_scores_, self.threshold_quantile))
        return self

    def score_many(self, Z: np.ndarray) -> np.ndarray:
        if not hasattr(self, "forest_"):
            raise RuntimeError("EdgeScorer is not fitted; call fit() first")
        Z = np.asarray(Z, dtype=np.float64)
        if len(Z) == 0:
            return np.zeros(0)
        flat = self.__dict__.get("_flat")
        if flat is None:
            flat = self._flat = FlatForest.from_forest(self.forest_)
        return -flat.score_samples(Z, self.forest_)

    def __getstate__(self) -> dict:
        # the flat copy is rebuilt on first use: artifacts, and their sha256, stay as before
        return {k: v for k, v in self.__dict__.items() if k != "_flat"}


@dataclass
class FeatureSetModel:
    """The scorer for one feature set (vibration.v2, process.v1).

    ``feature_names`` are the features it compares with the baseline: all of
    the set's, or a subset chosen at training time (the others still travel
    with the window, e.g. envelope ratios for diagnosis)."""

    feature_names: tuple[str, ...]
    scorer: EdgeScorer
    log_scale_floor: float = LOG_SCALE_FLOOR
    log_mask: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.log_mask = _log_mask(self.feature_names)

    def __setstate__(self, state: dict) -> None:
        state.setdefault("log_scale_floor", LOG_SCALE_FLOOR)  # artifacts saved before the floor was a setting
        self.__dict__.update(state)

    def fit_baseline(self, X: np.ndarray) -> Baseline:
        return Baseline.fit(X, self.log_mask, self.log_scale_floor)

    def score_many(self, Z: np.ndarray) -> np.ndarray:
        """Scores of deviation vectors (n, features)."""
        return self.scorer.score_many(deviation_profile(Z))


@dataclass
class EdgeModel:
    """Everything the edge tier needs: one scorer per feature set and the baseline length."""

    feature_sets: dict[str, FeatureSetModel]
    baseline_windows: int

    def for_feature_set(self, name: str) -> FeatureSetModel | None:
        return self.feature_sets.get(name)


def fit_feature_set(
    per_asset_features: Sequence[np.ndarray],
    feature_names: Sequence[str],
    baseline_windows: int | Sequence[int],
    *,
    healthy_until: Sequence[int | None] | None = None,
    train_on_baseline: bool = False,
    random_state: int = 0,
    threshold_quantile: float = 0.995,
    n_estimators: int = 100,
    log_scale_floor: float = LOG_SCALE_FLOOR,
) -> FeatureSetModel:
    """Fit a feature set's scorer from healthy windows, each asset standardized against its own first windows.

    ``baseline_windows`` is one length for every asset or one per asset;
    ``healthy_until`` (per asset, exclusive) keeps only the windows known to be
    healthy, e.g. the early life of a run-to-failure record.
    ``train_on_baseline`` also learns from the baseline windows' own deviations:
    for protocols that give only one short healthy span per asset (SKAB: the
    first 400 rows are both the baseline and the training data).
    """
    scorer = EdgeScorer(n_estimators=n_estimators, random_state=random_state, threshold_quantile=threshold_quantile)
    model = FeatureSetModel(tuple(feature_names), scorer, log_scale_floor)
    n_assets = len(per_asset_features)
    bases = [int(baseline_windows)] * n_assets if isinstance(baseline_windows, (int, np.integer)) else [int(b) for b in baseline_windows]
    ends = list(healthy_until) if healthy_until is not None else [None] * n_assets
    if len(bases) != n_assets or len(ends) != n_assets:
        raise ValueError("baseline_windows and healthy_until need one entry per asset")
    pooled = []
    for X, n_base, end in zip(per_asset_features, bases, ends):
        healthy = X[: end if end is not None else len(X)]
        first = 0 if train_on_baseline else n_base
        if len(healthy) <= first:
            raise ValueError(f"an asset with {len(healthy)} healthy windows has none left after a {n_base}-window baseline")
        baseline = model.fit_baseline(X[:n_base])
        pooled.append(baseline.deviations(healthy[first:], model.log_mask))
    model.scorer.fit(deviation_profile(np.vstack(pooled)))
    return model
