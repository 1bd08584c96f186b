"""Fitting the edge model from feature windows of healthy assets."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping

import numpy as np

from models.edge import EdgeModel, fit_feature_set
from models.features import PROCESS_FEATURE_SET, PROCESS_FEATURES, VIBRATION_FEATURE_SET, VIBRATION_FEATURES

FEATURE_NAMES = {VIBRATION_FEATURE_SET: VIBRATION_FEATURES, PROCESS_FEATURE_SET: PROCESS_FEATURES}


def group_feature_windows(windows: Iterable[Mapping[str, Any]]) -> dict[str, list[np.ndarray]]:
    """FeatureWindow records -> {feature set: [one (windows, features) array per (asset, stream)]}, in seq order."""
    rows: dict[tuple[str, str, str], list[tuple[int, list[float]]]] = defaultdict(list)
    for w in windows:
        names = FEATURE_NAMES[w["feature_set"]]
        rows[(w["feature_set"], w["asset_id"], w["stream"])].append((w["seq"], [w["features"].get(n, np.nan) for n in names]))
    grouped: dict[str, list[np.ndarray]] = defaultdict(list)
    for (feature_set, _, _), items in sorted(rows.items()):
        items.sort(key=lambda item: item[0])
        grouped[feature_set].append(np.array([values for _, values in items], dtype=np.float64))
    return dict(grouped)


def fit_edge_model(
    windows: Iterable[Mapping[str, Any]], baseline_windows: int, *, random_state: int = 0, threshold_quantile: float = 0.995
) -> tuple[EdgeModel, dict[str, Any]]:
    """Fit one scorer per feature set from healthy assets' windows; returns the model and its training metrics."""
    grouped = group_feature_windows(windows)
    if not grouped:
        raise ValueError("no feature windows to train on")
    feature_sets = {}
    metrics: dict[str, Any] = {}
    for name, per_asset in grouped.items():
        model = fit_feature_set(per_asset, FEATURE_NAMES[name], baseline_windows, random_state=random_state, threshold_quantile=threshold_quantile)
        feature_sets[name] = model
        metrics[name] = {
            "streams": len(per_asset),
            "training_windows": int(sum(len(x) - baseline_windows for x in per_asset)),
            "threshold": model.scorer.threshold_,
            "training_score_p50": float(np.median(model.scorer.training_scores_)),
            "training_flag_rate": float(np.mean(model.scorer.training_scores_ >= model.scorer.threshold_)),
        }
    return EdgeModel(feature_sets=feature_sets, baseline_windows=baseline_windows), metrics
