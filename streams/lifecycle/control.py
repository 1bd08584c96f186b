"""Topics models.control and models.audit: writing a model change, and reading what is in force and what happened.

One change is two records, written in one Kafka transaction: the latest per
``topology|tier|alias`` on the compacted ``models.control`` (what workers
serve), and the same record appended to ``models.audit`` (kept forever; the
history MLflow's aliases lack). The transactional id is one per deployment,
so two operators changing models at once cannot both commit on the same
epoch: the later ``init_transactions`` fences the earlier writer.
"""
from __future__ import annotations

import getpass
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from vigil.models.lifecycle import TOPOLOGY_OF_TIER, change_problem, control_key, current_changes, rollback_target
from vigil.models.registry import ModelIntegrityError, ModelNotFoundError, ModelRegistry
from vigil.streams.lifecycle.artifacts import version_chunks
from vigil.streams.runtime.codec import AvroCodec, DecodeError
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import LIFECYCLE_TOPICS, MODELS_ARTIFACTS, MODELS_AUDIT, MODELS_CONTROL, SCHEMA_OF_TOPIC, ensure_topics

CHANGE_SCHEMA = SCHEMA_OF_TOPIC[MODELS_CONTROL]
CHUNK_SCHEMA = SCHEMA_OF_TOPIC[MODELS_ARTIFACTS]


class ChangeRefused(ValueError):
    """A change the CLI will not write; the message says why. Nothing was written."""


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def read_to_end(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[TopicRecord]:
    """Every committed record of ``topic`` (logical name) from the beginning to the end it has now; [] when the
    topic does not exist. Manual assignment: no consumer group is joined or committed to."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    name = settings.topic(topic)
    consumer = Consumer(settings.reader_config(f"{settings.group_id}.reader-{uuid.uuid4().hex[:8]}",
                                               **{"enable.partition.eof": True, "isolation.level": "read_committed"}))
    try:
        metadata = consumer.list_topics(name, timeout=timeout_s).topics.get(name)
        if metadata is None or metadata.error is not None:
            return []
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in metadata.partitions])
        # A transaction's commit marker takes an offset that is never delivered: partition EOF, which librdkafka
        # reports at the end of what a read_committed reader can see, is the only reliable "caught up".
        pending, records = set(metadata.partitions), []
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {name} to its end in {timeout_s:g} s (partitions {sorted(pending)} behind)")
            for msg in consumer.consume(500, timeout=0.2):
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        continue
                    raise RuntimeError(f"reading {name}: {msg.error()}")
                records.append(TopicRecord(msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1]))
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def read_records(settings: Settings, codec: AvroCodec, topic: str, timeout_s: float = 120.0) -> tuple[list[dict[str, Any]], int]:
    """Decoded records of ``topic`` (logical name) from the beginning to its end now, with the schema the topic carries,
    and how many were not decodable (skipped: the workers dead-letter them)."""
    records, skipped = [], 0
    for raw in read_to_end(settings, topic, timeout_s):
        try:
            records.append(codec.decode(raw.value, SCHEMA_OF_TOPIC[topic]))
        except DecodeError:
            skipped += 1
    return records, skipped


def read_changes(settings: Settings, topic: str, codec: AvroCodec | None = None, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Decoded ModelChange records of models.control or models.audit, in offset order (undecodable ones skipped:
    the CLI never writes them, and workers dead-letter them)."""
    codec = codec or AvroCodec()
    changes = []
    for record in read_to_end(settings, topic, timeout_s):
        try:
            changes.append({**codec.decode(record.value, CHANGE_SCHEMA), "offset": record.offset})
        except DecodeError:
            continue
    return changes


def default_who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


class ModelChanges:
    """Promote and roll back through the control topics; the registry's ACTIVE file follows, so a worker
    started with no control records, and `vigil models list`, agree with the cluster."""

    def __init__(self, settings: Settings, registry: ModelRegistry | None = None, codec: AvroCodec | None = None) -> None:
        self.settings = settings
        self.registry = registry or ModelRegistry(settings.models_dir)
        self.codec = codec or AvroCodec()

    def in_force(self, tier: str, alias: str = "active") -> Mapping[str, Any] | None:
        return current_changes(read_changes(self.settings, MODELS_CONTROL, self.codec)).get(control_key(tier, alias))

    def history(self, tier: str | None = None) -> list[dict[str, Any]]:
        return [c for c in read_changes(self.settings, MODELS_AUDIT, self.codec) if tier is None or c["tier"] == tier]

    def promote(self, tier: str, version: str, *, why: str, who: str | None = None, alias: str = "active",
                share: float = 1.0, action: str = "promote") -> dict[str, Any]:
        """Write the change (after checking it) and return it."""
        return self.promote_together([(tier, version)], why=why, who=who, alias=alias, share=share, action=action)[0]

    def promote_together(self, versions: list[tuple[str, str]], *, why: str, who: str | None = None, alias: str = "active",
                         share: float = 1.0, action: str = "promote") -> list[dict[str, Any]]:
        """Several tiers' changes in one transaction (a retrained edge and cloud pair): all are written or none."""
        sha256s = [self._sha256(tier, version, why) for tier, version in versions]
        ensure_topics(self.settings, LIFECYCLE_TOPICS)
        # Read once for all tiers: each read is a consumer of its own, read to the topic's end.
        in_force = current_changes(read_changes(self.settings, MODELS_CONTROL, self.codec))
        history = self.history()
        records, artifacts, changes = [], [], []
        for (tier, version), sha256 in zip(versions, sha256s):
            change, retirement, artifact = self._prepare(tier, version, sha256, in_force, history, why=why, who=who, alias=alias,
                                                         share=share, action=action)
            changes.append(change)
            records += [change] + ([retirement] if retirement else [])
            artifacts += artifact
        self._write(*records, artifact=artifacts)
        if alias == "active":
            for change in changes:
                self.registry.activate(change["tier"], change["version"], action=action)
        return changes

    def _sha256(self, tier: str, version: str, why: str) -> str:
        """The version's sha256, once the change passes the checks that need no broker."""
        if tier not in TOPOLOGY_OF_TIER:
            raise ChangeRefused(f"unknown tier {tier!r}: one of {sorted(TOPOLOGY_OF_TIER)}")
        if not why.strip():
            raise ChangeRefused("say why (--why): the audit trail records it")
        try:
            # hashed here, so a change never names an artifact workers would refuse
            sha256 = self.registry.checked_artifact(tier, version)[1]["sha256"]
        except ModelNotFoundError:
            known = [m["version"] for m in self.registry.versions(tier)]
            raise ChangeRefused(f"no version {version!r} of {tier} in {self.registry.root} (known: {known or 'none'})") from None
        except ModelIntegrityError as exc:
            raise ChangeRefused(f"refusing to promote a tampered artifact: {exc}") from None
        return sha256

    def _prepare(self, tier: str, version: str, sha256: str, in_force: Mapping[str, Mapping[str, Any]], history: list[dict[str, Any]], *,
                 why: str, who: str | None, alias: str, share: float,
                 action: str) -> tuple[dict[str, Any], dict[str, Any] | None, list[tuple[bytes, dict[str, Any]]]]:
        """(the change, the canary's retirement when the canary's version becomes active, the artifact chunks to publish),
        given what models.control holds in force and models.audit's history."""
        current = in_force.get(control_key(tier, alias))
        if current is not None and current["action"] == "retire":
            current_version = None
        elif current is not None:
            current_version = current["version"]
        else:  # before the first change, the active model is what the registry activates
            current_version = self.registry.active_version(tier) if alias == "active" else None
        change = {
            "topology": TOPOLOGY_OF_TIER[tier], "tier": tier, "alias": alias, "action": action, "version": version,
            "previous_version": current_version,
            "sha256": sha256, "share": float(share), "epoch": (current["epoch"] + 1) if current else 1,
            "who": who or default_who(), "why": why, "at_ms": int(time.time() * 1000),
        }
        problem = change_problem(change)
        if problem is not None:
            raise ChangeRefused(f"{problem[0]}: {problem[1]}")
        if current_version == version and current is not None and (alias != "canary" or current["share"] == change["share"]):
            raise ChangeRefused(f"{tier} {alias} is already {version}")
        canary = in_force.get(control_key(tier, "canary")) if alias == "active" else None
        retirement = None
        if canary is not None and canary["version"] == version and canary["action"] != "retire":
            # The canary becomes the active model for every asset, so the canary alias ends in the same transaction
            # (after the promotion: its assets never fall back to the old active model in between).
            retirement = self._retirement(tier, "canary", why=f"promoted to active: {why}", who=who, current=canary)
        published = any(c["tier"] == tier and c["version"] == version and c["sha256"] == sha256 for c in history)
        # An earlier change already put these bytes on models.artifacts.
        return change, retirement, [] if published else version_chunks(self.registry, tier, version)

    def retire(self, tier: str, alias: str, *, why: str, who: str | None = None) -> dict[str, Any]:
        """End a shadow or a canary: workers stop serving it at their next batch."""
        if tier not in TOPOLOGY_OF_TIER:
            raise ChangeRefused(f"unknown tier {tier!r}: one of {sorted(TOPOLOGY_OF_TIER)}")
        if alias == "active":
            raise ChangeRefused("the active model cannot be retired, only replaced (promote or roll back)")
        if not why.strip():
            raise ChangeRefused("say why (--why): the audit trail records it")
        ensure_topics(self.settings, LIFECYCLE_TOPICS)
        change = self._retirement(tier, alias, why=why, who=who)
        self._write(change)
        return change

    def _retirement(self, tier: str, alias: str, *, why: str, who: str | None,
                    current: Mapping[str, Any] | None = None) -> dict[str, Any]:
        current = current or self.in_force(tier, alias)
        if current is None or current["action"] == "retire":
            raise ChangeRefused(f"{tier} has no {alias} to retire")
        return {**{k: v for k, v in current.items() if k != "offset"}, "action": "retire", "previous_version": current["version"], "share": 0.0,
                "epoch": current["epoch"] + 1, "who": who or default_who(), "why": why, "at_ms": int(time.time() * 1000)}

    def rollback(self, tier: str, *, why: str, to: str | None = None, who: str | None = None, alias: str = "active") -> dict[str, Any]:
        if to is None:
            current = self.in_force(tier, alias)
            serving = current["version"] if current else self.registry.active_version(tier)
            history = [c for c in self.history(tier) if c["alias"] == alias]
            if history and history[0]["previous_version"]:
                # What served before the first recorded change (the registry's active version then) is a rollback target too.
                history.insert(0, {"action": "promote", "version": history[0]["previous_version"]})
            to = rollback_target(history, serving) if serving else None
            if to is None:
                raise ChangeRefused(f"{tier} {alias} has no earlier version than {serving} in {self.settings.topic(MODELS_AUDIT)}; "
                                    "name one with --to")
        return self.promote(tier, to, why=why, who=who, alias=alias, action="rollback")

    def _write(self, *changes: Mapping[str, Any], artifact: list[tuple[bytes, dict[str, Any]]] = ()) -> None:
        """All ``changes`` or none, each to models.audit and models.control, after the artifact's chunks."""
        from confluent_kafka import KafkaException, Producer

        producer = Producer(self.settings.confluent_config(**{
            "transactional.id": f"{self.settings.group_id}.models-control",
            "enable.idempotence": True, "acks": "all", "log.connection.close": False,
        }))
        try:
            producer.init_transactions(30)
            producer.begin_transaction()
            chunk_topic = self.settings.topic(MODELS_ARTIFACTS)
            for key, chunk in artifact:
                producer.produce(chunk_topic, key=key, value=self.codec.encode(chunk_topic, CHUNK_SCHEMA, chunk))
                producer.poll(0)
            for change in changes:
                key = control_key(change["tier"], change["alias"]).encode()
                for topic in (MODELS_AUDIT, MODELS_CONTROL):
                    name = self.settings.topic(topic)
                    producer.produce(name, key=key, value=self.codec.encode(name, CHANGE_SCHEMA, change))
            producer.commit_transaction(30)
        except KafkaException as exc:
            try:
                producer.abort_transaction(10)
            except KafkaException:
                pass
            raise RuntimeError(f"the change was not written (nothing changed): {exc.args[0].str()}") from None
