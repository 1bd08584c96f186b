"""Worker crash without a broker restart: a worker SIGKILLed mid-stream, a replacement, and exactly one of everything.

A stream of 10,000 raw vibration captures (20 simulated pumps, 4 of them developing bearing faults, one
1 s capture per pump every 20 s of event time, so the trend tables span three hours) runs through vigil
twice on one broker of the test's own:

- a crash-free run (its own topic prefix and consumer group, one worker), the reference;
- a crash run: the records are published at a steady rate by an idempotent producer; once part of the
  output has appeared the worker is SIGKILLed and a replacement is started while the producer goes on.
  The broker is not restarted: its session timeout (10 s here) must expire the dead member before the
  replacement gets the partitions.

Afterwards every input has exactly one feature window and one edge score downstream (none lost, none
twice by (asset, seq)), no alert record is repeated, and the trend tables equal the reference run's.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

import pytest

from tests.broker.test_conformance import private_broker, stateful_settings  # noqa: F401 (fixtures)
from vigil.models.simulate import FleetSimulator, make_fleet
from vigil.streams.devtools.producer import Pacer, RecordProducer
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import (
    ALERTS,
    PUMP_FEATURES,
    PUMP_SCORES_CLOUD,
    PUMP_SCORES_EDGE,
    PUMP_TRENDS,
    PUMP_VIBRATION_RAW,
    SCHEMA_OF_TOPIC,
    ensure_topics,
)

pytestmark = pytest.mark.broker

PUMPS, FAULTY, STEPS, SEED = 20, 4, 500, 11
CAPTURE_INTERVAL_S = 20.0  # one 1 s capture per pump every 20 s: 500 steps are 2.8 h of event time, three trend hours
RAW_RECORDS = PUMPS * STEPS  # 10,000; a 1 s capture is one 1 s feature window, so also the number of windows
EXPECTED_WINDOWS = {(f"pump-{p:03d}", seq) for p in range(PUMPS) for seq in range(STEPS)}
PUBLISH_RATE_PER_S = 400.0  # the crash run's producer: 25 s for the whole stream
KILL_AFTER_WINDOWS = 2_000  # feature windows downstream before the SIGKILL: about a fifth of the stream
RECOVERY_LIMIT_S = 60.0
QUIESCE_LIMIT_S = 120.0
# The worker's source topics, upstream first: all of them read to their end, in this order, means every stage is done.
PIPELINE_SOURCES = (PUMP_VIBRATION_RAW, PUMP_FEATURES, PUMP_SCORES_EDGE, PUMP_SCORES_CLOUD, ALERTS)
# What a pump.trends record says of its own hour. The rest of it (revision, week_*, health_*, time_to_threshold_h,
# late_records) is the rolling week as it stood when that revision was published: an alert counted after its hour
# was published republishes that hour, not the later hours already out, so those fields depend on how far the
# alert tier lagged the trend stage at the time, in any run. The trend pages compare the final rolling view instead.
TREND_BUCKET_FIELDS = ("asset_id", "hour_start_ms", "hour_end_ms", "windows", "scored", "flagged", "alerts", "vibration_windows",
                       "rms_mean_g", "rms_max_g", "kurtosis_mean", "edge_score_mean", "edge_score_p95", "edge_threshold")


def raw_vibration_records() -> Iterable[dict[str, Any]]:
    """The raw vibration records, in the simulator's order (event time, then pump).

    Vibration only: with process samples too a pump has two window streams, the vibration and process stages
    write pump.features independently, and the order in which their windows reach the trend stage (so the order
    in which a bucket's float sums are added) would differ from run to run in the last bits.
    """
    fleet = make_fleet(PUMPS, seed=SEED, n_faulty=FAULTY, horizon_s=STEPS * CAPTURE_INTERVAL_S)
    simulator = FleetSimulator(fleet, seed=SEED, interval_s=CAPTURE_INTERVAL_S)
    for step in simulator.steps(STEPS):
        yield from (record.value for record in step if record.kind == "vibration")


class Publisher(threading.Thread):
    """Publishes raw vibration records from a thread with vigil's idempotent producer, optionally paced."""

    def __init__(self, settings: Settings, codec: AvroCodec, records: Iterable[dict[str, Any]], rate_per_s: float = 0.0,
                 keep: list[dict[str, Any]] | None = None) -> None:
        super().__init__(name="raw-publisher", daemon=True)
        self.settings, self.codec, self.records, self.rate_per_s, self.keep = settings, codec, records, rate_per_s, keep
        self.handed = 0
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            producer = RecordProducer(self.settings, self.codec)
            pacer = Pacer(self.rate_per_s)
            topic = self.settings.topic(PUMP_VIBRATION_RAW)
            for value in self.records:
                if self.keep is not None:
                    self.keep.append(value)
                producer.send_raw(PUMP_VIBRATION_RAW, value["asset_id"].encode(),
                                  self.codec.encode(topic, SCHEMA_OF_TOPIC[PUMP_VIBRATION_RAW], value))
                self.handed += 1
                pacer.wait(self.handed)
            producer.flush()
        except BaseException as exc:  # re-raised in the test's thread by wait()
            self.error = exc
        finally:
            self.finished.set()

    def wait(self, timeout_s: float) -> None:
        assert self.finished.wait(timeout_s), f"the producer did not finish within {timeout_s:g} s ({self.handed} records handed)"
        if self.error is not None:
            raise self.error
        assert self.handed == RAW_RECORDS


@dataclass
class Record:
    partition: int
    offset: int
    timestamp_ms: int
    value: dict[str, Any]


def consumer(settings: Settings, **extra: Any) -> Any:
    from confluent_kafka import Consumer

    return Consumer(settings.reader_config(f"crash-test-{uuid.uuid4().hex[:8]}", **extra))


def partitions_of(reader: Any, name: str) -> list[int]:
    return sorted(reader.list_topics(name, timeout=10).topics[name].partitions)


def read_topic(settings: Settings, topic: str, codec: AvroCodec, timeout_s: float = 60.0) -> list[Record]:
    """Every record of ``topic`` from the beginning to the high watermarks taken now, decoded, in partition order."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    name, schema = settings.topic(topic), SCHEMA_OF_TOPIC[topic]
    reader = consumer(settings)
    try:
        highs = {p: reader.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in partitions_of(reader, name)}
        left = {p for p, high in highs.items() if high > 0}
        reader.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in sorted(left)])
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while left:
            assert time.monotonic() < deadline, f"{name}: partitions {sorted(left)} not read to their end in {timeout_s:g} s"
            for msg in reader.consume(1000, timeout=0.5):
                if msg.error() or msg.offset() >= highs[msg.partition()]:
                    continue
                out.append(Record(msg.partition(), msg.offset(), msg.timestamp()[1], codec.decode(msg.value(), schema)))
                if msg.offset() == highs[msg.partition()] - 1:
                    left.discard(msg.partition())
    finally:
        reader.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))


def unprocessed(settings: Settings) -> dict[str, int]:
    """Records of each source topic the worker group has not committed yet (read upstream first)."""
    from confluent_kafka import TopicPartition

    reader = consumer(settings, **{"group.id": settings.group_id})  # never subscribes: reads the group's offsets only
    try:
        lag = {}
        for topic in PIPELINE_SOURCES:
            name = settings.topic(topic)
            tps = [TopicPartition(name, p) for p in partitions_of(reader, name)]
            highs = [reader.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
            committed = reader.committed(tps, timeout=10)
            lag[topic] = sum(high - max(c.offset, 0) for high, c in zip(highs, committed))
        return lag
    finally:
        reader.close()


def wait_until_processed(settings: Settings, worker: Any, timeout_s: float = QUIESCE_LIMIT_S) -> None:
    """Until the group has committed every source topic to its end, checked upstream first: a stage commits its input
    only after its outputs are written, so then every record has been through every stage (trend tables included)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lag = unprocessed(settings)
        if not any(lag.values()):
            return
        if time.monotonic() >= deadline:
            counts = {k: v for k, v in worker.metrics().items() if k.startswith(("vigil_records_", "vigil_offset_", "vigil_stale_"))}
            raise AssertionError(f"not processed within {timeout_s:g} s; uncommitted records per source topic: {lag}; "
                                 f"the worker's counts: {counts}")
        time.sleep(0.5)


class OutputWatch:
    """Follows pump.features as it is written: how many windows so far, and the first written after a moment."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        name = settings.topic(PUMP_FEATURES)
        self.reader = consumer(settings)
        self.reader.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions_of(self.reader, name)])
        self.count = 0
        self.timestamps_ms: list[int] = []

    def poll(self, timeout_s: float = 0.2) -> None:
        for msg in self.reader.consume(1000, timeout=timeout_s):
            if not msg.error():
                self.count += 1
                self.timestamps_ms.append(msg.timestamp()[1])

    def until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s ({self.count} feature windows so far)"
            self.poll()

    def first_after(self, ms: int) -> int | None:
        return min((t for t in self.timestamps_ms if t > ms), default=None)

    def close(self) -> None:
        self.reader.close()


def once_each(records: list[Record], what: str, killed_ms: int | None = None) -> None:
    """Every expected (asset, seq) exactly once: the numbers of lost and of repeated windows must both be 0."""
    copies: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        copies.setdefault((r.value["asset_id"], r.value["seq"]), []).append(r)
    lost = sorted(EXPECTED_WINDOWS - set(copies))
    repeated = sorted(key for key, found in copies.items() if len(found) > 1)
    unexpected = sorted(set(copies) - EXPECTED_WINDOWS)
    where = ""
    if repeated and killed_ms is not None:  # which copies, where, written how long before/after the SIGKILL
        where = "; copies (partition, offset, ms after the SIGKILL): " + "; ".join(
            f"{key}: {[(r.partition, r.offset, r.timestamp_ms - killed_ms) for r in copies[key]]}" for key in repeated[:3])
    assert (len(lost), len(repeated), len(unexpected)) == (0, 0, 0), (
        f"{what}: {len(lost)} lost (first {lost[:5]}), {len(repeated)} (asset, seq) more than once "
        f"(first {repeated[:5]}), {len(unexpected)} unexpected (first {unexpected[:5]}){where}")
    assert len(records) == RAW_RECORDS


def alert_identity(alert: dict[str, Any]) -> tuple[Any, ...]:
    # One record per episode state change: OPEN, an UPDATE per severity change, CLOSE. The CLOSE repeats the last
    # severity, so the state belongs to the identity; a record repeated is the same id, kind, state and severity.
    return alert["alert_id"], alert["kind"], alert["state"], alert["severity"]


def alert_summary(alert: dict[str, Any]) -> tuple[Any, ...]:
    """An alert's identity and the windows it describes. Not its scores: the cloud tier's LSTM scores a batch's
    flagged windows in one forward pass, and torch's result for a sequence varies in the last bits with the batch
    around it (measured offline: batch 256 vs 37 gave different cloud scores, the same alerts)."""
    return (*alert_identity(alert), alert["asset_id"], alert["ts_ms"], alert["opened_ts_ms"], alert["first_seq"],
            alert["last_seq"], alert["confirmations"])


def latest_trend_buckets(records: list[Record]) -> dict[tuple[str, int], dict[str, Any]]:
    """The last pump.trends record per (asset, hour) (a replay may republish a revision), its own hour's fields."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:  # partition then offset order; all of a pump's records are on one partition
        key = (r.value["asset_id"], r.value["hour_start_ms"])
        assert r.value["revision"] >= latest.get(key, {}).get("revision", 0), f"revision went back for {key}"
        latest[key] = r.value
    return {key: {f: v[f] for f in TREND_BUCKET_FIELDS} for key, v in latest.items()}


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)  # NaN-safe equality of JSON pages (NaN != NaN as floats)


def trend_pages(worker: Any) -> dict[str, Any]:
    """The worker's /pumps page and every pump's /pumps/{id}/trend (the worker owns every partition here)."""
    fleet = worker.get_json("/pumps")
    pages = {"/pumps": fleet}
    for row in fleet["pumps"]:
        pages[row["asset_id"]] = worker.get_json(f"/pumps/{row['asset_id']}/trend")
    return pages


@dataclass
class RunOutput:
    features: list[Record]
    scores: list[Record]
    verdicts: list[Record]
    alerts: list[Record]
    trends: list[Record]
    pages: dict[str, Any]


def collect(settings: Settings, codec: AvroCodec, worker: Any) -> RunOutput:
    topics = (PUMP_FEATURES, PUMP_SCORES_EDGE, PUMP_SCORES_CLOUD, ALERTS, PUMP_TRENDS)
    return RunOutput(*(read_topic(settings, topic, codec) for topic in topics), trend_pages(worker))


def group_members(settings: Settings) -> int:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.confluent_config(log_level=0))
    return len(admin.describe_consumer_groups([settings.group_id])[settings.group_id].result(timeout=30).members)


def test_a_worker_sigkilled_mid_stream_is_replaced_with_nothing_lost_or_repeated(private_broker, stateful_settings,  # noqa: F811
                                                                                   start_worker, xfail_on_noida):
    xfail_on_noida("noida-db 0.2.3 never expires a group member killed with SIGKILL (measured here: the replacement worker "
                   "was assigned no partition and wrote nothing within 60 s, six session timeouts; the conformance suite "
                   "found the dead member still in the group 30 minutes later).")
    started = time.monotonic()
    codec = AvroCodec()
    crash = replace(stateful_settings, broker_hosts=(private_broker.bootstrap,))
    reference = replace(crash, topic_prefix=f"{crash.topic_prefix}ref.")
    ensure_topics(crash)
    ensure_topics(reference)

    # The crash-free reference: one worker, the stream generated while it is published.
    values: list[dict[str, Any]] = []
    worker = start_worker(reference)
    publisher = Publisher(reference, codec, raw_vibration_records(), keep=values)
    publisher.start()
    publisher.wait(timeout_s=120)
    wait_until_processed(reference, worker)
    expected = collect(reference, codec, worker)
    assert worker.stop() == 0
    reference_s = time.monotonic() - started

    # The crash run: the same records at a steady rate; SIGKILL once part of the output is downstream.
    watch = OutputWatch(crash)
    try:
        victim = start_worker(crash)
        publisher = Publisher(crash, codec, values, rate_per_s=PUBLISH_RATE_PER_S)
        publisher.start()
        watch.until(lambda: watch.count >= KILL_AFTER_WINDOWS, timeout_s=60, what="the first worker's output")
        published_at_kill = publisher.handed
        killed_ms = int(time.time() * 1000)
        victim.kill()
        windows_at_kill = watch.count
        replacement = start_worker(crash)
        watch.until(lambda: watch.first_after(killed_ms) is not None, timeout_s=RECOVERY_LIMIT_S,
                    what="output of the replacement worker after the SIGKILL")
        recovery_s = (watch.first_after(killed_ms) - killed_ms) / 1000.0
    finally:
        watch.close()
    members_after = group_members(crash)
    publisher.wait(timeout_s=120)
    wait_until_processed(crash, replacement)
    got = collect(crash, codec, replacement)
    metrics = replacement.metrics()
    gaps = {name: n for name, n in metrics.items() if name.startswith("vigil_seq_gaps_total") and n}  # records a stage never saw
    replayed = int(metrics['vigil_duplicates_total{stage="pump.vibration.raw"}'])
    total_s = time.monotonic() - started
    print(f"\nworker crash: SIGKILL after {windows_at_kill} of {RAW_RECORDS} feature windows ({published_at_kill} raw records "
          f"published); first output of the replacement {recovery_s:.1f} s after the SIGKILL (session timeout "
          f"{crash.session_timeout_s:g} s); {replayed} raw records replayed and skipped; seq gaps {gaps or 0}; "
          f"{len(got.verdicts)} cloud verdicts and {len(got.alerts)} alert records (reference {len(expected.verdicts)} and "
          f"{len(expected.alerts)}); "
          f"reference run {reference_s:.0f} s, test {total_s:.0f} s")

    assert published_at_kill < RAW_RECORDS  # the worker died mid-stream, with records still being published
    assert members_after == 1  # the dead member was expired: the replacement is the group's only member
    assert recovery_s < RECOVERY_LIMIT_S
    # The crash-free run is exactly once by the same measure (a check of the check).
    once_each(expected.features, "reference pump.features")
    once_each(expected.scores, "reference pump.scores.edge")
    # Every input has exactly one feature window and one edge score downstream: 0 lost, 0 duplicates by (asset, seq).
    once_each(got.features, "pump.features", killed_ms)
    assert all(r.value["first_input_seq"] == r.value["last_input_seq"] == r.value["seq"] for r in got.features)
    once_each(got.scores, "pump.scores.edge", killed_ms)
    # Nothing lost further down either: every scored window has its cloud verdict, and no stage saw a gap in a seq.
    scored = {(r.value["asset_id"], r.value["seq"]) for r in expected.scores if r.value["state"] == "SCORED"}
    missing_verdicts = scored - {(r.value["asset_id"], r.value["seq"]) for r in got.verdicts}
    assert len(missing_verdicts) == 0, f"{len(missing_verdicts)} of {len(scored)} scored windows have no cloud verdict"
    assert gaps == {}
    # No alert record repeated, and the same alerts as the crash-free run (the faulty pumps raise some).
    identities = Counter(alert_identity(r.value) for r in got.alerts)
    assert {key: n for key, n in identities.items() if n > 1} == {}
    assert sum(1 for key in identities if key[2] == "OPEN") >= 1
    assert sorted(alert_summary(r.value) for r in got.alerts) == sorted(alert_summary(r.value) for r in expected.alerts)
    # The trend tables equal the crash-free run's: the worker's pages (the final rolling view of every pump) ...
    assert len(expected.pages["/pumps"]["pumps"]) == PUMPS
    assert sum(row["week_windows"] for row in expected.pages["/pumps"]["pumps"]) == RAW_RECORDS
    differing = sorted(page for page in expected.pages if canonical(got.pages.get(page)) != canonical(expected.pages[page]))
    assert differing == [], f"trend pages differ from the crash-free run's: {differing}"
    assert got.pages.keys() == expected.pages.keys()
    # ... and the hourly buckets published on pump.trends (the two closed hours of every pump).
    buckets = latest_trend_buckets(got.trends)
    assert len(buckets) == 2 * PUMPS
    assert canonical(sorted(buckets.items())) == canonical(sorted(latest_trend_buckets(expected.trends).items()))
