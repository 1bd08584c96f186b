"""`vigil failures report`: tell vigil an asset failed, whether or not it raised an alert (a missed failure is the
brief's "retrain at once" signal). `vigil failures list`: each reported failure's current verdict from ``ops.failures``."""
from __future__ import annotations

import argparse
import time
from typing import Any

from rich.markup import escape
from rich.table import Table

from vigil.streams.cli.common import console, out, print_json


def cmd_failures_report(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from vigil.models.feedback import failure_problem
    from vigil.models.registry import CLOUD_TIER, EDGE_TIER, ModelRegistry
    from vigil.streams.cli.alerts import _os_user, parse_time_ms
    from vigil.streams.ops.labels import failure_record, send_failure_reports, serving_version_at
    from vigil.streams.runtime.codec import codec_from_settings
    from vigil.streams.runtime.settings import Settings
    from vigil.streams.runtime.topics import ALL_TOPICS, MAINTENANCE_FAILURES, MODELS_AUDIT

    try:
        failure_ts_ms = parse_time_ms(args.at)
    except ValueError as exc:
        raise ValueError(f"--at {exc}; nothing sent") from None
    who = args.who or _os_user()
    settings = Settings.from_env()
    codec = codec_from_settings(settings.schema_registry)
    try:
        version = args.model_version
        if version is None:
            registry = ModelRegistry(settings.models_dir)
            version = serving_version_at(settings, codec, failure_ts_ms,
                                         {tier: registry.active_version(tier) for tier in (EDGE_TIER, CLOUD_TIER)})
            if version is None:
                console.print(f"[yellow]warning:[/yellow] neither {settings.topic(MODELS_AUDIT)} nor the registry in {settings.models_dir} "
                              "says which models served then; a missed failure is charged to ?/? (say it with --model-version)")
        record = failure_record(args.asset_id, failure_ts_ms, args.fault, who=who, now_ms=int(time.time() * 1000), note=args.note,
                                model_version=version, failure_id=args.id)
        problem = failure_problem(record)
        if problem is not None:
            raise ValueError(f"{problem}; nothing sent")
        from vigil.streams.runtime.topics import ensure_topics

        ensure_topics(settings, [spec for spec in ALL_TOPICS if spec.name == MAINTENANCE_FAILURES])
        partition, offset = send_failure_reports(settings, codec, [record])[0]
    except (KafkaException, TimeoutError) as exc:
        raise RuntimeError(f"could not reach the broker at {settings.bootstrap_servers} ({exc})") from None
    if args.json:
        print_json(record)
        return 0
    failed = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(failure_ts_ms / 1000))
    out.print(f"{escape(record['failure_id'])}: {escape(record['asset_id'])} failed {failed} UTC ({escape(record['fault'])}), models "
              f"{escape(record['model_version'] or '?/?')}, by {escape(who)}; sent to {settings.topic(MAINTENANCE_FAILURES)} [{partition}] "
              f"at offset {offset}; `vigil failures list` shows its verdict", soft_wrap=True, highlight=False)
    return 0


def failures_table(failures: list[dict[str, Any]], title: str, caption: str | None = None) -> Table:
    """One row per judged failure (FailureVerdict fields), missed ones in red."""
    table = Table(title=title, caption=caption)
    for column in ("failure", "pump", "failed (UTC)", "fault", "verdict", "lead h", "model", "alerts"):
        table.add_column(column, no_wrap=column != "alerts")
    for f in failures:
        style = "red" if f["verdict"] == "MISSED" else "green"
        table.add_row(escape(f["failure_id"]), escape(f["asset_id"]), time.strftime("%Y-%m-%d %H:%M", time.gmtime(f["failure_ts_ms"] / 1000)),
                      escape(f["fault"]), f"[{style}]{f['verdict']}[/{style}]", "-" if f["lead_time_h"] is None else f"{f['lead_time_h']:.1f}",
                      escape(f["model_version"]), ", ".join(f["alert_ids"]) or "-")
    return table


def cmd_failures_list(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from vigil.models.feedback import current_verdicts
    from vigil.streams.lifecycle.control import read_records
    from vigil.streams.runtime.codec import codec_from_settings
    from vigil.streams.runtime.settings import Settings
    from vigil.streams.runtime.topics import OPS_FAILURES

    settings = Settings.from_env()
    codec = codec_from_settings(settings.schema_registry)
    try:
        records, skipped = read_records(settings, codec, OPS_FAILURES)
    except (KafkaException, TimeoutError) as exc:
        raise RuntimeError(f"could not read {settings.topic(OPS_FAILURES)} from the broker at {settings.bootstrap_servers} ({exc})") from None
    if skipped:
        console.print(f"[yellow]skipped {skipped} records of {settings.topic(OPS_FAILURES)} that are not failure verdicts[/yellow]")
    verdicts = current_verdicts(records)
    if args.json:
        print_json(verdicts)
        return 0
    if not verdicts:
        out.print(f"no verdicts on {settings.topic(OPS_FAILURES)} (failures are judged by a worker running the monitoring stages)")
        return 0
    missed = sum(v["verdict"] == "MISSED" for v in verdicts)
    table = failures_table(verdicts, f"reported failures: {missed} missed of {len(verdicts)}")
    out.print(table)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("failures", help="report an asset failure (alerted or not); list each one's DETECTED or MISSED verdict")
    failures_sub = p.add_subparsers(dest="failures_command", required=True)
    p = failures_sub.add_parser("report", help="say an asset failed, on maintenance.failures; a worker judges it against its alerts")
    p.add_argument("asset_id", metavar="ASSET")
    p.add_argument("--at", required=True, help="when it failed: ISO 8601 (UTC unless a zone is given) or epoch ms")
    p.add_argument("--fault", required=True, help="what failed, e.g. outer_race, seal_leak")
    p.add_argument("--note", default=None)
    p.add_argument("--id", default=None, help="the failure's id, e.g. a work order (default ASSET/failure time in epoch ms); "
                                              "report again with the same id to correct it")
    p.add_argument("--model-version", default=None,
                   help="edge/cloud versions serving when it failed (default: from models.audit, else the registry's active pair)")
    p.add_argument("--who", default=None, help="default: your OS user name")
    p.add_argument("--json", action="store_true", help="print the record sent")
    p.set_defaults(func=cmd_failures_report)
    p = failures_sub.add_parser("list", help="each reported failure's current verdict, from ops.failures")
    p.add_argument("--json", action="store_true", help="a JSON list of the current FailureVerdict records")
    p.set_defaults(func=cmd_failures_list)
