"""What `vigil demo` reads back: every output topic of the pump topology, tallied as it arrives.

The watcher is a downstream consumer like any other (its own consumer group,
from the earliest offset). Besides counts it keeps each output's Kafka
timestamp, the wall-clock moment the worker wrote it, so per-stage latency
is measured as "input written -> output written". Event time cannot serve:
the demo compresses a simulated week into minutes.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import ALERTS, PUMP_DEADLETTER, PUMP_FEATURES, PUMP_SCORES_CLOUD, PUMP_SCORES_EDGE, SCHEMA_OF_TOPIC

WindowKey = tuple[str, str, int]  # (asset, stream, seq)
LATENCY_STAGES = (
    "pump.vibration.raw -> pump.features",
    "pump.process.raw -> pump.features",
    "pump.features -> pump.scores.edge",
    "pump.scores.edge -> pump.scores.cloud",
    "pump.scores.cloud -> alerts",
    "end to end: raw -> pump.scores.cloud",
)


@dataclass
class AlertEpisode:
    alert_id: str
    asset_id: str
    opened_ts_ms: int
    closed_ts_ms: int | None = None
    severity: str = "LOW"
    diagnosis: str = ""
    records: int = 0
    written_ms: float = 0.0  # wall clock of the OPEN record


@dataclass
class DemoWatcher:
    settings: Settings
    codec: AvroCodec
    # Wall-clock time each valid raw record was handed to the producer, by (asset, kind, seq).
    sent_ms: dict[tuple[str, str, int], float] = field(default_factory=dict)
    features_ms: dict[WindowKey, tuple[float, str, int]] = field(default_factory=dict)
    edge_ms: dict[WindowKey, float] = field(default_factory=dict)
    cloud_ms: dict[WindowKey, float] = field(default_factory=dict)
    # Per pump, (event time, "edge/cloud") of each window the cloud stage passed: which pair served it when.
    served_by: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    alert_written_ms: list[tuple[WindowKey, float]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    dead_letters: Counter = field(default_factory=Counter)
    episodes: dict[str, AlertEpisode] = field(default_factory=dict)
    latest_event_ms: int = 0
    first_sent_ms: float | None = None
    last_output_ms: float = 0.0
    error: str | None = None
    # More topics read by the same consumer: logical topic -> (schema, handler(record, written ms)). One
    # consumer for everything the demo watches: against noida-db each idle librdkafka consumer costs about
    # 40 % of a broker core and 45 % of a client core (empty fetches come back at once; loadtest.bench_idle_readers).
    extra: dict[str, tuple[str, Callable[[dict[str, Any], float], None]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def record_sent(self, record: Any) -> None:
        now = time.time() * 1000.0
        if self.first_sent_ms is None:
            self.first_sent_ms = now
        self.sent_ms[(record.key, record.kind, record.value["seq"])] = now

    def start(self) -> "DemoWatcher":
        self._thread = threading.Thread(target=self._run, name="demo-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(self.settings.reader_config(f"{self.settings.group_id}-demo-watcher-{time.time_ns()}"))
        handlers = {
            self.settings.topic(PUMP_FEATURES): self._features,
            self.settings.topic(PUMP_SCORES_EDGE): self._edge,
            self.settings.topic(PUMP_SCORES_CLOUD): self._cloud,
            self.settings.topic(ALERTS): self._alert,
            self.settings.topic(PUMP_DEADLETTER): self._dead_letter,
        }
        schemas = {self.settings.topic(t): SCHEMA_OF_TOPIC[t] for t in (PUMP_FEATURES, PUMP_SCORES_EDGE, PUMP_SCORES_CLOUD, ALERTS, PUMP_DEADLETTER)}
        alerts_topic = self.settings.topic(ALERTS)
        for topic, (schema, handler) in self.extra.items():
            name = self.settings.topic(topic)
            if name == alerts_topic:  # both topologies' alerts arrive on one topic
                pump_alert = handlers[name]
                handlers[name] = lambda r, w, pump_alert=pump_alert, handler=handler: (pump_alert(r, w), handler(r, w))
            else:
                handlers[name], schemas[name] = handler, schema
        consumer.subscribe(list(handlers))
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(1000, timeout=0.2):
                    if msg.error():
                        continue
                    written = float(msg.timestamp()[1])
                    self.last_output_ms = max(self.last_output_ms, written)
                    handlers[msg.topic()](self.codec.decode(msg.value(), schemas[msg.topic()]), written)
        except Exception as exc:  # the demo reports it; a silent watcher would look like a stalled worker
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            consumer.close()

    def _features(self, r: dict[str, Any], written: float) -> None:
        self.counts["windows"] += 1
        kind = "process" if r["stream"] == "process" else "vibration"
        self.features_ms[(r["asset_id"], r["stream"], r["seq"])] = (written, kind, r["last_input_seq"])

    def _edge(self, r: dict[str, Any], written: float) -> None:
        self.counts["edge"] += 1
        self.latest_event_ms = max(self.latest_event_ms, r["ts_ms"])
        self.edge_ms[(r["asset_id"], r["stream"], r["seq"])] = written
        if r["state"] == "SCORED":
            self.counts["scored"] += 1
            self.counts["flagged"] += int(r["flagged"])

    def _cloud(self, r: dict[str, Any], written: float) -> None:
        self.counts["cloud"] += 1
        self.counts["cloud_evaluated"] += int(r["evaluated"])
        self.counts["confirmed"] += int(r["confirmed"])
        self.cloud_ms[(r["asset_id"], r["stream"], r["seq"])] = written
        self.served_by.setdefault(r["asset_id"], []).append((r["ts_ms"], f"{r['edge_model_version']}/{r['cloud_model_version']}"))

    def serving_version_at(self, asset_id: str, at_ms: int) -> str | None:
        """The edge/cloud pair of the pump's last window at or before ``at_ms`` (event time); None before its first."""
        earlier = [(ts, version) for ts, version in self.served_by.get(asset_id, ()) if ts <= at_ms]
        return max(earlier, key=lambda e: e[0])[1] if earlier else None

    def _alert(self, r: dict[str, Any], written: float) -> None:
        if not r["kind"].startswith("pump."):
            return
        self.counts["alert_records"] += 1
        episode = self.episodes.get(r["alert_id"])
        if episode is None:
            episode = self.episodes[r["alert_id"]] = AlertEpisode(r["alert_id"], r["asset_id"], r["opened_ts_ms"], written_ms=written)
            self.alert_written_ms.append(((r["asset_id"], r["last_stream"], r["last_seq"]), written))
        episode.records += 1
        episode.severity = r["severity"]
        if r["diagnosis"] is not None:
            episode.diagnosis = f"{r['diagnosis']['fault']} ({r['diagnosis']['confidence']:.0%})"
        if r["state"] == "CLOSE":
            episode.closed_ts_ms = r["ts_ms"]

    def _dead_letter(self, r: dict[str, Any], written: float) -> None:
        self.dead_letters[r["reason"]] += 1

    def latency_ms(self) -> dict[str, list[float]]:
        """Samples per stage: wall-clock ms from an input written to its output written."""
        out: dict[str, list[float]] = {stage: [] for stage in LATENCY_STAGES}
        raw_of_window: dict[WindowKey, float] = {}
        for key, (written, kind, input_seq) in self.features_ms.items():
            sent = self.sent_ms.get((key[0], kind, input_seq))
            if sent is not None:
                out[f"pump.{kind}.raw -> pump.features"].append(written - sent)
                raw_of_window[key] = sent
            edge = self.edge_ms.get(key)
            if edge is not None:
                out["pump.features -> pump.scores.edge"].append(edge - written)
        for key, written in self.cloud_ms.items():
            edge = self.edge_ms.get(key)
            if edge is not None:
                out["pump.scores.edge -> pump.scores.cloud"].append(written - edge)
            if key in raw_of_window:
                out["end to end: raw -> pump.scores.cloud"].append(written - raw_of_window[key])
        for key, written in self.alert_written_ms:
            cloud = self.cloud_ms.get(key)
            if cloud is not None:
                out["pump.scores.cloud -> alerts"].append(written - cloud)
        return out
