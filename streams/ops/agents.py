"""Faust wiring of the monitoring stages: drift and data quality per asset and for the fleet, and their gauges."""
from __future__ import annotations

from typing import Any

from vigil.models.assets import AssetCatalog
from vigil.models.drift import DriftThresholds
from vigil.models.feedback import FAILURE_VERDICTS
from vigil.models.quality import CHECKS as QUALITY_CHECKS
from vigil.models.quality import QualityThresholds
from vigil.streams.ops.drift import DriftAssetState, DriftStage
from vigil.streams.ops.feedback import AlertFeedbackStage, AlertLabelState, label_changes, verdict_changes
from vigil.streams.ops.fleet_drift import FleetDriftStage, FleetDriftState
from vigil.streams.ops.fleet_quality import FleetQualityStage, FleetQualityState
from vigil.streams.ops.quality import QualityAssetState, QualityStage
from vigil.streams.ops.references import DriftReferences
from vigil.streams.runtime import metrics
from vigil.streams.runtime.agent_loop import TopologyWiring, register_stage_agent
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.tables import TableState
from vigil.streams.runtime.topics import (
    ALERTS,
    ALERTS_FEEDBACK,
    ALERTS_LABELLED,
    FALL_DEADLETTER,
    FLEET_KEY,
    MAINTENANCE_FAILURES,
    OPS_DRIFT,
    OPS_DRIFT_WINDOWS,
    OPS_FAILURES,
    OPS_QUALITY,
    OPS_QUALITY_WINDOWS,
    PUMP_DEADLETTER,
    PUMP_PROCESS_RAW,
    PUMP_SCORES_CLOUD,
    PUMP_VIBRATION_RAW,
    WEARABLE_IMU_RAW,
)
from vigil.streams.runtime.validation import VibrationLimits

# Gauges are recomputed from the tables, so they stay right across restarts and rebalances.
GAUGE_INTERVAL_S = 10.0
# Drift windows are an hour long: a second of records per batch costs nothing and writes each
# pump's state once per batch.
MONITOR_BATCH_WITHIN_S = 1.0


def register_ops_agents(app: Any, settings: Settings, codec: AvroCodec, wearable_fs_hz: float | None = None) -> None:
    """Drift and quality stages, per asset and for the fleet; ``wearable_fs_hz``: the fall model's rate (None: no wearables)."""
    wiring = TopologyWiring(app, settings, codec)
    consumed, produced, table = wiring.consumed, wiring.produced, wiring.table
    common = {"dead_letters": produced(PUMP_DEADLETTER), "batch_size": settings.batch_size,
              "batch_within_s": max(settings.batch_within_s, MONITOR_BATCH_WITHIN_S)}
    references = DriftReferences(settings.models_dir)
    thresholds = DriftThresholds(kl=settings.drift_kl)
    hysteresis = {"open_after": settings.drift_open_after, "close_after": settings.drift_close_after}
    drift_table, fleet_table = table("ops-drift-state"), table("ops-fleet-drift-state")
    findings = produced(OPS_DRIFT)
    register_stage_agent(
        app, name=OPS_DRIFT,
        stage=DriftStage(codec, references, windows_s=settings.monitor_windows_s(), grace_s=settings.monitor_grace_s,
                         thresholds=thresholds, reference_s=settings.drift_reference_s, **hysteresis),
        source=consumed(PUMP_SCORES_CLOUD), sink=findings, sinks={OPS_DRIFT: findings, OPS_DRIFT_WINDOWS: produced(OPS_DRIFT_WINDOWS)},
        table=drift_table, decode_state=DriftAssetState.from_bytes, **common)
    register_stage_agent(
        app, name=f"{OPS_DRIFT}.fleet",
        stage=FleetDriftStage(codec, references, thresholds=thresholds, reference_s=settings.drift_reference_s, **hysteresis),
        source=consumed(OPS_DRIFT_WINDOWS), sink=findings, table=fleet_table, decode_state=FleetDriftState.from_bytes, **common)
    drift_state = TableState(drift_table, DriftAssetState.from_bytes)
    fleet_state = TableState(fleet_table, FleetDriftState.from_bytes)

    raw = [PUMP_VIBRATION_RAW, PUMP_PROCESS_RAW, PUMP_DEADLETTER] + ([WEARABLE_IMU_RAW, FALL_DEADLETTER] if wearable_fs_hz else [])
    quality_findings = produced(OPS_QUALITY)
    quality_table, fleet_quality_table = table("ops-quality-state"), table("ops-fleet-quality-state")
    register_stage_agent(
        app, name=OPS_QUALITY,
        stage=QualityStage(codec, assets=AssetCatalog.load(settings.assets_file), window_s=settings.monitor_window_s,
                           thresholds=QualityThresholds(clock_checks=bool(settings.quality_clock_checks)),
                           wearable_fs_hz=wearable_fs_hz, vibration_limits=VibrationLimits(max_samples=settings.max_chunk_samples),
                           topic_of={t: settings.topic(t) for t in raw}),
        source=consumed(*raw), sink=quality_findings, sinks={OPS_QUALITY: quality_findings, OPS_QUALITY_WINDOWS: produced(OPS_QUALITY_WINDOWS)},
        table=quality_table, decode_state=QualityAssetState.from_bytes, **common)
    register_stage_agent(
        app, name=f"{OPS_QUALITY}.fleet", stage=FleetQualityStage(codec), source=consumed(OPS_QUALITY_WINDOWS),
        sink=quality_findings, table=fleet_quality_table, decode_state=FleetQualityState.from_bytes, **common)

    def count_labels(messages: Any, result: Any) -> None:
        for model_version, outcome in label_changes(result):
            metrics.ALERT_FEEDBACK.labels(model_version, outcome).inc()
        for _, verdict in verdict_changes(result):
            metrics.FAILURE_VERDICTS.labels(verdict).inc()

    for verdict in FAILURE_VERDICTS:
        metrics.FAILURE_VERDICTS.labels(verdict)  # at 0, so that increase() sees the first missed failure

    labelled = produced(ALERTS_LABELLED)
    register_stage_agent(
        app, name=ALERTS_LABELLED,
        stage=AlertFeedbackStage(codec, alerts_topic=settings.topic(ALERTS), feedback_topic=settings.topic(ALERTS_FEEDBACK),
                                 failures_topic=settings.topic(MAINTENANCE_FAILURES)),
        source=consumed(ALERTS, ALERTS_FEEDBACK, MAINTENANCE_FAILURES), sink=labelled,
        sinks={ALERTS_LABELLED: labelled, OPS_FAILURES: produced(OPS_FAILURES)}, table=table("ops-alert-labels-state"),
        decode_state=AlertLabelState.from_bytes, on_written=count_labels, **common)
    quality_state = TableState(quality_table, QualityAssetState.from_bytes)
    fleet_quality_state = TableState(fleet_quality_table, FleetQualityState.from_bytes)

    @app.timer(GAUGE_INTERVAL_S, name="ops.gauges")
    async def set_gauges() -> None:
        open_by: dict[tuple[str, str], int] = {("feature", "asset"): 0, ("prediction", "asset"): 0,
                                               ("feature", "fleet"): 0, ("prediction", "fleet"): 0}
        for asset_id in list(drift_state):
            asset = drift_state.get(asset_id)
            for key in (asset.open_findings() if asset is not None else {}):
                open_by[(key.split("|")[0], "asset")] += 1
        fleet = fleet_state.get(FLEET_KEY)
        if fleet is not None:
            for key, episode in fleet.episodes.items():
                if any(e["is_open"] for e in episode["features"].values()):
                    open_by[(key.split("|")[0], "fleet")] += 1
            for feature_set, kls in fleet.last_kl.items():
                for feature, kl in kls.items():
                    metrics.DRIFT_KL.labels(feature_set, feature).set(kl)
        for (kind, scope), count in open_by.items():
            metrics.DRIFT_FINDINGS_OPEN.labels(kind, scope).set(count)
        checks: dict[tuple[str, str], int] = {}
        for asset_id in list(quality_state):
            device = quality_state.get(asset_id)
            for stream_checks in (device.open_checks() if device is not None else {}).values():
                for check in stream_checks:
                    checks[(check, "asset")] = checks.get((check, "asset"), 0) + 1
        fleet_quality = fleet_quality_state.get(FLEET_KEY)
        if fleet_quality is not None:
            for topology, numbers in fleet_quality.last.items():
                metrics.QUALITY_BAD_DEVICE_SHARE.labels(topology).set(numbers["device_share"])
                metrics.QUALITY_BAD_READING_SHARE.labels(topology).set(numbers["reading_share"])
            for topology, episode in fleet_quality.episodes.items():
                checks[("fleet", "fleet")] = checks.get(("fleet", "fleet"), 0) + int(bool(episode.get("is_open")))
        for check in (*QUALITY_CHECKS, "fleet"):
            for scope in ("asset", "fleet"):
                metrics.QUALITY_FINDINGS_OPEN.labels(check, scope).set(checks.get((check, scope), 0))
