"""What drift is judged against: the reference histograms each edge model version was trained with.

Read from the registry's metadata (``reference_histograms`` per feature set,
and ``score_reference``: edge scores in threshold units and the flag rate on
the training windows). Workers have every version they serve in their
registry (``streams.lifecycle.artifacts`` ships them); a version that is not
there, or was trained before references were stored, has no reference, and its
windows are reported as unreferenced.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vigil.models.drift import (
    SCORE_RATIO_EDGES,
    DriftThresholds,
    FeatureDrift,
    flag_rate_drift,
    js_distance,
    judge_feature,
    judge_window,
    kl_divergence,
    psi,
)
from vigil.models.registry import EDGE_TIER, ModelNotFoundError, ModelRegistry
from vigil.models.training import REFERENCE_BIN_EDGES

logger = logging.getLogger(__name__)


def window_label(length_s: float) -> str:
    """'1h', '1d', '30m' or '90s': the name of a window length in records and finding ids.

    >>> [window_label(s) for s in (3600, 86400, 1800, 90)]
    ['1h', '1d', '30m', '90s']
    """
    seconds = int(length_s)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class FeatureSetReference:
    features: list[str]
    fractions: dict[str, list[float]]
    score_fractions: list[float] | None  # edge scores / threshold in SCORE_RATIO_EDGES bins
    flag_rate: float | None
    # Share of flagged windows the cloud tier confirmed; only a pump's own reference period has one (training has no
    # cloud verdicts on healthy windows to speak of).
    confirm_rate: float | None = None


class DriftReferences:
    """Edge model version and feature set -> the reference, read from the registry once per version."""

    bin_edges: tuple[float, ...] = tuple(REFERENCE_BIN_EDGES)
    # Cloud verdicts a pump's (or the fleet's) own reference period needs before its confirmation rate is a reference.
    min_cloud_reference: int = 30
    score_edges: tuple[float, ...] = tuple(SCORE_RATIO_EDGES)

    def __init__(self, models_dir: str | Path | None = None, known: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.registry = ModelRegistry(models_dir) if models_dir is not None else None
        self._by_version: dict[str, Mapping[str, Any]] = dict(known or {})
        self._missing: set[str] = set()  # versions already warned about

    def own_confirm_rate(self, confirmed: int, scored: int) -> float | None:
        """The confirmation rate a reference period of a pump's or the fleet's own gives (Laplace-smoothed, as its flag
        rate); None while it holds fewer than ``min_cloud_reference`` cloud verdicts.

        >>> refs = DriftReferences()
        >>> refs.own_confirm_rate(8, 40), refs.own_confirm_rate(8, 29)
        (0.21428571428571427, None)
        """
        return (confirmed + 1) / (scored + 2) if scored >= self.min_cloud_reference else None

    def get(self, version: str, feature_set: str) -> FeatureSetReference | None:
        metadata = self._by_version.get(version)
        if metadata is None:
            # Not cached when absent: another worker may have fetched a version this one's watcher has not yet.
            metadata = self._load(version)
            if metadata is not None:
                self._by_version[version] = metadata
        if metadata is None:
            return None
        histograms = (metadata.get("reference_histograms") or {}).get(feature_set)
        if histograms is None or tuple(histograms["bin_edges"]) != self.bin_edges:
            return None
        score = (metadata.get("score_reference") or {}).get(feature_set) or {}
        usable_score = tuple(score.get("bin_edges", ())) == self.score_edges
        return FeatureSetReference(list(histograms["fractions"]), dict(histograms["fractions"]),
                                   score.get("fractions") if usable_score else None, score.get("flag_rate"))

    def _load(self, version: str) -> Mapping[str, Any] | None:
        if self.registry is None:
            return None
        try:
            return self.registry.metadata(EDGE_TIER, version)
        except ModelNotFoundError:
            if version not in self._missing:
                self._missing.add(version)
                logger.warning("no reference for an edge version this worker does not have (yet); its windows are unreferenced",
                               extra={"version": version})
            return None


def judge_counts(features: Sequence[str], feature_counts: np.ndarray, score_counts: np.ndarray, windows: int, flagged: int,
                 reference: FeatureSetReference | None, thresholds: DriftThresholds,
                 cloud: tuple[int, int] = (0, 0)) -> dict[str, tuple[list[FeatureDrift], list[str]]]:
    """Kind ('feature', 'prediction') -> (the judged statistics, the names no reference covers) of one closed window.

    ``cloud``: (flagged windows the cloud tier scored, those it confirmed) in the window.
    """
    if reference is None:
        return {"feature": ([], list(features)), "prediction": ([], ["edge_score", "flag_rate", "cloud_confirmation_rate"])}
    verdict = judge_window({n: feature_counts[i] for i, n in enumerate(features)}, reference.fractions, thresholds)
    prediction: list[FeatureDrift] = []
    unreferenced = []
    if reference.score_fractions is not None and windows >= thresholds.min_samples:
        prediction.append(judge_feature("edge_score", score_counts, reference.score_fractions, thresholds))
    elif reference.score_fractions is None:
        unreferenced.append("edge_score")
    if reference.flag_rate is not None and windows >= thresholds.min_samples:
        prediction.append(flag_rate_statistic(flagged, windows, reference.flag_rate, thresholds))
    elif reference.flag_rate is None:
        unreferenced.append("flag_rate")
    scored, confirmed = cloud
    if reference.confirm_rate is not None and scored >= thresholds.min_samples:
        prediction.append(flag_rate_statistic(confirmed, scored, reference.confirm_rate, thresholds, "cloud_confirmation_rate"))
    elif reference.confirm_rate is None:
        unreferenced.append("cloud_confirmation_rate")
    return {"feature": (list(verdict.features), list(verdict.unreferenced)), "prediction": (prediction, unreferenced)}


def flag_rate_statistic(flagged: int, windows: int, expected_rate: float, thresholds: DriftThresholds,
                        name: str = "flag_rate") -> FeatureDrift:
    """A rate (flags per window, confirmations per flag) against the reference's as a two-bin distribution, judged by the
    binomial rule (moved by half again, or halved, and significant)."""
    drifted, p_value = flag_rate_drift(flagged, windows, expected_rate, thresholds)
    counts = np.array([windows - flagged, flagged])
    expected = [1.0 - expected_rate, expected_rate]
    return FeatureDrift(name, windows, psi(counts, expected), kl_divergence(counts, expected), js_distance(counts, expected),
                        "binomial", p_value, drifted)
