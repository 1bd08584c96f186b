"""Faust wiring of the fall topology: three stage agents and the confirmation timer."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from vigil.models.falls import FallClassifier, ScreenConfig
from vigil.models.registry import FALL_TIER, ModelNotFoundError, ModelRegistry
from vigil.streams.falls.classify import FallModelStage, WearerClassifyState
from vigil.streams.falls.confirm import ConfirmStage, WearerConfirmState, hold_is_over, overdue_partitions
from vigil.streams.falls.screen import ScreenStage, WearerScreenState
from vigil.streams.runtime import metrics
from vigil.streams.runtime.agent_loop import StagePublisher, TopologyWiring, observe_outputs, register_stage_agent
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.tables import TableState
from vigil.streams.runtime.topics import (
    ALERTS,
    FALL_CANDIDATES,
    FALL_CONFIRM_REQUEST,
    FALL_DEADLETTER,
    FALL_OUTCOMES,
    FALL_SUSPECTED,
    FALL_SUSPECTED_SHADOW,
    WEARABLE_IMU_RAW,
    WEARABLE_USER_RESPONSE,
)

logger = logging.getLogger(__name__)

CONFIRM_STAGE = "fall.confirm"
TIMER_INTERVAL_S = 0.25  # how late past its deadline an unanswered confirmation may alert


@dataclass(frozen=True)
class ActiveFallModel:
    model: FallClassifier
    version: str
    screen: ScreenConfig


def load_fall_model(models_dir: Path) -> ActiveFallModel | None:
    """The registry's active fall model and the screen it was trained behind; None when there is none."""
    try:
        model, metadata = ModelRegistry(models_dir).load(FALL_TIER)
    except ModelNotFoundError:
        return None
    return ActiveFallModel(model, metadata["version"], ScreenConfig(**metadata.get("screen", {})))


def register_fall_agents(app: Any, settings: Settings, codec: AvroCodec, active: ActiveFallModel) -> dict[str, FallModelStage]:
    """Registers the three stages; returns the one that serves a registry model, by tier (models.control swaps it)."""
    wiring = TopologyWiring(app, settings, codec)
    dead_letters = wiring.produced(FALL_DEADLETTER)
    common = {"dead_letters": dead_letters, "batch_size": settings.batch_size, "batch_within_s": settings.batch_within_s}
    register_stage_agent(
        app, name=WEARABLE_IMU_RAW,
        stage=ScreenStage(codec, active.screen, active.model.fs_hz),
        source=wiring.consumed(WEARABLE_IMU_RAW), sink=wiring.produced(FALL_CANDIDATES),
        table=wiring.table("fall-screen-state"), decode_state=WearerScreenState.from_bytes, **common,
    )
    fall_model_stage = FallModelStage(codec, active.model, active.version)
    register_stage_agent(
        app, name=FALL_CANDIDATES,
        stage=fall_model_stage,
        source=wiring.consumed(FALL_CANDIDATES), sink=wiring.produced(FALL_SUSPECTED),
        sinks={FALL_SUSPECTED_SHADOW: wiring.produced(FALL_SUSPECTED_SHADOW)},
        table=wiring.table("fall-model-state"), decode_state=WearerClassifyState.from_bytes, **common,
    )
    stage = ConfirmStage(codec, suspected_topic=settings.topic(FALL_SUSPECTED), response_topic=settings.topic(WEARABLE_USER_RESPONSE),
                         window_s=settings.fall_confirm_window_s)
    table = wiring.table("fall-confirm-state")
    sinks = {name: wiring.produced(name) for name in (FALL_CONFIRM_REQUEST, ALERTS, FALL_OUTCOMES)}
    lock = asyncio.Lock()
    timer = ConfirmationTimer(app, settings, stage, TableState(table, WearerConfirmState.from_bytes),
                              StagePublisher(app, CONFIRM_STAGE, sinks[ALERTS], dead_letters, sinks), lock)
    register_stage_agent(
        app, name=CONFIRM_STAGE, stage=stage,
        source=wiring.consumed(FALL_SUSPECTED, WEARABLE_USER_RESPONSE), sink=sinks[ALERTS], sinks=sinks,
        table=table, decode_state=WearerConfirmState.from_bytes, lock=lock, on_written=timer.on_written, **common,
    )
    app.timer(interval=TIMER_INTERVAL_S, name="fall.confirm.deadlines")(timer.tick)
    return {fall_model_stage.tier: fall_model_stage}


class ConfirmationTimer:
    """Raises the emergency alerts of confirmations whose deadline passed unanswered.

    Runs under the confirm agent's lock, so a pending confirmation is settled by
    the answer or by the deadline, never both. Before alerting it makes sure the
    worker has read every answer already in the partition (a restarted worker
    may have answers waiting from while it was down), but holds an alert at most
    ``fall_confirm_max_hold_s`` (see ``hold_is_over``).
    """

    def __init__(self, app: Any, settings: Settings, stage: ConfirmStage, state: TableState[WearerConfirmState],
                 publish: StagePublisher, lock: asyncio.Lock) -> None:
        self.app, self.stage, self.state, self.publish, self.lock = app, stage, state, publish, lock
        self.max_hold_ms = settings.fall_confirm_max_hold_s * 1000.0
        self.with_pending: set[str] | None = None  # wearers with open confirmations; None: rebuild from the table
        self.processed: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset the stage has not processed
        self.generation: Any = None
        self.taken_ms: dict[int, float] = {}  # suspected partition -> when this generation first saw it assigned

    def on_written(self, messages: Sequence[RawMessage], result: StageResult) -> None:
        for m in messages:
            key = (m.topic, m.partition)
            self.processed[key] = max(self.processed.get(key, 0), m.offset + 1)
        self.track(result)

    def track(self, result: StageResult) -> None:
        for record, topic in zip(result.outputs, result.output_topics):
            if topic == FALL_OUTCOMES:
                metrics.FALL_OUTCOMES.labels(record["outcome"]).inc()
        if self.with_pending is None:
            return
        for wearer, wearer_state in result.state_updates.items():
            if wearer_state.pending:
                self.with_pending.add(wearer)
            else:
                self.with_pending.discard(wearer)

    async def tick(self) -> None:
        app = self.app
        if app.rebalancing or getattr(app, "in_recovery", False):
            return  # the table may be half recovered
        if app.consumer_generation_id != self.generation:
            self.generation, self.with_pending, self.taken_ms = app.consumer_generation_id, None, {}
        now_ms = time.time() * 1000.0
        mine = {tp.partition for tp in app.consumer.assignment() if tp.topic == self.stage.suspected_topic}
        for partition in mine:
            self.taken_ms.setdefault(partition, now_ms)
        async with self.lock:
            if self.with_pending is None:
                self.with_pending = {w for w in self.state if self.state[w].pending}
            if not self.with_pending:
                return
            now_ms = time.time() * 1000.0
            open_here = {w: s for w in self.with_pending if (s := self.state.get(w)) is not None and s.partition in mine}
            due = overdue_partitions(open_here.values(), now_ms)
            if not due:
                return
            ready = {partition for partition, deadline in due.items()
                     if hold_is_over(deadline, self.taken_ms[partition], now_ms, self.max_hold_ms)
                     or await self.answers_read(partition)}
            held = sorted(set(due) - ready)
            if held:
                logger.info("expired confirmations held until the answers already sent are read", extra={"partitions": held})
            if not ready:
                return
            result = self.stage.expire(open_here, ready)
            if not result.outputs:
                return
            await self.publish(result)
            self.state.write(result.state_updates, result.state_partitions)
            self.track(result)
        observe_outputs(CONFIRM_STAGE, result)
        logger.warning("fall confirmations unanswered; emergency alerts raised",
                       extra={"alerts": [r["alert_id"] for r, t in zip(result.outputs, result.output_topics) if t == ALERTS]})

    async def answers_read(self, partition: int) -> bool:
        """Whether the stage has processed every answer now in the wearer's response partition."""
        from faust.types import TP

        tp = TP(self.stage.response_topic, partition)
        try:
            end = (await self.app.consumer.highwaters(tp)).get(tp)
        except Exception as exc:  # the broker may be unreachable: the max hold still bounds the wait
            logger.warning("cannot read the answer partition's end offset", extra={"partition": partition, "error": repr(exc)})
            return False
        if end is None:
            return False
        done = self.processed.get((self.stage.response_topic, partition))
        if done is None:
            done = getattr(self.app.consumer, "_committed_offset", {}).get(tp)  # Faust internal: next offset to read
        return end == 0 or (done is not None and done >= end)
