"""Switch time of a promotion on a running worker: `promote` to the first edge score with the new version.

    python -m loadtest.bench_model_switch [--promotions 20] [--every-s 3] [--rate 100] [--json]

One `vigil worker` scores a steady stream of feature windows (``--rate`` windows/s onto pump.features, a
simulated healthy fleet) while the edge tier is promoted back and forth between two versions through
models.control (vigil's ModelChanges, as `vigil models promote` does) every ``--every-s`` seconds.

Reported over the promotions, p50/p95/max in seconds:

* ``applied_s``: the change's timestamp (written by the promoting side) to the worker's ``model_switched``
  event (the new model is loaded, its sha256 checked and swapped in);
* ``first_output_s``: the change's timestamp to the first edge score that names the new version (its
  producer timestamp); this includes the wait for the next batch.

Also how long a promotion takes on the operator's side (the first one of a version also publishes its
artifact to models.artifacts in the same transaction) and how long an empty registry takes to fetch the
edge version from the topic (as a worker on another machine does).

And the check that no window was scored twice or left unscored across all switches, by (asset, stream,
seq); artifact size and load time (sha256 check and unpickling) per tier.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def _windows(pumps: int, steps: int) -> list[dict[str, Any]]:
    from vigil.models.simulate import FleetSimulator, make_fleet
    from vigil.streams.pumps.offline import OfflinePumpPipeline

    sim = FleetSimulator(make_fleet(pumps, seed=5, n_faulty=0, horizon_s=steps), seed=5)
    records = [r for _ in range(steps) for r in sim.step()]
    return OfflinePumpPipeline().feed((r.kind, r.key, r.value) for r in records).features


def _read(settings: Any, topic: str, schema: str, stop: threading.Event, sink: list[tuple[int, dict[str, Any]]]) -> None:
    """(producer timestamp ms, record) of every record of ``topic`` until ``stop``; manual assignment from the start."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from vigil.streams.runtime.codec import AvroCodec

    codec, name = AvroCodec(), settings.topic(topic)
    consumer = Consumer(settings.reader_config(f"bench-switch-{time.time_ns()}"))
    partitions = consumer.list_topics(name, timeout=30).topics[name].partitions
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
    try:
        while not stop.is_set():
            for msg in consumer.consume(1000, timeout=0.2):
                if msg.error() is None:
                    sink.append((msg.timestamp()[1], codec.decode(msg.value(), schema)))
    finally:
        consumer.close()


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "max": round(float(a.max()), 3), "n": len(values)}


def _artifact_costs(registry: Any) -> dict[str, Any]:
    costs = {}
    for tier in registry.tiers():
        version = registry.active_version(tier)
        size = (registry.root / tier / version / "model.pkl").stat().st_size
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            registry.load(tier, version)
            timings.append(time.perf_counter() - start)
        costs[tier] = {"version": version, "artifact_bytes": size, "load_s_median": round(float(np.median(timings)), 4)}
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--promotions", type=int, default=20)
    parser.add_argument("--every-s", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=100.0, help="feature windows per second")
    parser.add_argument("--pumps", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from vigil.models.registry import EDGE_TIER, ModelRegistry
    from vigil.streams.devtools.broker import start_dev_broker
    from vigil.streams.devtools.producer import RecordProducer
    from vigil.streams.devtools.worker_process import launch_worker
    from vigil.streams.lifecycle.artifacts import fetch_artifact
    from vigil.streams.lifecycle.control import ModelChanges
    from vigil.streams.pumps.training import PumpTrainingConfig, fit_pump_models, simulated_healthy_features, train_pumps_simulated
    from vigil.streams.runtime.codec import AvroCodec
    from vigil.streams.runtime.settings import Settings
    from vigil.streams.runtime.topics import OPS_EVENTS, PUMP_FEATURES, PUMP_SCORES_EDGE, SCHEMA_OF_TOPIC, ensure_topics

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vigil-bench-switch-")))
        settings = Settings.from_env()
        broker_name = "external"
        if settings.broker_hosts is None:
            broker, choice = start_dev_broker(data_dir=tmp / "broker")
            stack.callback(broker.close)
            settings, broker_name = settings.with_broker(broker.bootstrap), choice.name
        settings = replace(settings, models_dir=tmp / "models", partitions=4, retention_ms=3_600_000,
                           app_id=f"bench-switch-{time.time_ns()}", topic_prefix=f"bench-switch-{time.time_ns()}.")
        v1, _, _ = train_pumps_simulated(settings, pumps=8, windows=80)
        other = fit_pump_models(simulated_healthy_features(pumps=8, windows=80, seed=99, capture_interval_s=20.0),
                                config=PumpTrainingConfig(cloud_epochs=1, seed=99))
        registry = ModelRegistry(settings.models_dir)
        v2 = registry.save(EDGE_TIER, other.edge, other.edge_metadata)
        ensure_topics(settings)

        windows = _windows(args.pumps, int(args.rate * (args.promotions + 2) * args.every_s / (2 * args.pumps)) + 40)
        worker = launch_worker(settings, tmp / "worker.log", loglevel="warning")
        stack.callback(worker.stop, 60)
        stop = threading.Event()
        scores: list[tuple[int, dict[str, Any]]] = []
        events: list[tuple[int, dict[str, Any]]] = []
        readers = [threading.Thread(target=_read, args=(settings, PUMP_SCORES_EDGE, SCHEMA_OF_TOPIC[PUMP_SCORES_EDGE], stop, scores)),
                   threading.Thread(target=_read, args=(settings, OPS_EVENTS, SCHEMA_OF_TOPIC[OPS_EVENTS], stop, events))]
        for r in readers:
            r.start()
        codec, producer = AvroCodec(), RecordProducer(settings, AvroCodec())
        topic = settings.topic(PUMP_FEATURES)

        def produce() -> None:
            start = time.monotonic()
            for i, w in enumerate(windows):
                producer.send_raw(PUMP_FEATURES, w["asset_id"].encode(), codec.encode(topic, SCHEMA_OF_TOPIC[PUMP_FEATURES], w))
                time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
            producer.flush()

        feeder = threading.Thread(target=produce)
        feeder.start()
        while len(scores) < 2 * args.pumps * 35:  # warm: every stream past its baseline
            time.sleep(0.5)
        changes, lifecycle, promote_s = [], ModelChanges(settings, registry), []
        for i in range(args.promotions):
            version = v2 if i % 2 == 0 else v1
            start = time.perf_counter()
            changes.append(lifecycle.promote(EDGE_TIER, version, why=f"bench switch {i}", who="bench"))
            promote_s.append(time.perf_counter() - start)
            time.sleep(max(0.0, args.every_s - promote_s[-1]))
        feeder.join()
        deadline = time.monotonic() + 120
        while len(scores) < len(windows) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        stop.set()
        for r in readers:
            r.join()

        applied, first_output = [], []
        switched = {e["requested_at_ms"]: ts for ts, e in ((e["at_ms"], e) for _, e in events) if e["kind"] == "model_switched"}
        ordered = sorted(scores, key=lambda s: s[0])
        for change in changes:
            if change["at_ms"] in switched:
                applied.append((switched[change["at_ms"]] - change["at_ms"]) / 1000)
            first = next((ts for ts, s in ordered if ts >= change["at_ms"] and s["model_version"] == change["version"]), None)
            if first is not None:
                first_output.append((first - change["at_ms"]) / 1000)
        counts = Counter((s["asset_id"], s["stream"], s["seq"]) for _, s in scores)
        fetch_s = []
        for i in range(3):  # a worker on another machine: an empty registry, the version only on models.artifacts
            empty = ModelRegistry(tmp / f"empty-{i}")
            start = time.perf_counter()
            problem = fetch_artifact(settings, empty, EDGE_TIER, v2)
            fetch_s.append(time.perf_counter() - start)
            assert problem is None and empty.load(EDGE_TIER, v2)[1]["sha256"] == registry.metadata(EDGE_TIER, v2)["sha256"], problem
        expected = {(w["asset_id"], w["stream"], w["seq"]) for w in windows}
        out = {
            "broker": broker_name, "cores": os.cpu_count(), "promotions": len(changes), "every_s": args.every_s,
            "rate_windows_per_s": args.rate, "windows": len(windows),
            "applied_s": _percentiles(applied), "first_output_s": _percentiles(first_output),
            "windows_scored_twice": sum(1 for c in counts.values() if c > 1), "windows_unscored": len(expected - set(counts)),
            "versions_scored": dict(Counter(s["model_version"] for _, s in scores)), "v1": v1, "v2": v2,
            "refusals": [e for _, e in events if e["kind"] != "model_switched"],
            "artifacts": _artifact_costs(registry),
            # the first promotion of each version also publishes its chunks to models.artifacts (in the transaction)
            "promote_s": {"first_of_each_version": [round(x, 3) for x in promote_s[:2]],
                          "later": _percentiles(promote_s[2:])},
            "edge_fetch_from_topic_s": [round(x, 3) for x in fetch_s],
        }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
