"""`vigil broker`: a development broker, Apache Kafka or the noida-db fallback, until Ctrl-C."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vigil.streams.cli.common import console, stop_event


def _exited(broker: Any) -> bool:
    """True when any node of the broker is no longer running."""
    if hasattr(broker, "pids"):
        return any(pid is None for pid in broker.pids)
    return broker.process is None or broker.process.poll() is not None


def cmd_broker(args: argparse.Namespace) -> int:
    from vigil.streams.devtools.broker import APACHE_KAFKA, broker_kind_requested, choose_broker, make_broker

    choice = choose_broker(args.kind or broker_kind_requested())
    if choice.notice:
        console.print(f"[yellow]{choice.notice}[/yellow]", soft_wrap=True)
    data_dir = Path(args.data_dir or (".vigil/kafka" if choice.name == APACHE_KAFKA else ".vigil/broker"))
    broker = make_broker(choice, nodes=args.nodes, data_dir=data_dir, port=args.port)
    stop = stop_event()
    with console.status(f"starting {choice.name} ({args.nodes} node{'s' if args.nodes > 1 else ''})", spinner="dots"):
        broker.start()
    try:
        pids = list(getattr(broker, "pids", [getattr(broker, "pid", None)]))
        if args.json:
            print(json.dumps({"broker": choice.name, "nodes": args.nodes, "bootstrap": broker.bootstrap, "url": broker.url,
                              "pids": pids, "data_dir": str(data_dir)}), flush=True)
        else:
            print(f"{choice.name} on {broker.bootstrap} ({args.nodes} node{'s' if args.nodes > 1 else ''}, pids {pids}), "
                  f"data in {data_dir}", flush=True)
            print(f"export VIGIL_BROKER={broker.url}", flush=True)
            print("Ctrl-C stops it.", flush=True)
        while not stop.wait(0.5):
            if _exited(broker):
                console.print(f"[red]broker exited unexpectedly[/red]: {broker.log_tail()}")
                return 1
    finally:
        broker.close()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("broker", help="run a development broker until Ctrl-C: Apache Kafka (KRaft) from Maven Central, "
                                       "or the embedded noida-db where Java 17+ or Maven is missing")
    p.add_argument("--nodes", type=int, default=1, help="Apache Kafka: nodes in the cluster (3: replication 3, min.insync.replicas 2)")
    p.add_argument("--kind", choices=["auto", "kafka", "noida"], default=None,
                   help="auto (default, or VIGIL_DEV_BROKER): Apache Kafka when it can run here; kafka: fail instead of falling back")
    p.add_argument("--port", type=int, default=None, help="noida-db: Kafka port (Apache Kafka picks free ports per node)")
    p.add_argument("--data-dir", default=None, help="default .vigil/kafka (Apache Kafka) or .vigil/broker (noida-db); kept across runs")
    p.add_argument("--json", action="store_true", help="print the address as JSON")
    p.set_defaults(func=cmd_broker)
