"""Pure pieces of training shared by the tiers: the cloud autoencoder fit, reference histograms, data fingerprints.

The one training path of each topology (``vigil.streams.pumps.training``, ``vigil.streams.falls.training``) calls these."""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from vigil.models.cloud import CloudModel, CloudScorer, sliding_sequences

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
