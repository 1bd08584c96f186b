"""Faust wiring of the pump topology: one agent per input topic, each a thin loop around its stage."""
from __future__ import annotations

from typing import Any

from models.assets import AssetCatalog
from models.edge import EdgeModel
from streams.agents import register_stage_agent
from streams.codec import AvroCodec, register_faust_codecs
from streams.pumps.edge import EdgeStage, EdgeStreamState
from streams.pumps.process import ProcessAssetState, ProcessStage
from streams.pumps.vibration import VibrationAssetState, VibrationStage
from streams.settings import Settings
from streams.validation import VibrationLimits
from streams.topics import (
    PUMP_DEADLETTER,
    PUMP_FEATURES,
    PUMP_PROCESS_RAW,
    PUMP_SCORES_EDGE,
    PUMP_VIBRATION_RAW,
    SCHEMA_OF_TOPIC,
)


def register_pump_agents(app: Any, settings: Settings, codec: AvroCodec, edge_model: EdgeModel, edge_version: str) -> None:
    serializers = register_faust_codecs(codec, {settings.topic(t): s for t, s in SCHEMA_OF_TOPIC.items()})

    def consumed(name: str) -> Any:
        # Bytes in: the stage decodes, so an undecodable record becomes a dead letter, not a worker crash.
        return app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw", partitions=settings.partitions)

    def produced(name: str) -> Any:
        return app.topic(settings.topic(name), key_serializer="raw", value_serializer=serializers[settings.topic(name)], partitions=settings.partitions)

    def table(name: str) -> Any:
        return app.Table(name, default=None, key_type=str, value_type=bytes, partitions=settings.partitions)

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
    register_stage_agent(
        app,
        name=PUMP_FEATURES,
        stage=EdgeStage(codec, edge_model, edge_version, assets),
        source=consumed(PUMP_FEATURES),
        sink=produced(PUMP_SCORES_EDGE),
        table=table("pump-edge-state"),
        decode_state=EdgeStreamState.from_bytes,
        **common,
    )
