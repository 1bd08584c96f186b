"""`vigil train`: feature windows through the same stages the workers run, then models into the registry."""
from __future__ import annotations

from typing import Any, Callable

from models.registry import ModelRegistry
from models.simulate import FleetSimulator, make_fleet
from models.training import fit_edge_model
from streams.offline import OfflinePumpPipeline
from streams.pump_models import EDGE_TIER, PumpTrainingConfig, fit_pump_models, save_pump_models
from streams.settings import Settings


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


def _check_windows(settings: Settings, windows: int) -> None:
    if windows <= settings.baseline_windows:
        raise ValueError(f"--windows ({windows}) must exceed the baseline ({settings.baseline_windows} windows)")


def train_edge_simulated(
    settings: Settings,
    *,
    pumps: int = 16,
    windows: int = 150,
    seed: int = 0,
    capture_interval_s: float = 20.0,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Fit the edge model alone on a simulated healthy fleet; save and activate it. Returns (version, metrics)."""
    _check_windows(settings, windows)
    features = simulated_healthy_features(pumps=pumps, windows=windows, seed=seed, capture_interval_s=capture_interval_s, on_step=on_step)
    model, metrics = fit_edge_model(features, settings.baseline_windows, random_state=seed)
    version = ModelRegistry(settings.models_dir).save(
        EDGE_TIER,
        model,
        {
            "source": "simulation",
            "training_data": {"pumps": pumps, "windows_per_pump": windows, "capture_interval_s": capture_interval_s, "seed": seed, "healthy": True},
            "baseline_windows": settings.baseline_windows,
            "feature_sets": {name: list(fs.feature_names) for name, fs in model.feature_sets.items()},
            "thresholds": {name: fs.scorer.threshold_ for name, fs in model.feature_sets.items()},
            "metrics": metrics,
        },
        activate=True,
    )
    return version, metrics


def train_pumps_simulated(
    settings: Settings,
    *,
    pumps: int = 16,
    windows: int = 150,
    seed: int = 0,
    capture_interval_s: float = 20.0,
    config: PumpTrainingConfig | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """Both tiers on a simulated healthy fleet; saved and activated. Returns (edge version, cloud version, metrics)."""
    _check_windows(settings, windows)
    features = simulated_healthy_features(pumps=pumps, windows=windows, seed=seed, capture_interval_s=capture_interval_s, on_step=on_step)
    config = config or PumpTrainingConfig(baseline_windows=settings.baseline_windows, seed=seed)
    source = {"simulation": {"pumps": pumps, "windows_per_pump": windows, "capture_interval_s": capture_interval_s, "seed": seed, "healthy": True}}
    models = fit_pump_models(features, config=config, source=source)
    edge_version, cloud_version = save_pump_models(ModelRegistry(settings.models_dir), models)
    return edge_version, cloud_version, {"edge": models.edge_metadata["metrics"], "cloud": models.cloud_metadata["metrics"]}


def save_fall_model(settings: Settings, data: Any, subjects: list[str] | None, source: Any, *, seed: int = 0,
                    extra: dict[str, Any] | None = None) -> tuple[str, Any]:
    """Stage 2 fitted on the screened candidates of ``subjects`` (None: all) and activated in the registry;
    (version, model). ``data`` is a ``streams.evaluation.falls.FallCandidates``."""
    import numpy as np

    from models.registry import FALL_TIER
    from models.training import fingerprint
    from streams.evaluation.falls import fall_model_metadata, fit_fall_classifier

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
    import numpy as np

    from models.wearer_sim import FS_HZ, simulate_trials
    from streams.evaluation.falls import screen_trials

    trials = simulate_trials(falls, adl, seed=seed)
    subjects = np.array([f"synthetic-{i % 8}" for i in range(len(trials))])
    data = screen_trials([t.acc_g for t in trials], np.array([t.is_fall for t in trials]), subjects,
                         np.array([t.activity for t in trials]), float(FS_HZ))
    version, clf = save_fall_model(settings, data, None, f"synthetic wearers (models/wearer_sim.py, seed {seed})", seed=seed,
                                   extra={"synthetic": True})
    return version, {"falls": falls, "adl": adl, "threshold": clf.threshold_, "candidates": int(data.passed.sum())}
