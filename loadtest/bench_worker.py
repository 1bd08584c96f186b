"""Throughput of `vigil worker` on a real broker: a pre-loaded backlog drained by 1 or more workers.

    python -m loadtest.bench_worker [--pumps 40] [--steps 100] [--workers 1 2] [--json]

Uses VIGIL_BROKER when set, else starts the embedded broker. The backlog is
produced first; the clock runs from the first record a worker consumes until
every stage of the cascade (features, edge, cloud, alerts, trends) has
consumed all of it, read from the workers' /metrics, so start-up is not counted.
Reported: records/s for each worker count and the ratio to one worker.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path


def scrape(port: int) -> dict[str, float]:
    from vigil.streams.runtime.metrics import scrape_metrics

    try:
        return scrape_metrics(f"http://127.0.0.1:{port}/metrics", timeout_s=2)
    except OSError:
        return {}  # not listening yet


def run(settings, n_workers: int, expected_scores: int, log_dir: Path) -> dict[str, float]:
    from vigil.streams.devtools.worker_process import launch_worker

    settings = replace(settings, session_timeout_s=10.0, heartbeat_interval_s=1.0)
    workers = [launch_worker(settings, log_dir / f"worker-{n_workers}-{i}.log", loglevel="warning") for i in range(n_workers)]
    ports = [w.web_port for w in workers]
    try:
        first = last = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            samples = [scrape(p) for p in ports]
            def total(name: str, stage: str) -> float:
                return sum(s.get(f'{name}{{stage="{stage}"}}', 0) for s in samples)

            consumed = total("vigil_records_in_total", "pump.vibration.raw")
            if consumed and first is None:
                first = time.monotonic()
            cloud_out = total("vigil_records_out_total", "pump.scores.edge")
            if (total("vigil_records_out_total", "pump.features") >= expected_scores
                    and total("vigil_records_in_total", "pump.scores.edge") >= expected_scores
                    and total("vigil_records_in_total", "pump.trends") >= expected_scores
                    and total("vigil_records_in_total", "pump.scores.cloud") >= cloud_out > 0):
                last = time.monotonic()
                break
            time.sleep(0.05)
        if first is None or last is None:
            raise RuntimeError(f"workers did not finish: see {log_dir}")
        return {"seconds": last - first}
    finally:
        for w in workers:
            w.stop(timeout_s=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pumps", type=int, default=40)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from vigil.models.simulate import FleetSimulator, make_fleet
    from vigil.streams.devtools.broker import start_dev_broker
    from vigil.streams.devtools.producer import RecordProducer, publish_simulation
    from vigil.streams.pumps.training import train_pumps_simulated
    from vigil.streams.runtime.codec import AvroCodec
    from vigil.streams.runtime.settings import Settings
    from vigil.streams.runtime.topics import ensure_topics

    results = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vigil-bench-")))
        settings = Settings.from_env()
        if settings.broker_hosts is None:
            broker, choice = start_dev_broker(data_dir=tmp / "broker")
            stack.callback(broker.close)
            settings = settings.with_broker(broker.bootstrap)
            results["broker"] = choice.name
        settings = replace(settings, models_dir=tmp / "models", partitions=8, retention_ms=3_600_000)
        train_pumps_simulated(settings, pumps=8, windows=80)
        for n in args.workers:
            run_settings = replace(settings, app_id=f"bench-{n}-{time.time_ns()}", topic_prefix=f"bench{n}-{time.time_ns()}.")
            ensure_topics(run_settings)
            sim = FleetSimulator(make_fleet(args.pumps, seed=n, n_faulty=0, horizon_s=args.steps), seed=n, chunk_s=1.0)
            stats = publish_simulation(RecordProducer(run_settings, AvroCodec()), sim, args.steps)
            records = stats["vibration"] + stats["process"]
            timing = run(run_settings, n, expected_scores=records, log_dir=tmp)
            results[n] = {"records": records, "seconds": round(timing["seconds"], 2), "records_per_s": round(records / timing["seconds"])}
    broker_name = results.pop("broker", "external")
    base = results[args.workers[0]]["records_per_s"]
    for r in results.values():
        r["ratio_to_first"] = round(r["records_per_s"] / base, 2)
    out = {"broker": broker_name, "pumps": args.pumps, "steps": args.steps, "chunk": "1 s at 5120 Hz + 1 process sample", "cores": os.cpu_count(), "workers": results}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
