"""Worker side of models.control: read every change from the beginning, load the named artifact, swap it in.

Each worker reads the whole (one-partition, compacted) topic with its own
consumer, assigned, not in a group, so every worker sees every change. The
artifact is loaded and its sha256 checked here, off the stages' path; the
stage then picks the new model up at its next batch (``ModelServingStage``).
A change that cannot be applied leaves the serving model as it is: the
worker keeps scoring, publishes the finding to ``ops.events`` (and the record
itself to ``models.deadletter`` when the record is at fault), and counts it.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from vigil.models.lifecycle import ALIASES, change_problem, control_key
from vigil.models.registry import ModelIntegrityError, ModelNotFoundError, ModelRegistry
from vigil.streams.runtime import metrics
from vigil.streams.runtime.codec import AvroCodec, DecodeError
from vigil.streams.runtime.serving import ModelServingStage
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.stage import RawMessage, dead_letter
from vigil.streams.runtime.topics import MODELS_CONTROL, MODELS_DEADLETTER, OPS_EVENTS, SCHEMA_OF_TOPIC
from vigil.streams.runtime.validation import Rejection

logger = logging.getLogger(__name__)

CHANGE_SCHEMA = SCHEMA_OF_TOPIC[MODELS_CONTROL]
EVENT_SCHEMA = SCHEMA_OF_TOPIC[OPS_EVENTS]
# Given the models a swap would leave serving, per tier: why they cannot serve together, or None.
PairCheck = Callable[[Mapping[str, Any]], "str | None"]
# Installs (tier, version) into the worker's registry from elsewhere (models.artifacts): None once done, else why not.
Fetch = Callable[[str, str], "str | None"]


@dataclass
class ControlOutcome:
    """What applying one control record produced: an ops event, and a dead letter when the record was at fault."""

    event: dict[str, Any] | None = None
    dead_letter: dict[str, Any] | None = None


@dataclass
class ControlApplier:
    """Applies decoded control records to the stages of this worker; no Kafka here, so tests drive it directly."""

    stages: Mapping[str, ModelServingStage[Any]]
    registry: ModelRegistry
    codec: AvroCodec
    pair_check: PairCheck | None = None
    fetch: Fetch | None = None
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    applied_epochs: dict[str, int] = field(default_factory=dict)

    def apply(self, message: RawMessage) -> ControlOutcome:
        try:
            change = self.codec.decode(message.value, CHANGE_SCHEMA)
        except DecodeError as exc:
            return self._rejected(message, None, exc.reason, exc.detail)
        problem = change_problem(change)
        if problem is not None:
            return self._rejected(message, change, *problem)
        stage = self.stages.get(change["tier"])
        if stage is None:  # a tier this worker does not run (the fall topology without a fall model)
            logger.info("control record for a tier this worker does not serve", extra={"tier": change["tier"], "offset": message.offset})
            return ControlOutcome()
        key, alias = control_key(change["tier"], change["alias"]), change["alias"]
        if change["epoch"] <= self.applied_epochs.get(key, 0):
            return ControlOutcome()  # older than what this worker already applied
        self.applied_epochs[key] = change["epoch"]
        previous = stage.models.version_of(alias)
        if change["action"] == "retire":
            if previous is None:
                return ControlOutcome()
            stage.swap(None, None, alias=alias)
            self._serving_changed(change, previous, None)
            return ControlOutcome(self._event("model_retired", message, change, stage, "retired", f"{alias} {previous} retired"))
        if change["version"] == previous and (alias != "canary" or change["share"] == stage.models.canary_share):
            return ControlOutcome()
        try:
            model, meta = self._load(change["tier"], change["version"])
        except ModelNotFoundError as exc:
            return self._rejected(message, change, "unknown_version", str(exc))
        except ModelIntegrityError as exc:
            return self._refused(message, change, stage, "integrity", str(exc))
        if meta.get("sha256") != change["sha256"]:
            return self._refused(message, change, stage, "sha256_mismatch",
                                 f"the control record names sha256 {change['sha256']}, this worker's registry has {meta.get('sha256')} "
                                 f"for {change['version']} under {self.registry.root}")
        if self.pair_check is not None:
            # A canary or shadow reads (or feeds) the other tier's active model, just as the active one does.
            serving = {tier: s.model for tier, s in self.stages.items()} | {change["tier"]: model}
            incompatible = self.pair_check(serving)
            if incompatible:
                return self._refused(message, change, stage, "incompatible_pair", incompatible)
        stage.swap(model, change["version"], meta, alias=alias, share=change["share"])
        self._serving_changed(change, previous, change["version"])
        share = f" for {change['share']:.0%} of assets" if alias == "canary" else ""
        return ControlOutcome(self._event("model_switched", message, change, stage, "switched",
                                          f"{alias} {previous or 'none'} -> {change['version']}{share}"))

    def _load(self, tier: str, version: str) -> tuple[Any, dict[str, Any]]:
        """From this worker's registry, fetching the version first when the registry lacks it."""
        try:
            return self.registry.load(tier, version)
        except ModelNotFoundError as exc:
            if self.fetch is None:
                raise
            why_not = self.fetch(tier, version)
            if why_not is not None:
                raise ModelNotFoundError(f"{exc}; {why_not}") from None
        return self.registry.load(tier, version)

    def _serving_changed(self, change: Mapping[str, Any], previous: str | None, version: str | None) -> None:
        tier, alias = change["tier"], change["alias"]
        metrics.MODEL_SWITCHES.labels(tier, alias).inc()
        if previous is not None:
            metrics.MODEL_SERVING.labels(tier, alias, previous).set(0)
        if version is not None:
            metrics.MODEL_SERVING.labels(tier, alias, version).set(1)
        if alias == "canary":
            metrics.CANARY_SHARE.labels(tier).set(change["share"] if version is not None else 0.0)
        logger.info("model switched", extra={"tier": tier, "alias": alias, "from": previous, "to": version,
                                             "epoch": change["epoch"], "who": change["who"], "why": change["why"]})

    def _event(self, kind: str, message: RawMessage, change: Mapping[str, Any] | None, stage: ModelServingStage[Any] | None,
               reason: str, detail: str) -> dict[str, Any]:
        change = change or {}
        return {
            "kind": kind, "worker": self.worker, "topology": change.get("topology"), "tier": change.get("tier"),
            "alias": change.get("alias"), "version": change.get("version"),
            "serving_version": stage.models.version_of(change["alias"] if change.get("alias") in ALIASES else "active") if stage else None,
            "reason": reason, "detail": detail[:4000], "control_offset": message.offset,
            "requested_at_ms": change.get("at_ms"), "at_ms": int(time.time() * 1000),
        }

    def _refused(self, message: RawMessage, change: Mapping[str, Any], stage: ModelServingStage[Any], reason: str,
                 detail: str) -> ControlOutcome:
        metrics.MODEL_REFUSALS.labels(change["tier"], reason).inc()
        logger.warning("model refused; serving the current one", extra={"tier": change["tier"], "version": change["version"],
                                                                        "serving": stage.model_version, "reason": reason, "detail": detail})
        return ControlOutcome(self._event("model_refused", message, change, stage, reason, detail))

    def _rejected(self, message: RawMessage, change: Mapping[str, Any] | None, reason: str, detail: str) -> ControlOutcome:
        tier = (change or {}).get("tier")
        stage = self.stages.get(tier) if isinstance(tier, str) else None
        metrics.MODEL_REFUSALS.labels(str(tier), reason).inc()
        logger.warning("control record rejected", extra={"offset": message.offset, "reason": reason, "detail": detail})
        letter = dead_letter(message, Rejection(reason, detail))
        return ControlOutcome(self._event("control_rejected", message, change, stage, reason, detail), letter)


class ModelControlWatcher:
    """The thread that feeds models.control to a ``ControlApplier`` and publishes what it produces."""

    def __init__(self, settings: Settings, applier: ControlApplier, poll_s: float = 0.2) -> None:
        self.settings = settings
        self.applier = applier
        self.poll_s = poll_s
        self._stop = threading.Event()
        # Set once every change on the topic when the worker started has been applied (or the watcher failed).
        self.caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vigil-model-control", daemon=True)

    def start(self, catch_up_timeout_s: float = 30.0) -> bool:
        """Start following; returns once the changes already on the topic are applied (False on timeout), so a
        promotion made while no worker ran is in force before the worker's first batch."""
        self._thread.start()
        return self.caught_up.wait(catch_up_timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

        settings = self.settings
        name = settings.topic(MODELS_CONTROL)
        consumer = Consumer(settings.reader_config(f"{settings.group_id}.model-control", **{"isolation.level": "read_committed", "enable.partition.eof": True}))
        producer = Producer(settings.confluent_config(**{"enable.idempotence": True, "acks": "all", "log.connection.close": False}))
        try:
            # The worker created the lifecycle topics before it started (ensure_topics); one partition.
            consumer.assign([TopicPartition(name, 0, OFFSET_BEGINNING)])
            while not self._stop.is_set():
                for msg in consumer.consume(100, timeout=self.poll_s):
                    if msg.error() is not None:
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            self.caught_up.set()
                            continue
                        logger.warning("reading models.control", extra={"error": str(msg.error())})
                        continue
                    outcome = self.applier.apply(RawMessage(name, msg.partition(), msg.offset(), msg.key(), msg.value()))
                    self._publish(producer, outcome)
        except Exception:
            # The serving models stay as they are; scoring goes on without control.
            logger.exception("model control watcher stopped; models stay as they are until the worker restarts")
        finally:
            self.caught_up.set()
            producer.flush(10)
            consumer.close()

    def _publish(self, producer: Any, outcome: ControlOutcome) -> None:
        codec = self.applier.codec
        if outcome.dead_letter is not None:
            topic = self.settings.topic(MODELS_DEADLETTER)
            key = f"{outcome.dead_letter['partition']}:{outcome.dead_letter['offset']}".encode()
            producer.produce(topic, key=key, value=codec.encode(topic, SCHEMA_OF_TOPIC[MODELS_DEADLETTER], outcome.dead_letter))
        if outcome.event is not None:
            topic = self.settings.topic(OPS_EVENTS)
            producer.produce(topic, key=self.applier.worker.encode(), value=codec.encode(topic, EVENT_SCHEMA, outcome.event))
        producer.flush(30)
