"""`vigil broker` and `vigil topics`: a development broker, and vigil's topics on any broker."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vigil.streams.cli.common import console, stop_event
from vigil.streams.runtime.settings import Settings


def cmd_broker(args: argparse.Namespace) -> int:
    from vigil.streams.devtools.broker import EmbeddedBroker

    data_dir = Path(args.data_dir)
    broker = EmbeddedBroker(port=args.port, data_dir=data_dir, host=args.host)
    stop = stop_event()
    with broker:
        if args.json:
            print(json.dumps({"bootstrap": broker.bootstrap, "url": broker.url, "pid": broker.pid, "data_dir": str(data_dir)}), flush=True)
        else:
            print(f"embedded Kafka broker (noida-db) on {broker.bootstrap}, data in {data_dir}", flush=True)
            print(f"export VIGIL_BROKER={broker.url}", flush=True)
            print("Ctrl-C stops it.", flush=True)
        while not stop.wait(0.5):
            if broker.process is None or broker.process.poll() is not None:
                console.print(f"[red]broker exited unexpectedly[/red]: {broker.log_tail()}")
                return 1
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from vigil.streams.runtime.topics import ensure_topics

    settings = Settings.from_env()
    created = ensure_topics(settings)
    print(json.dumps({"created": created}) if args.json else f"created {len(created)} topics: {', '.join(created) or '-'}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("broker", help="run the embedded Kafka broker (noida-db) until Ctrl-C")
    p.add_argument("--port", type=int, default=9092, help="Kafka port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--data-dir", default=".vigil/broker")
    p.add_argument("--json", action="store_true", help="print the address as JSON")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("topics", help="create vigil's topics on the configured broker")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_topics)
