"""`vigil report models --since 7d`: what was our model accuracy last week? Realised precision, false alarms and lead times.

Read from the topics: alert episodes from ``alerts``, the crews' labels from
``alerts.feedback`` (the latest per alert wins), and each pump's observed
exposure from ``pump.trends`` (its first and last trend hour), and the failures
maintenance reported on ``maintenance.failures``, each judged DETECTED or MISSED
against the episodes as the label stage judges it. The numbers and
their definitions are ``vigil.models.feedback``'s: per model version
(``edge/cloud``) and ISO week of the episodes opened within ``--since``, with a
total per version. Unlabelled episodes are counted as unlabelled, never guessed.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from rich.table import Table

from vigil.streams.cli.common import console, duration_s, out, print_json
from vigil.streams.lifecycle.control import read_records
from vigil.streams.ops.performance import model_report
from vigil.streams.runtime.codec import codec_from_settings
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import ALERTS, ALERTS_FEEDBACK, MAINTENANCE_FAILURES, PUMP_TRENDS, SCHEMA_OF_TOPIC


def cmd_report(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    until_ms = int(time.time() * 1000)
    since_ms = until_ms - int(duration_s(args.since) * 1000)
    settings = Settings.from_env()
    codec = codec_from_settings(settings.schema_registry)
    try:
        read = {topic: read_records(settings, codec, topic) for topic in (ALERTS, ALERTS_FEEDBACK, MAINTENANCE_FAILURES, PUMP_TRENDS)}
    except (KafkaException, TimeoutError) as exc:
        raise RuntimeError(f"could not read the topics from the broker at {settings.bootstrap_servers} ({exc})") from None
    for topic, (_, skipped) in read.items():
        if skipped:
            console.print(f"[yellow]skipped {skipped} records of {settings.topic(topic)} that are not {SCHEMA_OF_TOPIC[topic]}[/yellow]")
    report = model_report(read[ALERTS][0], read[ALERTS_FEEDBACK][0], read[PUMP_TRENDS][0], since_ms=since_ms, until_ms=until_ms,
                          failures=read[MAINTENANCE_FAILURES][0])
    if args.json:
        print_json(report)
        return 0
    _print_report(report, args.since)
    return 0


def _number(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def _print_report(report: dict[str, Any], since: str) -> None:
    if not report["rows"]:
        out.print(f"no pump alert episodes opened in the last {since}")
    else:
        table = Table(title=f"realised model performance: pump alert episodes opened in the last {since}",
                      caption="model: edge/cloud versions that opened the episode; week: ISO week (UTC) of the opening; "
                              "FA/asset-yr: nothing-found episodes per asset-year watched; lead: failure - opening, hours")
        table.add_column("model", no_wrap=True)
        table.add_column("week", no_wrap=True)
        for column in ("episodes", "labelled", "unlabelled", "fault\nfound", "nothing\nfound", "precision", "FA per\nasset-yr",
                       "detections", "median\nlead h"):
            table.add_column(column, justify="right", no_wrap=True, min_width=max(map(len, column.split("\n"))))
        totals_of = {t["model_version"]: t for t in report["totals"]}
        versions = list(dict.fromkeys(r["model_version"] for r in report["rows"]))
        for version in versions:
            for row in [r for r in report["rows"] if r["model_version"] == version]:
                table.add_row(*_cells(row))
            table.add_row(*_cells({**totals_of[version], "week": "total"}), style="bold", end_section=True)
        out.print(table)
    out.print(f"{report['assets_observed']} pumps observed (pump.trends); false alarms per asset-year are a lower bound while "
              f"episodes are unlabelled. Feedback naming no alert read: {report['unmatched']}; invalid feedback: {report['invalid']}.")
    _print_failures(report, since)


def _print_failures(report: dict[str, Any], since: str) -> None:
    failures = report["failures"]
    if not failures:
        out.print(f"no failures reported in the last {since} (`vigil failures report`)")
        return
    from vigil.streams.cli.failures import failures_table

    missed = sum(f["verdict"] == "MISSED" for f in failures)
    table = failures_table(failures, f"failures reported in the last {since}: {missed} missed of {len(failures)}",
                           caption="detected: a pump alert episode opened within the lookback before the failure; model: the "
                                   "earliest warning's versions, or, when missed, those serving when it failed (?/? unknown)")
    out.print(table)


def _cells(row: dict[str, Any]) -> list[str]:
    return [row["model_version"], row["week"], str(row["episodes"]), str(row["labelled"]), str(row["unlabelled"]),
            str(row["fault_found"]), str(row["nothing_found"]), _number(row["precision"], ".0%"),
            _number(row["false_alarms_per_asset_year"], ".2f"), str(row["detections"]), _number(row["median_lead_time_h"], ".1f")]


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="reports from the topics: realised model performance")
    reports = p.add_subparsers(dest="report", required=True)
    a = reports.add_parser("models", help="precision, false alarms per asset-year and lead times per model version and ISO week, "
                                          "from alerts and the crews' feedback")
    a.add_argument("--since", default="7d", help="episodes opened within this long before now: 7d, 30d, 12h (default 7d)")
    a.add_argument("--json", action="store_true",
                   help='{"since_ms", "until_ms", "rows", "totals", "unmatched", "invalid", "assets_observed", "failures", '
                        '"missed_failures"}')
    a.set_defaults(func=cmd_report)

