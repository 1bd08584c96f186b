"""The one training path of the pump topology: both tiers fitted from feature windows, through the
same stages the workers run, into the registry.

`vigil train pumps`, the demo, the evaluation report, the docker trainer and the test fixtures
all train through ``fit_pump_models`` with ``PumpTrainingConfig``'s defaults unless they say otherwise.

The edge tier is fitted first; the cloud tier then learns from the deviation
vectors the fitted edge stage actually emits (rounded as on the wire), so it
trains on exactly what it will see in the stream.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vigil.models.assets import AssetCatalog
from vigil.models.cloud import CloudModel
from vigil.models.edge import EdgeModel, fit_feature_set
from vigil.models.registry import CLOUD_TIER, EDGE_TIER, ModelNotFoundError, ModelRegistry
from vigil.models.simulate import FleetSimulator, make_fleet
from vigil.models.drift import reference_score_histogram
from vigil.models.training import fingerprint, fit_cloud_model, reference_histograms
from vigil.streams.pumps.offline import OfflinePumpPipeline
from vigil.streams.pumps.run_to_failure import RunToFailureProtocol, pack_features, pack_lives, protocol_assets
from vigil.streams.pumps.training_config import (
    SIMULATED_CAPTURE_INTERVAL_S,
    SIMULATED_PUMPS,
    SIMULATED_WINDOWS_PER_PUMP,
    PumpTrainingConfig,
)
from vigil.streams.runtime.settings import Settings

StreamKey = tuple[str, str]  # (asset_id, stream)


@dataclass
class PumpModels:
    edge: EdgeModel
    cloud: CloudModel
    edge_metadata: dict[str, Any]
    cloud_metadata: dict[str, Any]


def windows_by_stream(features: Sequence[Mapping[str, Any]]) -> dict[str, dict[StreamKey, list[Mapping[str, Any]]]]:
    """{feature set: {(asset, stream): windows in seq order}}."""
    grouped: dict[str, dict[StreamKey, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for w in features:
        grouped[w["feature_set"]][(w["asset_id"], w["stream"])].append(w)
    return {fs: {key: sorted(ws, key=lambda w: w["seq"]) for key, ws in sorted(streams.items())} for fs, streams in grouped.items()}


def fit_pump_models(
    features: Sequence[Mapping[str, Any]],
    *,
    assets: AssetCatalog | None = None,
    healthy_until: Callable[[StreamKey, int], int | None] = lambda key, n: None,
    config: PumpTrainingConfig = PumpTrainingConfig(),
    source: Mapping[str, Any] | None = None,
) -> PumpModels:
    """Fit the edge and cloud tiers from feature windows of a fleet.

    ``healthy_until(stream key, windows in the stream)`` gives the first window
    (seq) not known to be healthy, or None when the whole stream is healthy.
    """
    assets = assets or AssetCatalog()
    grouped = windows_by_stream(features)
    if not grouped:
        raise ValueError("no feature windows to train on")

    def baseline(asset_id: str) -> int:
        return assets.for_asset(asset_id).baseline_windows or config.baseline_windows

    edge_sets, edge_metrics, ends = {}, {}, {}
    for fs, streams in grouped.items():
        names = config.features_of(fs)
        X = [np.array([[w["features"].get(n, np.nan) for n in names] for w in ws]) for ws in streams.values()]
        for key, ws in streams.items():
            ends[key] = healthy_until(key, len(ws))
        model = fit_feature_set(
            X, names, [baseline(a) for a, _ in streams], healthy_until=[ends[k] for k in streams],
            train_on_baseline=config.train_on_baseline, random_state=config.seed, threshold_quantile=config.edge_quantile,
            n_estimators=config.edge_trees, log_scale_floor=config.log_scale_floor,
        )
        edge_sets[fs] = model
        edge_metrics[fs] = {
            "streams": len(streams),
            "training_windows": int(len(model.scorer.training_scores_)),
            "threshold": model.scorer.threshold_,
            "training_score_p50": float(np.median(model.scorer.training_scores_)),
        }
    edge = EdgeModel(feature_sets=edge_sets, baseline_windows=config.baseline_windows)

    scored = OfflinePumpPipeline(assets=assets, edge=(edge, "training")).feed_features(list(features)).scores
    deviations: dict[str, dict[StreamKey, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    if config.train_on_baseline:
        # The edge stage publishes no deviations while commissioning; compute the baseline windows'
        # own, against the finished baseline, rounded as the stage rounds them on the wire.
        for fs, streams in grouped.items():
            model = edge_sets[fs]
            for key, ws in streams.items():
                X = np.array([[w["features"].get(n, np.nan) for n in model.feature_names] for w in ws[: baseline(key[0])]])
                for z in np.round(model.fit_baseline(X).deviations(X, model.log_mask), 3):
                    deviations[fs][key].append(z)
    for s in sorted(scored, key=lambda s: (s["asset_id"], s["stream"], s["seq"])):
        key = (s["asset_id"], s["stream"])
        end = ends.get(key)
        if s["state"] == "SCORED" and (end is None or s["seq"] < end):
            names = edge_sets[s["feature_set"]].feature_names
            deviations[s["feature_set"]][key].append(np.array([s["deviations"].get(n, 0.0) for n in names]))
    healthy = {fs: [np.vstack(rows) for rows in streams.values()] for fs, streams in deviations.items()}
    names_of = {fs: m.feature_names for fs, m in edge_sets.items()}
    cloud, cloud_metrics = fit_cloud_model(
        healthy, names_of, window=config.cloud_window, hidden=config.cloud_hidden, epochs=config.cloud_epochs,
        threshold_quantile=config.cloud_quantile, random_state=config.seed,
    )
    if config.cloud_threshold is not None:
        for fs, scorer in cloud.feature_sets.items():
            scorer.threshold_ = float(config.cloud_threshold)
            cloud_metrics[fs]["threshold"] = scorer.threshold_
    pooled = {fs: np.vstack(arrays) for fs, arrays in healthy.items()}
    common = {
        "source": dict(source or {}),
        "training_config": asdict(config),
        "training_data_fingerprint": fingerprint(pooled[fs] for fs in sorted(pooled)),
        "feature_sets": {fs: list(names) for fs, names in names_of.items()},
        "reference_histograms": {fs: reference_histograms(Z, names_of[fs]) for fs, Z in pooled.items()},
    }
    return PumpModels(
        edge=edge,
        cloud=cloud,
        edge_metadata={**common, "baseline_windows": config.baseline_windows,
                       # Prediction drift (ops.drift) compares the stream's edge scores and flag rate with these.
                       "score_reference": {fs: reference_score_histogram(m.scorer.training_scores_, m.scorer.threshold_)
                                           for fs, m in edge_sets.items()},
                       "thresholds": {fs: m.scorer.threshold_ for fs, m in edge_sets.items()}, "metrics": edge_metrics},
        cloud_metadata={**common, "window": config.cloud_window,
                        "thresholds": {fs: s.threshold_ for fs, s in cloud.feature_sets.items()}, "metrics": cloud_metrics},
    )


@dataclass
class ActivePumpModels:
    edge: EdgeModel
    edge_version: str
    cloud: CloudModel
    cloud_version: str
    cloud_thresholds: dict[str, float]  # tuned ones from the metadata, else the training quantile


class NoPumpModels(RuntimeError):
    pass


def save_pump_models(registry: ModelRegistry, models: PumpModels, *, activate: bool = True) -> tuple[str, str]:
    """Both tiers into the registry; the cloud version records the edge version it was trained behind."""
    edge_version = registry.save(EDGE_TIER, models.edge, models.edge_metadata, activate=activate)
    cloud_version = registry.save(CLOUD_TIER, models.cloud, {**models.cloud_metadata, "edge_version": edge_version}, activate=activate)
    return edge_version, cloud_version


def pump_pair_problem(edge: EdgeModel, cloud: CloudModel) -> str | None:
    """Why these two tiers cannot serve together, or None. The cloud tier reads the edge tier's
    deviations by name: a mismatched pair would score zeros."""
    for fs, scorer in cloud.feature_sets.items():
        edge_set = edge.for_feature_set(fs)
        if edge_set is None or tuple(scorer.feature_names_) != tuple(edge_set.feature_names):
            return (f"the cloud model expects {fs} deviations of {list(scorer.feature_names_)}, but the edge model "
                    f"publishes {list(edge_set.feature_names) if edge_set else 'none'}")
    return None


def load_pump_models(models_dir: str | Path) -> ActivePumpModels:
    registry = ModelRegistry(models_dir)
    try:
        edge, edge_meta = registry.load(EDGE_TIER)
        cloud, cloud_meta = registry.load(CLOUD_TIER)
    except ModelNotFoundError as exc:
        raise NoPumpModels(
            f"{exc}; train both tiers with `vigil train pumps --pack PATH` or `vigil train pumps --simulate` "
            "(or set VIGIL_MODELS to a registry that has them)"
        ) from None
    problem = pump_pair_problem(edge, cloud)
    if problem:
        raise NoPumpModels(f"active cloud model {cloud_meta['version']} and active edge model {edge_meta['version']}: {problem}; "
                           f"promote the edge version it was trained behind ({cloud_meta.get('edge_version', 'unknown')}) or retrain both")
    thresholds = {fs: float(v) for fs, v in cloud_meta.get("thresholds", {}).items()}
    return ActivePumpModels(edge, edge_meta["version"], cloud, cloud_meta["version"], thresholds)


def simulated_healthy_features(
    *, pumps: int, windows: int, seed: int, capture_interval_s: float, on_step: Callable[[int, int], None] | None = None
) -> list[dict[str, Any]]:
    """Feature windows of a simulated healthy fleet: each pump gives ``windows`` one-second
    captures, one every ``capture_interval_s`` of simulated time, so training sees the slow
    duty-point drift a real baseline will be compared against, not just a few stationary seconds."""
    fleet = make_fleet(pumps, seed=seed, n_faulty=0, horizon_s=windows * capture_interval_s)
    simulator = FleetSimulator(fleet, seed=seed, chunk_s=1.0, interval_s=capture_interval_s)
    pipeline = OfflinePumpPipeline()
    features: list[dict[str, Any]] = []
    for step, records in enumerate(simulator.steps(windows), start=1):
        features += pipeline.feed((r.kind, r.key, r.value) for r in records).features
        if on_step is not None:
            on_step(step, windows)
    return features


def train_pumps_simulated(
    settings: Settings,
    *,
    pumps: int = SIMULATED_PUMPS,
    windows: int = SIMULATED_WINDOWS_PER_PUMP,
    seed: int = 0,
    capture_interval_s: float = SIMULATED_CAPTURE_INTERVAL_S,
    config: PumpTrainingConfig | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """Both tiers on a simulated healthy fleet; saved into ``settings.models_dir`` and activated.
    Returns (edge version, cloud version, metrics). ``config`` defaults to ``PumpTrainingConfig``'s defaults
    with the settings' commissioning length (VIGIL_BASELINE_WINDOWS) and ``seed``."""
    config = config or PumpTrainingConfig(baseline_windows=settings.baseline_windows, seed=seed)
    if windows <= config.baseline_windows:
        raise ValueError(f"--windows ({windows}) must exceed the baseline ({config.baseline_windows} windows)")
    features = simulated_healthy_features(pumps=pumps, windows=windows, seed=seed, capture_interval_s=capture_interval_s, on_step=on_step)
    source = {"simulation": {"pumps": pumps, "windows_per_pump": windows, "capture_interval_s": capture_interval_s, "seed": seed, "healthy": True}}
    models = fit_pump_models(features, config=config, source=source)
    edge_version, cloud_version = save_pump_models(ModelRegistry(settings.models_dir), models)
    return edge_version, cloud_version, {"edge": models.edge_metadata["metrics"], "cloud": models.cloud_metadata["metrics"]}


def train_run_to_failure(
    path: str | Path,
    *,
    bearings: list[str] | None = None,
    protocol: RunToFailureProtocol = RunToFailureProtocol(),
    config: PumpTrainingConfig = PumpTrainingConfig(),
) -> PumpModels:
    """Fleet-level models from the packs given only: the healthy part of each run is taken to be the windows
    between its baseline and 30 % of life, the same span the protocol calls false alarms in."""
    lives = pack_lives(path, bearings)
    assets = protocol_assets(lives, protocol)
    features = pack_features(path, assets, bearings)

    def healthy_until(key: tuple[str, str], n: int) -> int:
        return int(protocol.false_alarm_fraction * n)

    source = {"pack": str(path), "bearings": sorted(lives), "protocol": protocol.__dict__, "healthy": "baseline end to 30 % of life"}
    return fit_pump_models(features, assets=assets, healthy_until=healthy_until, config=config, source=source)
