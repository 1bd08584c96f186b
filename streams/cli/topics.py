"""`vigil topics`: create vigil's topics with the configured settings, and report where a cluster drifts from them."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from rich.table import Table

from vigil.streams.cli.common import out
from vigil.streams.runtime.settings import Settings


def cmd_topics(args: argparse.Namespace) -> int:
    from vigil.streams.runtime.topics import check_topics, ensure_topics

    settings = Settings.from_env()
    created = [] if args.check else ensure_topics(settings)
    drift = check_topics(settings)
    if args.json:
        print(json.dumps({"created": created, "drift": [asdict(d) for d in drift]}))
    else:
        if not args.check:
            out.print(f"created {len(created)} topics: {', '.join(created) or '-'}")
        if drift:
            table = Table(title=f"{len(drift)} differences from the settings (partitions and replication are never changed here)")
            for column in ("topic", "setting", "wanted", "actual"):
                table.add_column(column)
            for d in drift:
                table.add_row(d.topic, d.setting, d.wanted, d.actual)
            out.print(table)
        else:
            out.print(f"every topic matches the settings: {settings.partitions} partitions, replication {settings.replication}, "
                      f"min.insync.replicas {settings.effective_min_insync_replicas}")
    return 1 if drift else 0


def register(sub: Any) -> None:
    p = sub.add_parser("topics", help="create vigil's topics on the configured broker and report drift from the settings "
                                      "(exit 1 when a topic differs)")
    p.add_argument("--check", action="store_true", help="create nothing; only report")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_topics)
