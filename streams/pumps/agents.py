"""Faust wiring of the pump topology: one agent per input topic, each a thin loop around its stage."""
from __future__ import annotations

from typing import Any

from vigil.models.alerts import AlertPolicy
from vigil.models.assets import AssetCatalog
from vigil.streams.pumps.alerts import AlertStage, AlertStageState
from vigil.streams.pumps.cloud import CloudStage, CloudStreamState
from vigil.streams.pumps.edge import EdgeStage, EdgeStreamState
from vigil.streams.pumps.process import ProcessAssetState, ProcessStage
from vigil.streams.pumps.training import ActivePumpModels
from vigil.streams.pumps.trends import TrendAssetState, TrendStage, fleet_trends, pump_trend
from vigil.streams.pumps.vibration import VibrationAssetState, VibrationStage
from vigil.streams.runtime.agent_loop import TopologyWiring, register_stage_agent
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.tables import TableState
from vigil.streams.runtime.topics import (
    ALERTS,
    PUMP_DEADLETTER,
    PUMP_FEATURES,
    PUMP_PROCESS_RAW,
    PUMP_SCORES_CLOUD,
    PUMP_SCORES_CLOUD_SHADOW,
    PUMP_SCORES_EDGE,
    PUMP_SCORES_EDGE_SHADOW,
    PUMP_TRENDS,
    PUMP_VIBRATION_RAW,
)
from vigil.streams.runtime.validation import VibrationLimits

# Trend buckets are hourly: gathering a second of records per batch costs nothing there and
# writes each pump's state (a week of buckets) to the changelog once per batch, not per record.
TREND_BATCH_WITHIN_S = 1.0


def register_pump_agents(app: Any, settings: Settings, codec: AvroCodec, models: ActivePumpModels) -> dict[str, Any]:
    """Registers the pump stages; returns the ones that serve a registry model, by tier (models.control swaps them)."""
    wiring = TopologyWiring(app, settings, codec)
    consumed, produced, table = wiring.consumed, wiring.produced, wiring.table

    assets = AssetCatalog.load(settings.assets_file)
    features, dead_letters = produced(PUMP_FEATURES), produced(PUMP_DEADLETTER)
    common = {"dead_letters": dead_letters, "batch_size": settings.batch_size, "batch_within_s": settings.batch_within_s}
    register_stage_agent(
        app,
        name=PUMP_VIBRATION_RAW,
        stage=VibrationStage(codec, assets, VibrationLimits(max_samples=settings.max_chunk_samples)),
        source=consumed(PUMP_VIBRATION_RAW),
        sink=features,
        table=table("pump-vibration-state"),
        decode_state=VibrationAssetState.from_bytes,
        **common,
    )
    register_stage_agent(
        app,
        name=PUMP_PROCESS_RAW,
        stage=ProcessStage(codec, assets=assets),
        source=consumed(PUMP_PROCESS_RAW),
        sink=features,
        table=table("pump-process-state"),
        decode_state=ProcessAssetState.from_bytes,
        **common,
    )
    edge = EdgeStage(codec, models.edge, models.edge_version, assets)
    cloud = CloudStage(codec, models.cloud, models.cloud_version, models.cloud_thresholds)
    register_stage_agent(
        app,
        name=PUMP_FEATURES,
        stage=edge,
        source=consumed(PUMP_FEATURES),
        sink=produced(PUMP_SCORES_EDGE),
        sinks={PUMP_SCORES_EDGE_SHADOW: produced(PUMP_SCORES_EDGE_SHADOW)},
        table=table("pump-edge-state"),
        decode_state=EdgeStreamState.from_bytes,
        **common,
    )
    register_stage_agent(
        app,
        name=PUMP_SCORES_EDGE,
        stage=cloud,
        source=consumed(PUMP_SCORES_EDGE),
        sink=produced(PUMP_SCORES_CLOUD),
        sinks={PUMP_SCORES_CLOUD_SHADOW: produced(PUMP_SCORES_CLOUD_SHADOW)},
        table=table("pump-cloud-state"),
        decode_state=CloudStreamState.from_bytes,
        offload=True,  # the LSTM forward pass runs off the event loop, so heartbeats and other agents go on
        **common,
    )
    register_stage_agent(
        app,
        name=PUMP_SCORES_CLOUD,
        stage=AlertStage(codec, AlertPolicy(settings.alert_policy())),
        source=consumed(PUMP_SCORES_CLOUD),
        sink=produced(ALERTS),
        table=table("pump-alert-state"),
        decode_state=AlertStageState.from_bytes,
        **common,
    )
    trend_table = table("pump-trend-state")
    register_stage_agent(
        app,
        name=PUMP_TRENDS,
        stage=TrendStage(codec, edge_topic=settings.topic(PUMP_SCORES_EDGE), alerts_topic=settings.topic(ALERTS)),
        source=consumed(PUMP_SCORES_EDGE, ALERTS),
        sink=produced(PUMP_TRENDS),
        table=trend_table,
        decode_state=TrendAssetState.from_bytes,
        **{**common, "batch_within_s": max(settings.batch_within_s, TREND_BATCH_WITHIN_S)},
    )
    register_trend_pages(app, TableState(trend_table, TrendAssetState.from_bytes))
    return {edge.tier: edge, cloud.tier: cloud}


def register_trend_pages(app: Any, trends: TableState[TrendAssetState]) -> None:
    """``/pumps`` and ``/pumps/{asset_id}/trend``, from this worker's share of the trend table.

    With several workers each one answers for the pumps of its partitions; ask the
    worker that owns a pump (``/pumps`` on each lists its own).
    """

    @app.page("/pumps")
    async def pumps_page(view: Any, request: Any) -> Any:
        return view.json(fleet_trends((asset_id, trends[asset_id]) for asset_id in sorted(trends)))

    @app.page("/pumps/{asset_id}/trend")
    async def pump_trend_page(view: Any, request: Any, asset_id: str) -> Any:
        asset = trends.get(asset_id)
        if asset is None:
            return view.json({"error": f"no trend for {asset_id!r} on this worker", "pumps_here": len(trends)}, status=404)
        return view.json(pump_trend(asset_id, asset))
