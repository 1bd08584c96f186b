"""What idle readers cost the development broker: CPU of the broker and of the client per idle consumer.

    python -m loadtest.bench_idle_readers [--json] [--seconds 5]      (VIGIL_DEV_BROKER=noida for the fallback)

noida-db answers an empty fetch at once instead of holding it, so an idle
librdkafka consumer fetches in a loop (measured: 39 % of a broker core and
46 % of a client core per idle consumer); Apache Kafka holds the fetch. This
is why `vigil demo` reads all it watches with one consumer. Figures are percent of one core over the
measured interval, for 0, 1 and 2 idle consumers on an empty topic.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path


def broker_cpu(broker: object) -> float:
    """CPU seconds of every process of the broker (each node of a Kafka cluster, or noida-db)."""
    pids = getattr(broker, "pids", None) or [getattr(broker, "pid")]
    return sum(cpu_seconds(pid) for pid in pids if pid)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    from confluent_kafka import Consumer

    from vigil.streams.devtools.broker import start_dev_broker
    from vigil.streams.runtime.settings import Settings
    from vigil.streams.runtime.topics import FALL_CONFIRM_REQUEST, FALL_TOPICS, ensure_topics

    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker, choice = start_dev_broker(data_dir=Path(tmp) / "broker")
        report["broker"] = choice.name
        try:
            settings = replace(Settings.from_env({}), broker_hosts=(broker.bootstrap,), partitions=4)
            ensure_topics(settings, FALL_TOPICS)
            for n in (0, 1, 2):
                consumers = [Consumer(settings.reader_config(f"idle-{n}-{i}")) for i in range(n)]
                for c in consumers:
                    c.subscribe([settings.topic(FALL_CONFIRM_REQUEST)])
                stop = threading.Event()

                def poll(consumer: Consumer) -> None:
                    while not stop.is_set():
                        consumer.consume(100, timeout=0.1)

                threads = [threading.Thread(target=poll, args=(c,)) for c in consumers]
                for t in threads:
                    t.start()
                time.sleep(3.0)  # joined and fetching
                b0, c0, t0 = broker_cpu(broker), cpu_seconds(os.getpid()), time.monotonic()
                time.sleep(args.seconds)
                b1, c1, t1 = broker_cpu(broker), cpu_seconds(os.getpid()), time.monotonic()
                stop.set()
                for t in threads:
                    t.join()
                for c in consumers:
                    c.close()
                report[f"{n}_idle_consumers"] = {"broker_core_pct": round(100 * (b1 - b0) / (t1 - t0)),
                                                 "client_core_pct": round(100 * (c1 - c0) / (t1 - t0))}
        finally:
            broker.close()
    if args.json:
        print(json.dumps(report))
        return
    print(f"broker: {report.pop('broker')}")
    print("\n".join(f"{k:20s} broker {v['broker_core_pct']} %, client {v['client_core_pct']} %" for k, v in report.items()))


if __name__ == "__main__":
    main()
