"""Fitting the edge model from feature windows of healthy assets."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from models.cloud import CloudModel, CloudScorer, sliding_sequences
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


# Bin edges (robust z) of the reference histograms stored with a model, for later drift checks:
# deviations are standardized per asset, so one set of edges fits every asset and feature.
REFERENCE_BIN_EDGES = (-1e9, -6.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 6.0, 1e9)


def reference_histograms(Z: np.ndarray, feature_names: Sequence[str]) -> dict[str, Any]:
    """Per feature, the fraction of training deviations in each of ``REFERENCE_BIN_EDGES``' bins."""
    edges = np.asarray(REFERENCE_BIN_EDGES)
    hist = {}
    for j, name in enumerate(feature_names):
        counts, _ = np.histogram(Z[:, j], bins=edges)
        hist[name] = np.round(counts / max(1, counts.sum()), 6).tolist()
    return {"bin_edges": list(REFERENCE_BIN_EDGES), "fractions": hist}


def fingerprint(arrays: Iterable[np.ndarray]) -> str:
    """sha256 over the training data as the model saw it (shapes and float64 bytes)."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        digest.update(str(a.shape).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def fit_cloud_model(
    healthy_deviations: Mapping[str, Sequence[np.ndarray]],
    feature_names: Mapping[str, Sequence[str]],
    *,
    window: int = 16,
    hidden: int = 32,
    epochs: int = 20,
    threshold_quantile: float = 0.99,
    random_state: int = 0,
) -> tuple[CloudModel, dict[str, Any]]:
    """Fit one LSTM autoencoder per feature set on healthy streams' deviation vectors.

    ``healthy_deviations[feature set]`` holds one (windows, features) array per
    stream, consecutive scored windows in seq order; sequences never span two streams.
    """
    scorers: dict[str, CloudScorer] = {}
    metrics: dict[str, Any] = {}
    for name, streams in healthy_deviations.items():
        sequences = [sliding_sequences(Z, window) for Z in streams if len(Z)]
        if not sequences:
            raise ValueError(f"no healthy deviation windows for feature set {name!r}")
        S = np.concatenate(sequences)
        scorer = CloudScorer(window=window, hidden=hidden, epochs=epochs, threshold_quantile=threshold_quantile, random_state=random_state)
        scorer.fit(S, feature_names[name])
        scorers[name] = scorer
        metrics[name] = {
            "streams": len(sequences),
            "training_sequences": int(len(S)),
            "final_loss": scorer.report_.final_loss,
            "threshold": scorer.threshold_,
        }
    return CloudModel(feature_sets=scorers, window=window), metrics
