"""The Faust application factory."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import faust
from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka as aiokafka_driver

from vigil.models.registry import CLOUD_TIER, EDGE_TIER, FALL_TIER
from vigil.streams.pumps.training import ActivePumpModels, load_pump_models
from vigil.streams.runtime.codec import AvroCodec, codec_from_settings
from vigil.streams.runtime.delivery import committed_after_seek
from vigil.streams.runtime.settings import Settings

if TYPE_CHECKING:
    from vigil.streams.falls.agents import ActiveFallModel

logger = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0


class _FastFetchConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust hard-codes ``fetch_max_wait_ms=1500``; an agent slower than its fetches then
    idles about 1.4 s per ~900 events (measured on noida-db: 490 events/s instead of ~3,000).
    Still needed on Apache Kafka 4.4: ``python -m loadtest.bench_worker --workers 1`` drained
    8,000 records at 487 and 490 records/s with 100 ms, 402 and 372 with Faust's 1,500 ms."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.vigil_settings.fetch_max_wait_ms
        return consumer


class _VigilConsumer(aiokafka_driver.Consumer):
    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return _FastFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """Faust counts offsets its fetch loop jumped over as done, so commits pass them. vigil's topics have
        no such holes (neither compacted nor transactional): a jump is Faust handing records out of order, which
        ``OffsetContinuity`` repairs by seeking back, and the records come again and are acknowledged then.
        Counted as done as well, each of them sat twice in Faust's list of acknowledged offsets, and a commit
        advances only to the first repeat: measured on Kafka 4.4 after a takeover, the committed offset crept
        one record per commit and 8,434 processed records stayed uncommitted for minutes. Only the jumps the
        guard accepts as real become gaps (``add_accepted_gap``)."""

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets, without recording over commits made while it ran
        (``committed_after_seek``: a partition whose recorded offset went back was never committed again)."""
        fetched = {ensure_TP(tp): offset for tp, offset in (await self.seek_to_committed()).items()}
        kept = committed_after_seek(self._committed_offset, {tp: o for tp, o in fetched.items() if o is not None})
        later = {tp: (fetched[tp], kept[tp]) for tp in kept if kept[tp] != (fetched[tp] or None)}
        for tp, offset in fetched.items():
            if tp not in later:  # a partition committed further meanwhile: the fetch loop's mark is past that commit
                self._read_offset[tp] = offset if offset is not None and offset >= 0 else None
        self._committed_offset.update(kept)
        if later:
            logger.info("commits made while seeking to the committed offsets kept over the offsets fetched",
                        extra={"partitions": {str(tp): {"fetched": f, "kept": k} for tp, (f, k) in sorted(later.items())}})

    async def add_accepted_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """Let commits pass offsets ``offset_from``..``offset_to`` (inclusive), which will never come."""
        await super()._add_gap(tp, offset_from, offset_to)


class _IdempotentProducer(aiokafka_driver.Producer):
    """Faust turns idempotence on only for exactly-once apps. Without it a produce request retried after a
    partition leader died (its first attempt written, the acknowledgement lost) writes the outputs twice:
    measured on a three-node Apache Kafka 4.4 cluster, 2 of about 13 leader kills duplicated windows."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class _VigilTransport(aiokafka_driver.Transport):
    Consumer = _VigilConsumer
    Producer = _IdempotentProducer


class VigilApp(faust.App):
    vigil_settings: Settings
    model_control: Any  # the ModelControlWatcher, started with the worker

    def _new_transport(self) -> Any:
        return _VigilTransport(self.conf.broker_consumer, self)


def worker_data_dir(settings: Settings) -> Path:
    """Faust's table directory for this app id; Faust creates only its last component."""
    directory = settings.worker_data_dir / settings.worker_group_id
    directory.parent.mkdir(parents=True, exist_ok=True)
    return directory


def create_app(
    settings: Settings,
    *,
    codec: AvroCodec | None = None,
    models: ActivePumpModels | None = None,
    fall_model: ActiveFallModel | None | bool = True,
) -> VigilApp:
    """Build the worker app of ``settings.worker_role``: pump and fall agents, their tables, the model watcher and the
    /pumps trend pages (scoring), the ops.* stages (monitoring), or both (all); /metrics in every role.

    ``fall_model``: True loads the registry's active fall model; without one the fall
    topology is not started (its input stays in Kafka, unread) and the worker says so.
    """
    credentials, ssl_context = settings.faust_credentials()
    app = VigilApp(
        settings.worker_group_id,
        broker=settings.broker_urls,
        broker_credentials=credentials,
        ssl_context=ssl_context,
        store="memory://",
        # Faust's default "<app id>-data" lands in the working directory of every worker.
        datadir=worker_data_dir(settings),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        # Faust's leader topic is an extra empty subscription we do not use.
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # Faust waits for every event a stream took to be acked before it stops or rebalances, but events
        # buffered by take_events when the stream stops are never acked: on Apache Kafka a SIGTERMed worker
        # waited forever ("wait_empty: Waiting for tasks") until killed. Stages are idempotent per
        # (asset, seq) and commit only what they published, so unacked events are simply read again.
        stream_wait_empty=False,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
        producer_acks=-1,
        # Outputs of a batch are awaited together; a few ms of linger lets them share produce
        # requests (measured with loadtest backlogs: 1,479 records/s with no linger, 1,710 with 5 ms).
        producer_linger=settings.producer_linger_ms / 1000.0,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,
    )
    app.vigil_settings = settings
    codec = codec or codec_from_settings(settings.schema_registry)
    # One worker is one core's worth of work; scale out with workers per partition, not torch threads.
    import torch

    torch.set_num_threads(1)
    from vigil.streams.falls.agents import load_fall_model

    if fall_model is True:
        fall_model = load_fall_model(settings.models_dir)
    scoring, monitoring = settings.worker_role in ("all", "scoring"), settings.worker_role in ("all", "monitoring")
    app.model_control = None
    if scoring:
        models = models or load_pump_models(settings.models_dir)
        model_stages = _register_scoring_agents(app, settings, codec, models, fall_model or None)
        _register_model_serving(models, fall_model or None)
        _register_model_control(app, settings, codec, model_stages)
    if monitoring:
        from vigil.streams.ops.agents import register_ops_agents

        # The wearables' quality checks need the rate the fall model reads them at.
        register_ops_agents(app, settings, codec, fall_model.model.fs_hz if fall_model else None)
    _register_metrics_page(app)
    return app


def _register_scoring_agents(app: VigilApp, settings: Settings, codec: AvroCodec, models: ActivePumpModels,
                             fall_model: ActiveFallModel | None) -> dict[str, Any]:
    """Both topologies' agents; the stages that serve a model, by tier, for the model watcher."""
    from vigil.streams.falls.agents import register_fall_agents
    from vigil.streams.pumps.agents import register_pump_agents

    model_stages = register_pump_agents(app, settings, codec, models)
    if fall_model:
        model_stages |= register_fall_agents(app, settings, codec, fall_model)
    else:
        logger.warning("no active fall model: the fall topology is not running; train one with "
                       "`vigil train falls --pack PATH` (or --simulate)", extra={"models_dir": str(settings.models_dir)})
    return model_stages


def _register_model_control(app: VigilApp, settings: Settings, codec: AvroCodec, stages: dict[str, Any]) -> None:
    """Follow models.control from the worker's start: promotions and rollbacks swap models between batches."""
    from vigil.models.registry import ModelRegistry
    from vigil.streams.lifecycle.artifacts import fetch_artifact
    from vigil.streams.lifecycle.watcher import ControlApplier, ModelControlWatcher
    from vigil.streams.pumps.training import pump_pair_problem

    def pair_check(serving: dict[str, Any]) -> str | None:
        return pump_pair_problem(serving[EDGE_TIER], serving[CLOUD_TIER])

    registry = ModelRegistry(settings.models_dir)

    def fetch(tier: str, version: str) -> str | None:
        return fetch_artifact(settings, registry, tier, version, codec)

    applier = ControlApplier(stages, registry, codec, pair_check, fetch)
    watcher = ModelControlWatcher(settings, applier)
    app.model_control = watcher  # `vigil worker` starts it before the agents (ModelControlWatcher.start)


def _register_model_serving(models: ActivePumpModels, fall_model: ActiveFallModel | None) -> None:
    from vigil.streams.runtime import metrics

    metrics.BUILD.info({"edge_model": models.edge_version, "cloud_model": models.cloud_version,
                        "fall_model": fall_model.version if fall_model else "none"})
    metrics.MODEL_SERVING.labels(EDGE_TIER, "active", models.edge_version).set(1)
    metrics.MODEL_SERVING.labels(CLOUD_TIER, "active", models.cloud_version).set(1)
    if fall_model:
        metrics.MODEL_SERVING.labels(FALL_TIER, "active", fall_model.version).set(1)


def _register_metrics_page(app: VigilApp) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    from vigil.streams.runtime import metrics

    @app.timer(LAG_INTERVAL_S, name="consumer_lag")
    async def export_consumer_lag() -> None:
        """Records between each assigned partition's end and the offset committed for it (vigil_consumer_lag)."""
        from vigil.streams.runtime.agent_loop import consumer_highwaters

        consumer = app.consumer
        assigned = list(consumer.assignment())
        committed = getattr(consumer, "_committed_offset", {})  # Faust internal: TP -> next offset to read
        for tp, end in consumer_highwaters(app, assigned).items():
            if end is not None:
                done = committed.get(tp) or 0
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - done))

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])
