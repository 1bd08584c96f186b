"""The pump stages run in-process, without a broker: for training, evaluation and replay tests.

Records are encoded and decoded exactly as on the wire and pass through the
same stage classes the agents run, with plain dicts as state, so a number
measured here is the number the stream produces.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from vigil.models.alerts import AlertPolicy
from vigil.models.assets import AssetCatalog
from vigil.models.cloud import CloudModel
from vigil.models.edge import EdgeModel
from vigil.streams.pumps.alerts import AlertStage
from vigil.streams.pumps.cloud import CloudStage
from vigil.streams.pumps.edge import EdgeStage
from vigil.streams.pumps.process import ProcessStage
from vigil.streams.pumps.vibration import VibrationStage
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.topics import PUMP_FEATURES, PUMP_SCORES_CLOUD, PUMP_SCORES_EDGE, RAW_TOPIC_OF_KIND, SCHEMA_OF_TOPIC


@dataclass
class OfflineOutput:
    features: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    cloud_scores: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    seq_gaps: int = 0

    def extend(self, other: "OfflineOutput") -> None:
        self.features += other.features
        self.scores += other.scores
        self.cloud_scores += other.cloud_scores
        self.alerts += other.alerts
        self.dead_letters += other.dead_letters
        self.duplicates += other.duplicates
        self.seq_gaps += other.seq_gaps

    def absorb(self, result: StageResult) -> list[dict[str, Any]]:
        self.dead_letters += result.dead_letters
        self.duplicates += result.duplicates
        self.seq_gaps += result.seq_gaps
        return result.outputs


class OfflinePumpPipeline:
    """pump.vibration.raw / pump.process.raw -> pump.features [-> pump.scores.edge [-> pump.scores.cloud -> alerts]], in memory.

    ``feed`` takes (kind, key, value) triples, kind "vibration" or "process",
    value an Avro-ready dict, and may be called repeatedly: state carries over.
    """

    def __init__(
        self,
        *,
        codec: AvroCodec | None = None,
        assets: AssetCatalog | None = None,
        edge: tuple[EdgeModel, str] | None = None,
        cloud: tuple[CloudModel, str] | None = None,
        cloud_thresholds: Mapping[str, float] | None = None,
        policy: AlertPolicy | None = None,
    ) -> None:
        if cloud is not None and edge is None:
            raise ValueError("the cloud tier needs the edge tier in front of it")
        self.codec = codec or AvroCodec()
        self.vibration = VibrationStage(self.codec, assets)
        self.process = ProcessStage(self.codec, assets=assets)
        self.edge = EdgeStage(self.codec, edge[0], edge[1], assets) if edge else None
        self.cloud = CloudStage(self.codec, cloud[0], cloud[1], cloud_thresholds) if cloud else None
        self.alerts = AlertStage(self.codec, policy) if cloud else None
        self.states: dict[str, dict[str, Any]] = {name: {} for name in ("vibration", "process", "edge", "cloud", "alerts")}
        self._offsets: dict[str, int] = defaultdict(int)

    def _message(self, topic: str, key: str, value: bytes) -> RawMessage:
        offset = self._offsets[topic]
        self._offsets[topic] += 1
        return RawMessage(topic, 0, offset, key.encode(), value)

    def _encoded(self, topic: str, records: list[dict[str, Any]]) -> list[RawMessage]:
        return [self._message(topic, r["asset_id"], self.codec.encode(topic, SCHEMA_OF_TOPIC[topic], r)) for r in records]

    def _run(self, name: str, stage: Any, messages: list[RawMessage], out: OfflineOutput) -> list[dict[str, Any]]:
        result = stage.process(messages, self.states[name])
        self.states[name].update(result.state_updates)
        return out.absorb(result)

    def feed(self, records: Iterable[tuple[str, str, dict[str, Any]]]) -> OfflineOutput:
        batches: dict[str, list[RawMessage]] = {"vibration": [], "process": []}
        for kind, key, value in records:
            topic = RAW_TOPIC_OF_KIND[kind]
            batches[kind].append(self._message(topic, key, self.codec.encode(topic, SCHEMA_OF_TOPIC[topic], value)))
        out = OfflineOutput()
        for kind, stage in (("vibration", self.vibration), ("process", self.process)):
            if batches[kind]:
                out.features += self._run(kind, stage, batches[kind], out)
        self._score(out)
        return out

    def feed_features(self, features: list[dict[str, Any]]) -> OfflineOutput:
        """Feature windows (pump.features records) through the scoring tiers only."""
        out = OfflineOutput(features=list(features))
        self._score(out)
        return out

    def _score(self, out: OfflineOutput) -> None:
        if self.edge is not None and out.features:
            out.scores = self._run("edge", self.edge, self._encoded(PUMP_FEATURES, out.features), out)
        if self.cloud is not None and self.alerts is not None and out.scores:
            out.cloud_scores = self._run("cloud", self.cloud, self._encoded(PUMP_SCORES_EDGE, out.scores), out)
            if out.cloud_scores:
                out.alerts = self._run("alerts", self.alerts, self._encoded(PUMP_SCORES_CLOUD, out.cloud_scores), out)

    def feed_batched(self, records: Iterable[tuple[str, str, dict[str, Any]]], batch_size: int = 256) -> OfflineOutput:
        """``feed`` in batches of ``batch_size``, as the agents see them."""
        total = OfflineOutput()
        batch: list[tuple[str, str, dict[str, Any]]] = []
        for record in records:
            batch.append(record)
            if len(batch) >= batch_size:
                total.extend(self.feed(batch))
                batch = []
        if batch:
            total.extend(self.feed(batch))
        return total
