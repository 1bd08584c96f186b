"""Topic names, the Avro schema each carries, and their creation with configs.

Keys are the asset id everywhere (pump or wearer), so all of one asset's
records land on one partition, in order. Topic names are fixed by the design brief;
``VIGIL_TOPIC_PREFIX`` prepends a namespace (tenants, tests).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from vigil.streams.runtime.settings import Settings

logger = logging.getLogger(__name__)

PUMP_VIBRATION_RAW = "pump.vibration.raw"
PUMP_PROCESS_RAW = "pump.process.raw"
PUMP_FEATURES = "pump.features"
PUMP_SCORES_EDGE = "pump.scores.edge"
PUMP_SCORES_CLOUD = "pump.scores.cloud"
PUMP_SCORES_EDGE_SHADOW = "pump.scores.edge.shadow"
PUMP_SCORES_CLOUD_SHADOW = "pump.scores.cloud.shadow"
ALERTS = "alerts"
PUMP_TRENDS = "pump.trends"
PUMP_DEADLETTER = "pump.deadletter"

WEARABLE_IMU_RAW = "wearable.imu.raw"
FALL_CANDIDATES = "fall.candidates"
FALL_SUSPECTED = "fall.suspected"
FALL_SUSPECTED_SHADOW = "fall.suspected.shadow"
FALL_CONFIRM_REQUEST = "fall.confirm_request"
WEARABLE_USER_RESPONSE = "wearable.user_response"
FALL_OUTCOMES = "fall.outcomes"
FALL_DEADLETTER = "fall.deadletter"

MODELS_CONTROL = "models.control"
MODELS_AUDIT = "models.audit"
MODELS_ARTIFACTS = "models.artifacts"
MODELS_DEADLETTER = "models.deadletter"
OPS_EVENTS = "ops.events"

OPS_DRIFT = "ops.drift"
OPS_DRIFT_WINDOWS = "ops.drift.windows"
OPS_QUALITY = "ops.quality"
OPS_QUALITY_WINDOWS = "ops.quality.windows"
ALERTS_FEEDBACK = "alerts.feedback"
ALERTS_LABELLED = "alerts.labelled"
MAINTENANCE_FAILURES = "maintenance.failures"
OPS_FAILURES = "ops.failures"
# Fleet summaries and fleet findings are keyed by this one key, so one worker's fleet stage sees every asset's windows.
FLEET_KEY = "fleet"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    schema: str  # full Avro name of the value
    doc: str
    config: dict[str, str] = field(default_factory=dict)
    # None: the settings' partition count. The lifecycle topics have one partition, so every worker
    # reads every change in the order it was made.
    partitions: int | None = None


PUMP_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(PUMP_VIBRATION_RAW, "vigil.pumps.VibrationChunk", "waveform chunks from pump accelerometers"),
    TopicSpec(PUMP_PROCESS_RAW, "vigil.pumps.ProcessSample", "process sensor readings"),
    TopicSpec(PUMP_FEATURES, "vigil.pumps.FeatureWindow", "feature vectors per window"),
    TopicSpec(PUMP_SCORES_EDGE, "vigil.pumps.EdgeScore", "edge-tier Isolation Forest verdicts"),
    TopicSpec(PUMP_SCORES_CLOUD, "vigil.pumps.CloudScore", "cloud-tier LSTM autoencoder verdicts on flagged windows"),
    TopicSpec(PUMP_SCORES_EDGE_SHADOW, "vigil.pumps.EdgeScore", "the edge shadow model's verdicts on the same windows; nothing acts on them"),
    TopicSpec(PUMP_SCORES_CLOUD_SHADOW, "vigil.pumps.CloudScore", "the cloud shadow model's verdicts on the same windows; nothing acts on them"),
    TopicSpec(ALERTS, "vigil.common.Alert", "alert episodes: open, update, close; ids deterministic"),
    TopicSpec(PUMP_TRENDS, "vigil.pumps.PumpTrend", "hourly trend buckets per pump with the rolling week; latest revision per (asset, hour) wins"),
    TopicSpec(PUMP_DEADLETTER, "vigil.common.DeadLetter", "rejected pump records, with reason and original bytes"),
)

FALL_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(WEARABLE_IMU_RAW, "vigil.falls.ImuChunk", "accelerometer chunks from wearables"),
    TopicSpec(FALL_CANDIDATES, "vigil.falls.FallCandidate", "stage 1: impacts that passed the screen, with their 5 s window"),
    TopicSpec(FALL_SUSPECTED, "vigil.falls.FallSuspected", "stage 2: candidates the fall model fired on"),
    TopicSpec(FALL_SUSPECTED_SHADOW, "vigil.falls.FallSuspected", "candidates the fall shadow model fired on; nothing acts on them"),
    TopicSpec(FALL_CONFIRM_REQUEST, "vigil.falls.ConfirmRequest", "stage 3: are-you-OK questions to the wearer's device"),
    TopicSpec(WEARABLE_USER_RESPONSE, "vigil.falls.UserResponse", "answers from the wearer's device"),
    TopicSpec(FALL_OUTCOMES, "vigil.falls.FallOutcome", "how each suspected fall was settled; dismissed ones are labelled false alarms"),
    TopicSpec(FALL_DEADLETTER, "vigil.common.DeadLetter", "rejected wearable records, with reason and original bytes"),
)

LIFECYCLE_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(MODELS_CONTROL, "vigil.lifecycle.ModelChange", "what each model alias points at; latest per topology|tier|alias wins",
              {"cleanup.policy": "compact"}, partitions=1),
    TopicSpec(MODELS_AUDIT, "vigil.lifecycle.ModelChange", "every model change in order: who, why, when; kept forever",
              {"retention.ms": "-1"}, partitions=1),
    TopicSpec(MODELS_ARTIFACTS, "vigil.lifecycle.ArtifactChunk", "registry versions in 512 KiB chunks, for workers without the trainer's disk",
              {"cleanup.policy": "compact"}, partitions=1),
    TopicSpec(MODELS_DEADLETTER, "vigil.common.DeadLetter", "control records workers refused, with the reason", partitions=1),
    TopicSpec(OPS_EVENTS, "vigil.ops.OpsEvent", "what workers did or refused: model switches, refused models, rejected control records",
              partitions=1),
)

MONITORING_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(OPS_DRIFT_WINDOWS, "vigil.ops.DriftWindow",
              "each pump's closed drift windows as binned counts, all under the key 'fleet' for the fleet drift stage"),
    TopicSpec(OPS_DRIFT, "vigil.ops.DriftFinding", "feature and prediction drift episodes per pump and for the fleet: open, update, close"),
    TopicSpec(OPS_QUALITY_WINDOWS, "vigil.ops.QualityWindow",
              "each device's closed data-quality windows, all under the key 'fleet' for the fleet quality stage"),
    TopicSpec(OPS_QUALITY, "vigil.ops.QualityFinding", "data-quality episodes per device and check, and for the fleet: open, update, close"),
    TopicSpec(ALERTS_FEEDBACK, "vigil.common.AlertFeedback", "what maintenance found for each alert (`vigil alerts resolve`), keyed by asset"),
    TopicSpec(ALERTS_LABELLED, "vigil.ops.LabelledEpisode", "alert episodes joined with their latest label; unlabelled ones say so"),
    TopicSpec(MAINTENANCE_FAILURES, "vigil.ops.FailureReport", "failures maintenance found (`vigil failures report`), alerted or not, keyed by asset"),
    TopicSpec(OPS_FAILURES, "vigil.ops.FailureVerdict", "each reported failure judged DETECTED or MISSED against its asset's alert episodes"),
)

ALL_TOPICS: tuple[TopicSpec, ...] = PUMP_TOPICS + FALL_TOPICS + LIFECYCLE_TOPICS + MONITORING_TOPICS
SCHEMA_OF_TOPIC = {spec.name: spec.schema for spec in ALL_TOPICS}
# Raw record kinds (as the simulator and pack readers name them) and their input topics.
RAW_TOPIC_OF_KIND = {"vibration": PUMP_VIBRATION_RAW, "process": PUMP_PROCESS_RAW}


RAW_TOPICS = frozenset({PUMP_VIBRATION_RAW, PUMP_PROCESS_RAW, WEARABLE_IMU_RAW})


def spec_partitions(spec: TopicSpec, settings: Settings) -> int:
    return spec.partitions or settings.partitions


def topic_configs(spec: TopicSpec, settings: Settings) -> dict[str, str]:
    """The configs vigil wants on a topic: retention (raw topics keep less), cleanup policy, min in-sync replicas."""
    retention = settings.raw_retention_ms if spec.name in RAW_TOPICS else settings.retention_ms
    policy = settings.trends_cleanup_policy if spec.name == PUMP_TRENDS else "delete"
    return {"cleanup.policy": policy, "retention.ms": str(retention),
            "min.insync.replicas": str(settings.effective_min_insync_replicas), **spec.config}


def changelog_configs(settings: Settings) -> dict[str, str]:
    """Extra configs of the workers' changelog topics (Faust makes them compacted): the same durability."""
    return {"min.insync.replicas": str(settings.effective_min_insync_replicas)}


@dataclass(frozen=True)
class TopicDrift:
    topic: str
    setting: str  # "exists", "partitions", "replication" or a config name
    wanted: str
    actual: str


def check_topics(settings: Settings, specs: Iterable[TopicSpec] = ALL_TOPICS, timeout_s: float = 30.0) -> list[TopicDrift]:
    """Where the cluster differs from the settings: missing topics, partition counts, replication, configs.

    Partition counts and replication are reported, never changed here: moving keys between
    partitions or replicas of a live topic is an operator's decision.
    """
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(settings.confluent_config())
    metadata = admin.list_topics(timeout=timeout_s).topics
    drift: list[TopicDrift] = []
    present = []
    for spec in specs:
        name = settings.topic(spec.name)
        topic = metadata.get(name)
        if topic is None:
            drift.append(TopicDrift(name, "exists", "yes", "no"))
            continue
        present.append((spec, name))
        if len(topic.partitions) != spec_partitions(spec, settings):
            drift.append(TopicDrift(name, "partitions", str(spec_partitions(spec, settings)), str(len(topic.partitions))))
        replicas = {len(p.replicas) for p in topic.partitions.values()}
        if replicas != {settings.replication}:
            drift.append(TopicDrift(name, "replication", str(settings.replication), ",".join(map(str, sorted(replicas)))))
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for _, name in present]
    described = admin.describe_configs(resources, request_timeout=timeout_s) if resources else {}
    for (spec, name), resource in zip(present, resources):
        actual = {key: entry.value for key, entry in described[resource].result(timeout=timeout_s).items()}
        for key, wanted in topic_configs(spec, settings).items():
            if actual.get(key) != wanted:
                drift.append(TopicDrift(name, key, wanted, str(actual.get(key))))
    return drift


def ensure_topics(settings: Settings, specs: Iterable[TopicSpec] = ALL_TOPICS, timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet (partitions and configs from settings); returns those created.

    Existing topics are left as they are: changing partition counts of a live
    topic moves keys between partitions and is an operator's decision.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.confluent_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(settings.topic(spec.name), spec_partitions(spec, settings), settings.replication, config=topic_configs(spec, settings))
        for spec in specs
        if settings.topic(spec.name) not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another worker won the race
            raise
    _wait_until_listed(admin, created, timeout_s)
    logger.info("created topics", extra={"topics": created})
    return created


def _wait_until_listed(admin: Any, names: list[str], timeout_s: float) -> None:
    """A created topic reaches every broker's metadata a moment later (measured on a three-node cluster: the
    next metadata request missed all 15); wait for it, so a client started right after finds its topics."""
    deadline = time.monotonic() + timeout_s
    missing = set(names)
    while missing and time.monotonic() < deadline:
        missing -= set(admin.list_topics(timeout=timeout_s).topics)
        if missing:
            time.sleep(0.1)
