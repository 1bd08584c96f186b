"""The ``vigil`` command: one module per command group, each with a ``register(sub)`` that adds its parser.

broker, topics, worker, produce and respond, train, retrain, models, evaluate and tune, alerts, failures, report, demo.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from vigil.streams.cli import alerts, broker, demo, evaluate, failures, models, produce, report, retrain, topics, train, worker
from vigil.streams.cli.common import console
from vigil.streams.runtime.settings import BrokerNotConfigured

COMMAND_GROUPS = (broker, topics, worker, train, retrain, produce, models, evaluate, alerts, failures, report, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Pump health and fall detection on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except BrokerNotConfigured as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    except (ValueError, LookupError, RuntimeError) as exc:
        # Missing models, bad packs and tampered artifacts are the user's to fix: say what, not a traceback.
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
