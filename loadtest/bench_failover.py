"""Broker failover under load: a three-node Apache Kafka (KRaft) cluster, a `vigil worker`, an idempotent producer.

    python -m loadtest.bench_failover [--pumps 8] [--rate 40] [--kinds controller leader] [--rounds 1] [--json]
                                      [--log-dir DIR]

A producer thread (vigil's RecordProducer: idempotent, acks=all) publishes half-second vibration chunks
of a simulated healthy fleet at ``--rate`` records/s while one `vigil worker` turns them into feature
windows (pump.features) and edge scores (pump.scores.edge). Topics have replication 3 and
min.insync.replicas 2 (vigil's Settings with replication=3). Once the output keeps up, one node is
SIGKILLed and, once every pump's output flows again, restarted:

* ``controller``: the active KRaft controller (it also leads about a third of the partitions);
* ``leader``: the leader of a raw-topic partition that carries records, chosen among the nodes that are
  not the controller (so the two kinds differ by the controller failover).

The next kill waits until every partition is fully replicated again. Afterwards every acknowledged chunk
must have produced its window and score exactly once, counted by (asset_id, seq): chunks 2w and 2w+1 of a
pump make its window w.

Reported per kill: the interruption, i.e. the longest time without a new feature window (for the worst pump,
and for the topic as a whole; broker append times, the output topics are switched to LogAppendTime) and the
same without producer acknowledgements; the time until every pump's output of records produced after the
kill arrived (recovered_s); how long the restart took until the cluster was fully replicated; and the log
lines of that period, summarised: the worker's warnings and errors (Faust, aiokafka, vigil), the producer's
errors (librdkafka) and the brokers' lines about controller and leader elections, fencing and ISR changes.
Totals: records acknowledged, windows and edge scores lost or duplicated, cloud scores duplicated. `tests/broker/test_broker_failover.py`
runs the same scenario and asserts on it.

Needs Apache Kafka (Java 17+ and Maven or a warm jar cache): noida-db runs one node only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

KINDS = ("controller", "leader")


# --------------------------------------------------------------------------- capture of client logs


class _Capture(logging.Handler):
    """Keeps (wall time, text) of every record a logger emits (librdkafka's log lines, vigil's producer)."""

    def __init__(self, sink: list[tuple[float, str]], prefix: str = "") -> None:
        super().__init__(logging.DEBUG)
        self.sink, self.prefix = sink, prefix

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            extra = {k: v for k, v in vars(record).items() if k in ("error", "unacknowledged", "delivered")}
            self.sink.append((record.created, f"{self.prefix}{record.levelname} {record.getMessage()}"
                                              + (f" {extra}" if extra else "")))


def _client_logger(name: str, sink: list[tuple[float, str]], level: int = logging.INFO) -> logging.Logger:
    """A private logger for a confluent-kafka client (its ``logger`` setting): lines go to ``sink`` only."""
    log = logging.getLogger(f"vigil.failover.{name}.{uuid.uuid4().hex[:6]}")
    log.propagate = False
    log.setLevel(level)
    log.addHandler(_Capture(sink))
    return log


# --------------------------------------------------------------------------- producer


@dataclass
class Sent:
    """One raw chunk: which, when it was handed to the producer and when (if) it was acknowledged."""

    asset_id: str
    seq: int
    handed: float
    acked: float | None = None
    partition: int | None = None


def _tracking_producer_class() -> type:
    from vigil.streams.devtools.producer import RecordProducer

    class TrackingProducer(RecordProducer):
        """vigil's RecordProducer, noting each record's first acknowledgement and every error it is told of."""

        def __init__(self, settings: Any, codec: Any, journal: list[Sent], errors: list[tuple[float, str]], **config: Any) -> None:
            self.journal, self.errors = journal, errors
            super().__init__(settings, codec, **config)

        def _on_error(self, err: Any) -> None:
            self.errors.append((time.time(), f"error_cb{' FATAL' if err.fatal() else ''}: {err.str()}"))
            super()._on_error(err)

        def _on_delivery(self, generation: int, record_id: int, err: Any, msg: Any) -> None:
            super()._on_delivery(generation, record_id, err, msg)
            if err is None:
                sent = self.journal[record_id]
                if sent.acked is None:
                    sent.acked, sent.partition = time.time(), msg.partition()
            else:
                self.errors.append((time.time(), f"delivery of record {record_id} failed: {err.str()}"))

    return TrackingProducer


class ProducerThread(threading.Thread):
    """Publishes vibration chunks of ``pumps`` healthy pumps at ``rate_per_s`` until ``stop()``, then flushes."""

    def __init__(self, settings: Any, codec: Any, *, pumps: int, rate_per_s: float, max_records: int,
                 flush_timeout_s: float = 120.0, seed: int = 3) -> None:
        super().__init__(name="failover-producer", daemon=True)
        self.settings, self.codec = settings, codec
        self.pumps, self.rate_per_s, self.max_records = pumps, rate_per_s, max_records
        self.flush_timeout_s, self.seed = flush_timeout_s, seed
        self.journal: list[Sent] = []
        self.errors: list[tuple[float, str]] = []  # error_cb, failed deliveries
        self.client_log: list[tuple[float, str]] = []  # librdkafka's own log lines, vigil's producer warnings
        self.failure: str | None = None  # a traceback, when the thread died of an exception
        self.producer: Any = None
        self._halt = threading.Event()
        self.finished = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def acked(self) -> int:
        return sum(1 for s in self.journal if s.acked is not None)

    def run(self) -> None:
        from vigil.models.simulate import FleetSimulator, make_fleet
        from vigil.streams.runtime.topics import PUMP_VIBRATION_RAW, SCHEMA_OF_TOPIC

        vigil_producer_log = logging.getLogger("vigil.streams.devtools.producer")
        capture = _Capture(self.client_log, "vigil producer: ")
        capture.setLevel(logging.WARNING)
        vigil_producer_log.addHandler(capture)
        try:
            producer = self.producer = _tracking_producer_class()(
                self.settings, self.codec, self.journal, self.errors, logger=_client_logger("producer", self.client_log))
            simulator = FleetSimulator(make_fleet(self.pumps, seed=self.seed, n_faulty=0), seed=self.seed, chunk_s=0.5,
                                       process_every=1 << 30)
            topic, schema = self.settings.topic(PUMP_VIBRATION_RAW), SCHEMA_OF_TOPIC[PUMP_VIBRATION_RAW]
            started = time.monotonic()
            while not self._halt.is_set() and len(self.journal) + self.pumps <= self.max_records:
                for record in simulator.step():
                    if record.kind != "vibration":
                        continue
                    value = self.codec.encode(topic, schema, record.value)
                    self.journal.append(Sent(record.key, record.value["seq"], time.time()))
                    producer.send_raw(PUMP_VIBRATION_RAW, record.key.encode(), value)
                # Pace by polling, not sleeping: delivery reports are timed to ~20 ms.
                due = started + len(self.journal) / self.rate_per_s
                while (left := due - time.monotonic()) > 0 and not self._halt.is_set():
                    producer.producer.poll(min(left, 0.02))
            producer.flush(self.flush_timeout_s)
        except BaseException:
            self.failure = traceback.format_exc()
        finally:
            vigil_producer_log.removeHandler(capture)
            self.finished.set()


# --------------------------------------------------------------------------- output reader


@dataclass
class Output:
    asset_id: str
    seq: int
    appended: float  # the record's timestamp, wall-clock seconds: broker append time where the topic has LogAppendTime
    seen: float  # when the reader got it
    partition: int
    offset: int


class OutputReader(threading.Thread):
    """Reads pump.features and pump.scores.edge from the beginning by assignment (no group coordinator involved)."""

    def __init__(self, settings: Any, codec: Any, topics: Sequence[str]) -> None:
        super().__init__(name="failover-reader", daemon=True)
        self.settings, self.codec, self.topics = settings, codec, tuple(topics)
        self.outputs: dict[str, list[Output]] = {t: [] for t in self.topics}
        self.client_log: list[tuple[float, str]] = []
        self.failure: str | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from vigil.streams.runtime.topics import SCHEMA_OF_TOPIC

        try:
            consumer = Consumer(self.settings.reader_config(f"failover-reader-{uuid.uuid4().hex[:8]}", **{
                "logger": _client_logger("reader", self.client_log, logging.WARNING)}))
            full = {self.settings.topic(t): t for t in self.topics}
            consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for name in full for p in range(self.settings.partitions)])
            try:
                while not self._halt.is_set():
                    for msg in consumer.consume(500, timeout=0.05):
                        if msg.error():
                            self.client_log.append((time.time(), f"consume error: {msg.error()}"))
                            continue
                        seen = time.time()
                        topic = full[msg.topic()]
                        value = self.codec.decode(msg.value(), SCHEMA_OF_TOPIC[topic])
                        _, ts_ms = msg.timestamp()
                        self.outputs[topic].append(
                            Output(value["asset_id"], value["seq"], ts_ms / 1000.0, seen, msg.partition(), msg.offset()))
            finally:
                consumer.close()
        except BaseException:
            self.failure = traceback.format_exc()


# --------------------------------------------------------------------------- cluster helpers


def _admin(settings: Any) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(settings.confluent_config(**{"log_level": 0, "socket.timeout.ms": 3000}))


def under_replicated(settings: Any, admin: Any = None) -> list[str]:
    """Partitions of this run's topics (and the group offsets topic) whose ISR is short of their replicas."""
    admin = admin or _admin(settings)
    try:
        topics = admin.list_topics(timeout=5).topics
    except Exception as exc:  # noqa: BLE001 - metadata unavailable is as bad as under-replicated
        return [f"metadata: {exc}"]
    short = []
    for name, md in topics.items():
        if not (name.startswith(settings.topic_prefix) or name == "__consumer_offsets"):
            continue
        if md.error is not None:
            short.append(f"{name}: {md.error}")
            continue
        short += [f"{name}[{p}] isr={list(pm.isrs)} replicas={list(pm.replicas)}"
                  for p, pm in md.partitions.items() if len(pm.isrs) < len(pm.replicas) or pm.leader < 0]
    return short


def wait_fully_replicated(settings: Any, timeout_s: float) -> list[str]:
    """Until nothing is under-replicated (or the timeout); what was still short."""
    admin = _admin(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        short = under_replicated(settings, admin)
        if not short or time.monotonic() > deadline:
            return short
        time.sleep(0.25)


def group_coordinator(settings: Any) -> int | None:
    """The node coordinating the workers' consumer group (None when it cannot be told)."""
    admin = _admin(settings)  # referenced until the future is done: a destroyed client never completes it
    with contextlib.suppress(Exception):
        futures = admin.describe_consumer_groups([settings.group_id], request_timeout=5)
        return int(futures[settings.group_id].result(timeout=10).coordinator.id)
    return None


def leaderships(settings: Any) -> dict[int, list[str]]:
    """Per node, the partitions of this run's topics it leads."""
    out: dict[int, list[str]] = defaultdict(list)
    with contextlib.suppress(Exception):
        for name, md in _admin(settings).list_topics(timeout=5).topics.items():
            if name.startswith(settings.topic_prefix):
                for p, pm in md.partitions.items():
                    out[pm.leader].append(f"{name[len(settings.topic_prefix):]}[{p}]")
    return out


def set_log_append_time(settings: Any, topics: Iterable[str]) -> None:
    """Output topics stamped by the broker, so gaps are measured where the output is written, not where it is read."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    admin = _admin(settings)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, settings.topic(t), incremental_configs=[
        ConfigEntry("message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET)]) for t in topics]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


# --------------------------------------------------------------------------- log summaries


_NUMBERS = re.compile(r"\b[0-9a-f]{8,}\b|\d+(\.\d+)?")
_PARTITIONS = re.compile(r"[\w.\-]+-\d+\b")
_BROKER_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] (\w+) (.*)$")
# What a failover is made of, as Kafka 4 logs it: the KRaft election of a new active controller, the controller
# fencing the dead broker once its session (broker.session.timeout.ms) expires and moving its partitions'
# leadership (handleBrokerFenced), ISR changes, followers truncating to the new leader, and the restarted node
# being unfenced.
BROKER_FAILOVER = re.compile(
    r"Fencing broker|handleBrokerFenced|unfence|Becoming the active controller|Renouncing|In the new epoch|"
    r"Completed transition to (Leader|Candidate|Prospective|Resigned)|Recorded new KRaft controller|\bISR\b|"
    r"[Ll]eader epoch|[Ee]lect(ed|ion)|Truncating partition|Performing controller activation|session has timed out")
# Connection chatter: every client and fetcher logs it for each attempt to reach the dead node.
BROKER_NOISE = re.compile(r"could not be established|disconnected|Error in response for fetch|Error sending fetch request|"
                          r"Client requested connection close|Cancelled in-flight")


def _template(text: str) -> str:
    return _NUMBERS.sub("#", _PARTITIONS.sub("<partition>", text))[:120]


def summarise(lines: Iterable[tuple[float, str]], t0: float, limit: int = 12) -> list[dict[str, Any]]:
    """Lines grouped by their text with numbers masked: count, first and last time (s after ``t0``), one example."""
    groups: dict[str, dict[str, Any]] = {}
    for t, text in lines:
        key = _template(text)
        g = groups.get(key)
        if g is None:
            groups[key] = {"count": 1, "first_s": round(t - t0, 2), "last_s": round(t - t0, 2), "example": text[:400]}
        else:
            g["count"] += 1
            g["last_s"] = round(t - t0, 2)
    return sorted(groups.values(), key=lambda g: g["first_s"])[:limit]


def read_worker_log(path: Path) -> list[tuple[float, str]]:
    """(wall time, 'level logger: msg [extra]') of the worker's warnings and errors (JSON lines), tracebacks included."""
    import calendar

    out: list[tuple[float, str]] = []
    last = 0.0
    with contextlib.suppress(FileNotFoundError):
        for raw in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(raw)
            except ValueError:
                if raw.strip() and ("Traceback" in raw or "Error" in raw or "error" in raw):
                    out.append((last, f"(plain) {raw.strip()[:300]}"))
                continue
            if not isinstance(rec, dict) or "ts" not in rec:
                continue
            with contextlib.suppress(ValueError):
                last = calendar.timegm(time.strptime(rec["ts"][:19], "%Y-%m-%dT%H:%M:%S")) + int(rec["ts"][20:23]) / 1000.0
            if rec.get("level") not in ("warning", "error", "critical"):
                continue
            extra = {k: v for k, v in rec.items() if k not in ("ts", "level", "logger", "msg", "exc", "taskName")}
            text = f"{rec['level']} {rec.get('logger')}: {rec.get('msg')}" + (f" {extra}" if extra else "")
            if rec.get("exc"):
                text += " | " + rec["exc"].strip().splitlines()[-1]
            out.append((last, text))
    return out


def worker_tracebacks(path: Path) -> list[str]:
    """Tracebacks the worker logged (JSON ``exc`` fields and plain ones), last line of each."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for raw in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(raw)
                if isinstance(rec, dict) and rec.get("exc"):
                    found.append(f"{rec.get('msg')}: {rec['exc'].strip().splitlines()[-1]}")
                continue
            if raw.startswith("Traceback"):
                found.append(raw)
    return found


def read_broker_logs(cluster: Any) -> list[tuple[float, str]]:
    """(wall time, 'node N LEVEL text') of every node's lines about elections, fencing, ISR changes, and its other
    warnings and errors (connection chatter left out)."""
    out = []
    for i in range(cluster.nodes):
        for path in sorted(cluster.node_dir(i).glob("server.log*"), reverse=True):
            with contextlib.suppress(FileNotFoundError):
                for line in path.read_text(errors="replace").splitlines():
                    m = _BROKER_LINE.match(line)
                    if not m:
                        continue
                    level, text = m.group(3), re.sub(r" \((org\.apache|kafka)[\w.$]*\)$", "", m.group(4))
                    if level in ("ERROR", "FATAL") or BROKER_FAILOVER.search(text) or (level == "WARN" and not BROKER_NOISE.search(text)):
                        t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000.0
                        out.append((t, f"node {i} {level} {text}"))
    out.sort()
    return out


def _between(lines: Sequence[tuple[float, str]], start: float, end: float) -> list[tuple[float, str]]:
    return [(t, s) for t, s in lines if start <= t <= end]


# --------------------------------------------------------------------------- the scenario


@dataclass
class Kill:
    kind: str
    node: int
    killed_at: float  # wall clock
    partition: int | None = None  # leader kills: the raw partition whose leader this was
    controller: bool = False
    group_coordinator: bool = False
    led: list[str] = field(default_factory=list)  # partitions of this run's topics the node led
    exit_code: int | None = None
    recovered_at: float | None = None  # every pump had output of a record produced after the kill
    restart_began: float | None = None
    restarted_at: float | None = None  # back in the metadata
    replicated_at: float | None = None  # nothing under-replicated any more
    still_short: list[str] = field(default_factory=list)
    end: float | None = None  # end of this kill's period (next kill or the end of production)
    note: str = ""


@dataclass
class FailoverRun:
    settings: Any
    kills: list[Kill]
    journal: list[Sent]
    outputs: dict[str, list[Output]]
    worker_log: Path
    worker_returncode: int | None
    worker_alive_at_end: bool
    worker_metrics: dict[str, float]
    producer_failure: str | None
    producer_recreated: int
    producer_failed: list[str]
    reader_failure: str | None
    producer_errors: list[tuple[float, str]]
    producer_log: list[tuple[float, str]]
    reader_log: list[tuple[float, str]]
    broker_log: list[tuple[float, str]]
    started: float
    first_output: float | None
    production_end: float
    ended: float
    timeline: list[tuple[float, str]]


def _log(timeline: list[tuple[float, str]], say: Callable[[str], None] | None, text: str) -> None:
    timeline.append((time.time(), text))
    if say is not None:
        say(text)


def expected_windows(journal: Sequence[Sent]) -> set[tuple[str, int]]:
    """Windows due from the acknowledged chunks: chunks 2w and 2w+1 of a pump make its window w."""
    acked: dict[str, set[int]] = defaultdict(set)
    for s in journal:
        if s.acked is not None:
            acked[s.asset_id].add(s.seq)
    return {(a, w) for a, seqs in acked.items() for w in {q // 2 for q in seqs} if 2 * w in seqs and 2 * w + 1 in seqs}


def _window_inputs(journal: Sequence[Sent]) -> dict[tuple[str, int], Sent]:
    """(asset, window) -> its last input chunk."""
    return {(s.asset_id, s.seq // 2): s for s in journal if s.seq % 2 == 1}


def _caught_up(journal: Sequence[Sent], outputs: Sequence[Output], acked_before: float) -> bool:
    """Every window whose last chunk was acknowledged before ``acked_before`` has been read from pump.features."""
    have = {(o.asset_id, o.seq) for o in outputs}
    due = [(s.asset_id, s.seq // 2) for s in list(journal) if s.seq % 2 == 1 and s.acked is not None and s.acked < acked_before]
    return bool(due) and all(d in have for d in due)


def _flowing_since(journal: Sequence[Sent], outputs: Sequence[Output], since: float, pumps: Iterable[str]) -> bool:
    """Every pump has a window on pump.features whose last chunk was handed to the producer after ``since``."""
    inputs = _window_inputs(list(journal))
    fresh = {o.asset_id for o in list(outputs) if (s := inputs.get((o.asset_id, o.seq))) is not None and s.handed > since}
    return set(pumps) <= fresh


def _unchanged_for(value: Callable[[], Any], seconds: float) -> Callable[[], bool]:
    """A condition: ``value()`` has not changed for ``seconds``."""
    last: list[Any] = [object(), time.monotonic()]

    def check() -> bool:
        now, v = time.monotonic(), value()
        if v != last[0]:
            last[:] = [v, now]
        return now - last[1] >= seconds

    return check


def _wait(condition: Callable[[], bool], timeout_s: float, alive: Callable[[], str | None], poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        problem = alive()
        if problem:
            raise RuntimeError(problem)
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def choose_victim(kind: str, cluster: Any, settings: Any, journal: Sequence[Sent]) -> tuple[int, int | None, str]:
    """The node to kill: the active controller, or the leader of a raw partition with traffic that is not the controller."""
    from vigil.streams.runtime.topics import PUMP_VIBRATION_RAW

    controller = cluster.controller_node()
    if kind == "controller":
        return controller, None, ""
    raw = settings.topic(PUMP_VIBRATION_RAW)
    busy = sorted({s.partition for s in list(journal) if s.partition is not None})
    for attempt in range(2):
        for p in busy:
            leader = cluster.leader_node(raw, p)
            if leader != controller:
                return leader, p, "" if attempt == 0 else "after a preferred leader election"
        if attempt == 0:  # every busy raw partition is led by the controller: spread leadership out again
            from confluent_kafka import ElectionType

            admin = _admin(settings)
            with contextlib.suppress(Exception):
                admin.elect_leaders(ElectionType.PREFERRED, None).result(timeout=15)
            time.sleep(2.0)
            controller = cluster.controller_node()
    return controller, busy[0], "every busy raw partition was led by the controller: killed it anyway"


def run_failover(
    cluster: Any,
    settings: Any,
    launch_worker: Callable[[Any], Any],
    *,
    kinds: Sequence[str] = KINDS,
    pumps: int = 8,
    rate_per_s: float = 40.0,
    max_records: int = 8000,
    warmup_timeout_s: float = 120.0,
    steady_s: float = 3.0,
    recover_timeout_s: float = 60.0,
    hold_s: float = 1.0,
    replicate_timeout_s: float = 60.0,
    drain_timeout_s: float = 60.0,
    say: Callable[[str], None] | None = None,
) -> FailoverRun:
    """The scenario: topics, worker, producer and reader; one SIGKILL and restart per entry of ``kinds``.

    ``launch_worker(settings)`` starts `vigil worker` and returns an object with ``process`` (Popen),
    ``log_path``, ``metrics()`` and ``stop()`` (tests/fixtures/broker.py's WorkerProcess). The worker is
    stopped before this returns; the cluster is left running (its owner closes it).
    """
    from vigil.streams.runtime.codec import AvroCodec
    from vigil.streams.runtime.topics import PUMP_FEATURES, PUMP_SCORES_CLOUD, PUMP_SCORES_EDGE, ensure_topics

    codec = AvroCodec()
    timeline: list[tuple[float, str]] = []
    started = time.time()
    ensure_topics(settings)
    set_log_append_time(settings, (PUMP_FEATURES, PUMP_SCORES_EDGE))
    # pump.scores.cloud keeps CreateTime: a batch the worker's producer sent twice then shows one timestamp twice.
    reader = OutputReader(settings, codec, (PUMP_FEATURES, PUMP_SCORES_EDGE, PUMP_SCORES_CLOUD))
    producer = ProducerThread(settings, codec, pumps=pumps, rate_per_s=rate_per_s, max_records=max_records)
    worker = launch_worker(settings)
    _log(timeline, say, f"worker pid {worker.process.pid} started; producing {rate_per_s:g} records/s for {pumps} pumps")
    reader.start()
    producer.start()
    features = reader.outputs[PUMP_FEATURES]
    assets = [f"pump-{i:03d}" for i in range(pumps)]
    kills: list[Kill] = []
    first_output = None

    def alive() -> str | None:
        if worker.process.poll() is not None:
            return f"the worker exited with {worker.process.returncode}: {worker.log_path}"
        if producer.failure:
            return f"the producer thread died:\n{producer.failure}"
        if reader.failure:
            return f"the reader thread died:\n{reader.failure}"
        return None

    try:
        if not _wait(lambda: _caught_up(producer.journal, features, time.time() - 1.0), warmup_timeout_s, alive):
            raise RuntimeError(f"the worker's output did not catch up within {warmup_timeout_s:g} s: {worker.log_path}")
        first_output = min(o.appended for o in list(features))
        _log(timeline, say, f"output keeps up ({len(features)} windows, {producer.acked()} records acknowledged)")
        time.sleep(steady_s)
        for kind in kinds:
            short = wait_fully_replicated(settings, replicate_timeout_s)
            if short:
                _log(timeline, say, f"still under-replicated before the {kind} kill: {short[:5]}")
            node, partition, note = choose_victim(kind, cluster, settings, producer.journal)
            kill = Kill(kind, node, 0.0, partition=partition, note=note)
            kill.controller = node == cluster.controller_node()
            kill.group_coordinator = group_coordinator(settings) == node
            kill.led = sorted(leaderships(settings).get(node, []))
            if kills:
                kills[-1].end = time.time()
            kill.killed_at = time.time()
            kill.exit_code = cluster.kill_node(node)
            kills.append(kill)
            what = f"{kind} of raw partition {partition}" if partition is not None else kind
            _log(timeline, say, f"SIGKILLed node {node} ({what}; controller={kill.controller}, "
                                f"group coordinator={kill.group_coordinator}, leads {len(kill.led)} partitions)")
            if _wait(lambda: _flowing_since(producer.journal, features, kill.killed_at, assets), recover_timeout_s, alive):
                kill.recovered_at = time.time()
                _log(timeline, say, f"every pump's output flows again {kill.recovered_at - kill.killed_at:.1f} s after the kill")
            else:
                _log(timeline, say, f"output had not recovered {recover_timeout_s:g} s after the kill; restarting node {node} anyway")
            time.sleep(hold_s)
            kill.restart_began = time.time()
            cluster.start_node(node)
            kill.restarted_at = time.time()
            kill.still_short = wait_fully_replicated(settings, replicate_timeout_s)
            kill.replicated_at = time.time()
            _log(timeline, say, f"node {node} back in {kill.restarted_at - kill.restart_began:.1f} s, fully replicated "
                                f"{kill.replicated_at - kill.restarted_at:.1f} s later"
                                + (f"; still short: {kill.still_short[:3]}" if kill.still_short else ""))
            time.sleep(steady_s)
            problem = alive()
            if problem:
                raise RuntimeError(problem)
        if kills:
            kills[-1].end = time.time()
        producer.stop()
        production_end = time.time()
        producer.finished.wait(producer.flush_timeout_s + 30)
        want = expected_windows(producer.journal)
        _wait(lambda: want <= {(o.asset_id, o.seq) for o in list(features)}
              and want <= {(o.asset_id, o.seq) for o in list(reader.outputs[PUMP_SCORES_EDGE])}, drain_timeout_s, lambda: None)
        cloud = reader.outputs[PUMP_SCORES_CLOUD]
        _wait(_unchanged_for(lambda: len(cloud), 1.5), 15.0, lambda: None)  # the cloud tier lags; duplicates come last
        _log(timeline, say, f"production stopped: {len(producer.journal)} records handed, {producer.acked()} acknowledged")
        worker_metrics: dict[str, float] = {}
        with contextlib.suppress(Exception):
            worker_metrics = worker.metrics()
        alive_at_end = worker.process.poll() is None
    finally:
        producer.stop()
        reader.stop()
        reader.join(30)
        producer.finished.wait(5)
        returncode = worker.stop()
    return FailoverRun(
        settings=settings, kills=kills, journal=producer.journal, outputs=reader.outputs, worker_log=Path(worker.log_path),
        worker_returncode=returncode, worker_alive_at_end=alive_at_end, worker_metrics=worker_metrics,
        producer_failure=producer.failure, producer_recreated=getattr(producer.producer, "recreated", 0),
        producer_failed=list(getattr(producer.producer, "failed", [])), reader_failure=reader.failure, producer_errors=producer.errors,
        producer_log=producer.client_log, reader_log=reader.client_log, broker_log=read_broker_logs(cluster),
        started=started, first_output=first_output, production_end=production_end, ended=time.time(), timeline=timeline,
    )


# --------------------------------------------------------------------------- analysis


def _longest_gap(times: Sequence[float], start: float, end: float) -> tuple[float, float | None]:
    """Longest interval between consecutive ``times`` that ends in (start, end], and where it began.

    A gap belongs to the period in which it ends: the silence a kill at ``start`` causes began before it."""
    best, where = 0.0, None
    ts = sorted(times)
    for a, b in zip(ts, ts[1:]):
        if start < b <= end and b - a > best:
            best, where = b - a, a
    return best, where


def _gaps(per_asset: dict[str, list[float]], start: float, end: float) -> tuple[float, float, str | None]:
    """(longest gap over the whole topic, longest gap of any one pump, that pump)."""
    overall, _ = _longest_gap([t for ts in per_asset.values() for t in ts], start, end)
    worst, who = 0.0, None
    for asset, ts in per_asset.items():
        gap, _ = _longest_gap(ts, start, end)
        if gap > worst:
            worst, who = gap, asset
    return overall, worst, who


def _counts(outputs: Sequence[Output]) -> Counter:
    return Counter((o.asset_id, o.seq) for o in outputs)


# The worker's counters worth reporting after a failover (those that are not zero).
WORKER_METRICS = ("vigil_records_in_total", "vigil_records_out_total", "vigil_duplicates_total", "vigil_seq_gaps_total",
                  "vigil_offset_reseeks_total", "vigil_publish_retries_total", "vigil_stale_events_total",
                  "vigil_offset_jumps_accepted_total", "vigil_publish_refused_total")


def analyse(run: FailoverRun) -> dict[str, Any]:
    """The run as numbers: per kill the interruptions, recovery and log lines; totals acknowledged, lost, duplicated."""
    from vigil.streams.runtime.topics import PUMP_FEATURES, PUMP_SCORES_CLOUD, PUMP_SCORES_EDGE, PUMP_VIBRATION_RAW

    journal = run.journal
    want = expected_windows(journal)
    feats, scores = run.outputs[PUMP_FEATURES], run.outputs[PUMP_SCORES_EDGE]
    cloud = run.outputs.get(PUMP_SCORES_CLOUD, [])
    fc, sc, cc = _counts(feats), _counts(scores), _counts(cloud)
    acked = [s for s in journal if s.acked is not None]
    windows_by_asset: dict[str, list[float]] = defaultdict(list)
    for o in feats:
        windows_by_asset[o.asset_id].append(o.appended)
    acks_by_asset: dict[str, list[float]] = defaultdict(list)
    for s in acked:
        acks_by_asset[s.asset_id].append(s.acked)  # type: ignore[arg-type]
    inputs = _window_inputs(journal)
    # window -> (append time, append time less the time its last chunk was handed to the producer)
    latency = {(o.asset_id, o.seq): (o.appended, o.appended - inputs[(o.asset_id, o.seq)].handed)
               for o in feats if (o.asset_id, o.seq) in inputs}
    first_kill = run.kills[0].killed_at if run.kills else run.production_end

    def period(start: float, end: float) -> dict[str, Any]:
        f_all, f_pump, f_who = _gaps(windows_by_asset, start, end)
        a_all, a_pump, a_who = _gaps(acks_by_asset, start, end)
        lat = [v for k, (appended, v) in latency.items() if start < appended <= end]
        return {"features_gap_s": round(f_all, 2), "features_gap_per_pump_s": round(f_pump, 2), "worst_pump": f_who,
                "acks_gap_s": round(a_all, 2), "acks_gap_per_pump_s": round(a_pump, 2), "worst_acked_pump": a_who,
                "max_latency_s": round(max(lat), 2) if lat else None}

    raw_partition = {s.asset_id: s.partition for s in acked}
    features_partition = {o.asset_id: o.partition for o in feats}

    def unaffected(kill: Kill, start: float, end: float) -> dict[str, Any]:
        """Pumps whose raw and feature partitions the killed node did not lead: did they carry on meanwhile?"""
        led = set(kill.led)
        hit = {a for a in raw_partition if f"{PUMP_VIBRATION_RAW}[{raw_partition[a]}]" in led
               or f"{PUMP_FEATURES}[{features_partition.get(a)}]" in led}
        others = set(raw_partition) - hit
        _, f_pump, _ = _gaps({a: ts for a, ts in windows_by_asset.items() if a in others}, start, end)
        _, a_pump, _ = _gaps({a: ts for a, ts in acks_by_asset.items() if a in others}, start, end)
        return {"pumps_on_its_partitions": len(hit), "raw_partitions_led": sorted(
                    int(p[len(PUMP_VIBRATION_RAW) + 1:-1]) for p in led if p.startswith(f"{PUMP_VIBRATION_RAW}[")),
                "features_gap_other_pumps_s": round(f_pump, 2) if others else None,
                "acks_gap_other_pumps_s": round(a_pump, 2) if others else None}

    steady_start = (run.first_output or run.started) + 2.0
    result: dict[str, Any] = {
        "steady": period(steady_start, first_kill),
        "kills": [],
        "records": {"handed": len(journal), "acked": len(acked), "not_acked": len(journal) - len(acked)},
        "raw_partition_of_pump": dict(sorted(raw_partition.items())),
        "windows": {"expected": len(want),
                    "features_lost": len(want - set(fc)), "features_duplicated": sum(n - 1 for n in fc.values() if n > 1),
                    "features_unexpected": len(set(fc) - want),
                    "scores_lost": len(want - set(sc)), "scores_duplicated": sum(n - 1 for n in sc.values() if n > 1),
                    "scores_unexpected": len(set(sc) - want),
                    # the cloud tier scores only some windows, so only its duplicates can be counted
                    "cloud_scores": len(cloud), "cloud_scores_duplicated": sum(n - 1 for n in cc.values() if n > 1)},
        "lost_examples": sorted(want - set(fc))[:10] + sorted(want - set(sc))[:10],
        "duplicate_examples": [
            {"topic": t, "key": k, "count": n,
             "partition_offset_timestamp": [(o.partition, o.offset, o.appended) for o in outs if (o.asset_id, o.seq) == k]}
            for t, counts, outs in ((PUMP_FEATURES, fc, feats), (PUMP_SCORES_EDGE, sc, scores), (PUMP_SCORES_CLOUD, cc, cloud))
            for k, n in sorted(counts.items()) if n > 1][:10],
        "worker": {"alive_at_end": run.worker_alive_at_end, "returncode": run.worker_returncode,
                   "tracebacks": worker_tracebacks(run.worker_log)[:10],
                   "metrics": {k: v for k, v in run.worker_metrics.items() if v and k.startswith(WORKER_METRICS)}},
        "producer": {"failure": run.producer_failure, "errors": len(run.producer_errors),
                     "recreated": run.producer_recreated, "failed": run.producer_failed[:5]},
        "reader_failure": run.reader_failure,
        "seconds": round(run.ended - run.started, 1),
    }
    worker_lines = read_worker_log(run.worker_log)
    for n, kill in enumerate(run.kills):
        end = kill.end if n + 1 < len(run.kills) else run.ended  # the last one: until the output drained
        t0 = kill.killed_at
        entry = {
            "kind": kill.kind, "node": kill.node, "raw_partition": kill.partition, "was_controller": kill.controller,
            "was_group_coordinator": kill.group_coordinator, "partitions_led": len(kill.led), "exit_code": kill.exit_code,
            **period(t0, end),
            **unaffected(kill, t0, end),
            "recovered_s": round(kill.recovered_at - t0, 2) if kill.recovered_at else None,
            "restart_s": round(kill.restarted_at - kill.restart_began, 2) if kill.restarted_at and kill.restart_began else None,
            "down_s": round(kill.restarted_at - t0, 2) if kill.restarted_at else None,
            "fully_replicated_after_restart_s": (round(kill.replicated_at - kill.restarted_at, 2)
                                                 if kill.replicated_at and kill.restarted_at else None),
            "still_under_replicated": kill.still_short[:5],
            "note": kill.note,
            "logs": {
                "worker": summarise(_between(worker_lines, t0 - 0.5, end), t0),
                "producer": summarise(_between(run.producer_errors + run.producer_log, t0 - 0.5, end), t0),
                "reader": summarise(_between(run.reader_log, t0 - 0.5, end), t0, limit=5),
                "brokers": summarise(_between(run.broker_log, t0 - 0.5, end), t0, limit=25),
            },
        }
        result["kills"].append(entry)
    return result


def failure_report(result: dict[str, Any], examples: int = 6) -> str:
    """The analysis for people (assertion messages): the numbers as JSON, then each kill's first log lines."""
    numbers = {**result, "kills": [{k: v for k, v in kill.items() if k != "logs"} for kill in result["kills"]]}
    lines = [json.dumps(numbers, indent=1, default=str)]
    for kill in result["kills"]:
        lines.append(f"--- logs after the {kill['kind']} kill (node {kill['node']}), seconds after the kill:")
        for source, groups in kill["logs"].items():
            lines += [f"  {source:8} {g['first_s']:>6.2f}..{g['last_s']:<6.2f} x{g['count']:<4} {g['example'][:240]}"
                      for g in groups[:examples]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _launcher(log_dir: Path) -> Callable[[Any], Any]:
    from vigil.streams.devtools.worker_process import launch_worker

    return lambda settings: launch_worker(settings, log_dir / "worker.log")


_COLUMNS = (  # (header, key, legend)
    ("kill", "kind", "what was SIGKILLed (steady: the minute before the first kill)"),
    ("node", "node", ""),
    ("win pump", "features_gap_per_pump_s", "longest time without a new window on pump.features, worst pump (s)"),
    ("win all", "features_gap_s", "the same for the whole topic (s)"),
    ("win other", "features_gap_other_pumps_s", "the same, worst pump whose partitions the node did not lead (s)"),
    ("ack pump", "acks_gap_per_pump_s", "longest time without a producer acknowledgement, worst pump (s)"),
    ("ack all", "acks_gap_s", "the same over all records (s)"),
    ("ack other", "acks_gap_other_pumps_s", "the same, worst pump whose partitions the node did not lead (s)"),
    ("recovered", "recovered_s", "kill until every pump had a window of a record produced after the kill (s)"),
    ("latency", "max_latency_s", "longest handed-to-producer -> window appended (s)"),
    ("restart", "restart_s", "start_node until the node was back in the metadata (s)"),
    ("in sync", "fully_replicated_after_restart_s", "then until no partition was under-replicated (s)"),
)


def _print_table(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    table = Table(title=f"broker failover: 3-node Apache Kafka {out['kafka']}, one vigil worker, {out['pumps']} pumps at "
                        f"{out['rate_per_s']:g} records/s (idempotent, acks=all), {out['cores']} cores")
    for header, _, _ in _COLUMNS:
        table.add_column(header, justify="right")
    for run in out["runs"]:
        table.add_row("steady", "-", *(str(run["steady"].get(key, "-")) for _, key, _ in _COLUMNS[2:]))
        for kill in run["kills"]:
            table.add_row(*(str(kill.get(key)) for _, key, _ in _COLUMNS))
    console.print(table)
    for header, _, legend in _COLUMNS:
        if legend:
            console.print(f"  {header:10} {legend}", markup=False)
    for i, run in enumerate(out["runs"]):
        console.print(f"run {i}: records {run['records']}, windows {run['windows']}, {run['seconds']} s", soft_wrap=True, markup=False)
        console.print(f"  worker {run['worker']}", soft_wrap=True, markup=False)
        for kill in run["kills"]:
            console.print(f"[bold]{kill['kind']} kill, node {kill['node']}[/bold] (controller={kill['was_controller']}, "
                          f"group coordinator={kill['was_group_coordinator']}, led {kill['partitions_led']} partitions, raw partitions "
                          f"{kill['raw_partitions_led']}, {kill['pumps_on_its_partitions']} pumps on them) {kill['note']}")
            for source, groups in kill["logs"].items():
                for g in groups:
                    console.print(f"  {source:8} {g['first_s']:>6.2f}..{g['last_s']:<6.2f} x{g['count']:<4} {g['example'][:200]}",
                                  soft_wrap=True, markup=False)


def dump_run(run: FailoverRun, path: Path) -> None:
    """The raw timeline of a run (every record, output and kill) as JSON, for a closer look."""
    from dataclasses import asdict

    path.write_text(json.dumps({
        "kills": [asdict(k) for k in run.kills], "timeline": run.timeline,
        "records": [asdict(s) for s in run.journal],
        "outputs": {topic: [asdict(o) for o in outs] for topic, outs in run.outputs.items()},
        "producer_errors": run.producer_errors, "producer_log": run.producer_log, "reader_log": run.reader_log,
    }, default=str))


def _keep_logs(cluster: Any, worker_logs: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        shutil.copy(worker_logs / "worker.log", dest / "worker.log")
    for i in range(cluster.nodes):
        with contextlib.suppress(FileNotFoundError):
            shutil.copy(cluster.log_path(i), dest / f"node-{i}.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pumps", type=int, default=8)
    parser.add_argument("--rate", type=float, default=40.0, help="raw records (half-second chunks) per second")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--rounds", type=int, default=1, help="scenarios, each on a fresh cluster")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="keep the worker and broker logs and every record's timeline (records.json) here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from vigil.streams.devtools.broker import choose_broker
    from vigil.streams.devtools.kafka import KafkaCluster
    from vigil.streams.pumps.training import train_pumps_simulated
    from vigil.streams.runtime.settings import Settings

    choose_broker("kafka")  # a clear error where Apache Kafka cannot run (noida-db has no cluster)
    say = None if args.json else (lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True))
    out: dict[str, Any] = {"pumps": args.pumps, "rate_per_s": args.rate, "cores": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="vigil-failover-") as tmp_name:
        tmp = Path(tmp_name)
        models = replace(Settings.from_env({}), models_dir=tmp / "models", baseline_windows=20)
        train_pumps_simulated(models, pumps=8, windows=80, seed=123)
        for r in range(args.rounds):
            cluster = KafkaCluster(nodes=3, data_dir=tmp / f"kafka-{r}")
            out["kafka"] = cluster.version
            try:
                cluster.start()
                settings = replace(models, broker_hosts=tuple(cluster.bootstrap.split(",")), app_id=f"failover-{r}",
                                   topic_prefix=f"failover{r}.", partitions=4, replication=3, retention_ms=3_600_000,
                                   session_timeout_s=10.0, heartbeat_interval_s=1.0)
                log_dir = tmp / f"logs-{r}"
                log_dir.mkdir()
                run = run_failover(cluster, settings, _launcher(log_dir), kinds=args.kinds, pumps=args.pumps,
                                   rate_per_s=args.rate, say=say)
                out["runs"].append(analyse(run))
                if args.log_dir is not None:
                    (args.log_dir / f"run-{r}").mkdir(parents=True, exist_ok=True)
                    dump_run(run, args.log_dir / f"run-{r}" / "records.json")
            finally:
                cluster.stop()
                if args.log_dir is not None:
                    _keep_logs(cluster, tmp / f"logs-{r}", args.log_dir / f"run-{r}")
                cluster.close()
    if args.json:
        print(json.dumps(out, default=str))
    else:
        _print_table(out)


if __name__ == "__main__":
    main()
