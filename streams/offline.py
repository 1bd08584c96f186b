"""The pump stages run in-process, without a broker: for training, evaluation and replay tests.

Records are encoded and decoded exactly as on the wire and pass through the
same stage classes the agents run, with plain dicts as state, so a number
measured here is the number the stream produces.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from models.assets import AssetCatalog
from models.edge import EdgeModel
from streams.codec import AvroCodec
from streams.pumps.edge import EdgeStage
from streams.pumps.process import ProcessStage
from streams.pumps.vibration import VibrationStage
from streams.stage import RawMessage
from streams.topics import PUMP_FEATURES, RAW_TOPIC_OF_KIND, SCHEMA_OF_TOPIC



@dataclass
class OfflineOutput:
    features: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    seq_gaps: int = 0

    def extend(self, other: "OfflineOutput") -> None:
        self.features += other.features
        self.scores += other.scores
        self.dead_letters += other.dead_letters
        self.duplicates += other.duplicates
        self.seq_gaps += other.seq_gaps


class OfflinePumpPipeline:
    """pump.vibration.raw / pump.process.raw -> pump.features [-> pump.scores.edge], in memory.

    ``feed`` takes (kind, key, value) triples, kind "vibration" or "process",
    value an Avro-ready dict, and may be called repeatedly: state carries over.
    """

    def __init__(
        self,
        *,
        codec: AvroCodec | None = None,
        assets: AssetCatalog | None = None,
        edge: tuple[EdgeModel, str] | None = None,
    ) -> None:
        self.codec = codec or AvroCodec()
        self.vibration = VibrationStage(self.codec, assets)
        self.process = ProcessStage(self.codec)
        self.edge = EdgeStage(self.codec, edge[0], edge[1]) if edge else None
        self.states: dict[str, dict[str, Any]] = {"vibration": {}, "process": {}, "edge": {}}
        self._offsets: dict[str, int] = defaultdict(int)

    def _message(self, topic: str, key: str, value: bytes) -> RawMessage:
        offset = self._offsets[topic]
        self._offsets[topic] += 1
        return RawMessage(topic, 0, offset, key.encode(), value)

    def feed(self, records: Iterable[tuple[str, str, dict[str, Any]]]) -> OfflineOutput:
        batches: dict[str, list[RawMessage]] = {"vibration": [], "process": []}
        for kind, key, value in records:
            topic = RAW_TOPIC_OF_KIND[kind]
            batches[kind].append(self._message(topic, key, self.codec.encode(topic, SCHEMA_OF_TOPIC[topic], value)))
        out = OfflineOutput()
        for kind, stage in (("vibration", self.vibration), ("process", self.process)):
            if not batches[kind]:
                continue
            result = stage.process(batches[kind], self.states[kind])
            self.states[kind].update(result.state_updates)
            out.features += result.outputs
            out.dead_letters += result.dead_letters
            out.duplicates += result.duplicates
            out.seq_gaps += result.seq_gaps
        if self.edge is not None and out.features:
            messages = [
                self._message(PUMP_FEATURES, f["asset_id"], self.codec.encode(PUMP_FEATURES, SCHEMA_OF_TOPIC[PUMP_FEATURES], f))
                for f in out.features
            ]
            result = self.edge.process(messages, self.states["edge"])
            self.states["edge"].update(result.state_updates)
            out.scores += result.outputs
            out.dead_letters += result.dead_letters
            out.duplicates += result.duplicates
            out.seq_gaps += result.seq_gaps
        return out

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
