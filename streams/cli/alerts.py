"""`vigil alerts tail`: follow the alerts topic, one line per alert record (or JSON lines).
`vigil alerts resolve`: say what maintenance found for an alert, as an ``alerts.feedback`` record (its delayed label)."""
from __future__ import annotations

import argparse
import getpass
import json
import time
from datetime import datetime, timezone
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape

from vigil.models.feedback import FEEDBACK_OUTCOMES, feedback_problem
from vigil.streams.cli.common import console, out, print_json, stop_event
from vigil.streams.ops.labels import feedback_record, find_alert, send_feedback
from vigil.streams.runtime.codec import AvroCodec, DecodeError, codec_from_settings
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import ALERTS, ALERTS_FEEDBACK, ALL_TOPICS, SCHEMA_OF_TOPIC

SEVERITY_STYLE = {"LOW": "yellow", "MEDIUM": "dark_orange", "HIGH": "red", "CRITICAL": "bold red"}


def _utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000.0, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def format_alert(alert: dict[str, Any]) -> str:
    """One line for people, with rich markup: when, what state, how bad, which pump, and why.

    >>> print(format_alert({"ts_ms": 0, "state": "OPEN", "severity": "HIGH", "asset_id": "pump-7", "kind": "pump.anomaly",
    ...     "alert_id": "ab12", "edge_score": 0.71, "cloud_score": 12.0, "confirmations": 3,
    ...     "diagnosis": {"fault": "outer_race", "confidence": 0.9, "envelope_ratios": {}},
    ...     "top_features": {"envelope_bpfo": 8.5, "rms_g": 2.25}}))
    1970-01-01 00:00:00 OPEN   [red]HIGH    [/red] pump-7 pump.anomaly ab12 edge 0.710 cloud 12.0 confirmations 3 outer_race (90%) top envelope_bpfo +8.5, rms_g +2.2

    Fall emergencies carry stage 2's probability and the stage-3 reason instead:

    >>> print(format_alert({"ts_ms": 0, "state": "OPEN", "severity": "CRITICAL", "asset_id": "w-3", "kind": "fall.emergency",
    ...     "alert_id": "w-3/fall/0", "edge_score": 0.97, "detail": "no answer within 10 s of the confirmation request",
    ...     "top_features": {"peak_g": 4.2, "angle_change_deg": 88.0}}))
    1970-01-01 00:00:00 OPEN   [bold red]CRITICAL[/bold red] w-3 fall.emergency w-3/fall/0 fall probability 0.970: no answer within 10 s of the confirmation request; peak_g 4.2, angle_change_deg 88.0
    """
    style = SEVERITY_STYLE.get(alert["severity"], "white")
    if alert["kind"].startswith("fall."):
        evidence = ", ".join(f"{name} {value:.1f}" for name, value in (alert.get("top_features") or {}).items())
        return (f"{_utc(alert['ts_ms'])} {alert['state']:<6} [{style}]{alert['severity']:<8}[/{style}] {alert['asset_id']} {alert['kind']} "
                f"{alert['alert_id']} fall probability {alert['edge_score']:.3f}: {alert.get('detail', '')}{'; ' + evidence if evidence else ''}")
    diagnosis = alert.get("diagnosis")
    why = f" {diagnosis['fault']} ({diagnosis['confidence']:.0%})" if diagnosis else ""
    top = ", ".join(f"{name} {value:+.1f}" for name, value in (alert.get("top_features") or {}).items())
    return (
        f"{_utc(alert['ts_ms'])} {alert['state']:<6} [{style}]{alert['severity']:<8}[/{style}] {alert['asset_id']} {alert['kind']} "
        f"{alert['alert_id']} edge {alert['edge_score']:.3f} cloud {alert['cloud_score']:.1f} confirmations {alert['confirmations']}"
        f"{why}{' top ' + top if top else ''}"
    )


def tail_alerts(
    settings: Settings,
    codec: AvroCodec,
    on_alert: Callable[[dict[str, Any]], None],
    *,
    from_beginning: bool = False,
    max_alerts: int | None = None,
    idle_timeout_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_undecodable: Callable[[str], None] = lambda reason: None,
) -> int:
    """Call ``on_alert`` for each alert record; returns how many. Stops after ``max_alerts``, after
    ``idle_timeout_s`` with nothing new, or when ``should_stop`` says so. Commits nothing. A record
    that is not an Alert is reported to ``on_undecodable`` with its offset and skipped."""
    from confluent_kafka import Consumer

    consumer = Consumer(settings.reader_config(f"{settings.group_id}-alerts-tail-{time.time_ns()}", from_beginning=from_beginning))
    consumer.subscribe([settings.topic(ALERTS)])
    seen = 0
    idle_since = time.monotonic()
    try:
        while not should_stop() and (max_alerts is None or seen < max_alerts):
            if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                break
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            idle_since = time.monotonic()
            try:
                alert = codec.decode(msg.value(), SCHEMA_OF_TOPIC[ALERTS])
            except DecodeError as exc:
                on_undecodable(f"partition {msg.partition()} offset {msg.offset()}: {exc}")
                continue
            on_alert(alert)
            seen += 1
    finally:
        consumer.close()
    return seen


def cmd_alerts_tail(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    out = Console(highlight=False)
    stop = stop_event()

    def show(alert: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(alert), flush=True)
        else:
            out.print(format_alert({**alert, "asset_id": escape(alert["asset_id"]), "kind": escape(alert["kind"])}))

    tail_alerts(
        settings, codec_from_settings(settings.schema_registry), show, from_beginning=args.from_beginning,
        max_alerts=args.max, idle_timeout_s=args.timeout_s, should_stop=stop.is_set,
        on_undecodable=lambda reason: console.print(f"[yellow]skipped a record that is not an Alert[/yellow]: {reason}", soft_wrap=True),
    )
    return 0


def parse_time_ms(text: str) -> int:
    """An ISO 8601 date-time (UTC unless it names a zone) or epoch milliseconds, as epoch ms.

    >>> parse_time_ms("1764547200000"), parse_time_ms("2025-12-01T00:00:00Z"), parse_time_ms("2025-12-01 01:00+01:00")
    (1764547200000, 1764547200000, 1764547200000)
    >>> parse_time_ms("2026-11-26T17:20:00.123000+00:00")
    1795713600123
    """
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        return int(stripped)
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 date-time nor epoch milliseconds") from None
    # round, not int: a float timestamp of .123 s times 1000 can come out at 122.99999
    return round((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp() * 1000)


def cmd_alerts_resolve(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from vigil.streams.runtime.topics import ensure_topics

    if args.outcome not in FEEDBACK_OUTCOMES:
        raise ValueError(f"unknown outcome {args.outcome!r}: say {' or '.join(FEEDBACK_OUTCOMES)}; nothing sent")
    try:
        failure_ts_ms = parse_time_ms(args.failure_at) if args.failure_at is not None else None
    except ValueError as exc:
        raise ValueError(f"--failure-at {exc}; nothing sent") from None
    if failure_ts_ms is not None and args.outcome == "nothing-found":
        raise ValueError("--failure-at says something failed, which --outcome nothing-found denies; nothing sent")
    who = args.who or _os_user()
    settings = Settings.from_env()
    codec = codec_from_settings(settings.schema_registry)
    try:
        alert = find_alert(settings, codec, args.alert_id)
        if alert is None:
            raise LookupError(f"no alert {args.alert_id!r} on {settings.topic(ALERTS)}; nothing sent")
        if not alert["kind"].startswith("pump."):
            raise ValueError(f"alert {args.alert_id!r} is a {alert['kind']} alert; feedback is for pump alerts; nothing sent")
        record = feedback_record(alert, args.outcome, who=who, now_ms=int(time.time() * 1000), fault=args.fault, note=args.note,
                                 failure_ts_ms=failure_ts_ms)
        problem = feedback_problem(record)
        if problem is not None:
            raise ValueError(f"{problem}; nothing sent")
        ensure_topics(settings, [spec for spec in ALL_TOPICS if spec.name == ALERTS_FEEDBACK])
        partition, offset = send_feedback(settings, codec, record)
    except (KafkaException, TimeoutError) as exc:
        raise RuntimeError(f"could not reach the broker at {settings.bootstrap_servers} ({exc})") from None
    if args.json:
        print_json(record)
        return 0
    found = f" {escape(record['fault'])}" if record["fault"] else ""
    failed = f", failed {_utc(failure_ts_ms)} UTC" if failure_ts_ms is not None else ""
    note = f" ({escape(record['note'])})" if record["note"] else ""
    style = "red" if args.outcome == "fault-found" else "green"
    out.print(f"{escape(record['alert_id'])} on {escape(record['asset_id'])}: [{style}]{args.outcome}[/{style}]{found}{failed}{note}, "
              f"by {escape(who)}; sent to {settings.topic(ALERTS_FEEDBACK)} [{partition}] at offset {offset}", soft_wrap=True, highlight=False)
    return 0


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in the environment or the password database
        raise ValueError("could not tell who you are from the OS; say it with --who") from None


def register(sub: Any) -> None:
    p = sub.add_parser("alerts", help="read the alerts topic; resolve an alert with what maintenance found")
    alerts_sub = p.add_subparsers(dest="alerts_command", required=True)
    p = alerts_sub.add_parser("tail", help="follow alerts as they are published (Ctrl-C stops)")
    p.add_argument("--from-beginning", action="store_true", help="start from the oldest alert kept, not from now")
    p.add_argument("--max", type=int, default=None, help="stop after this many alert records")
    p.add_argument("--timeout-s", type=float, default=None, help="stop after this long with nothing new")
    p.add_argument("--json", action="store_true", help="one JSON object per alert record")
    p.set_defaults(func=cmd_alerts_tail)
    p = alerts_sub.add_parser("resolve", help="say what maintenance found for an alert (its label, on alerts.feedback)")
    p.add_argument("alert_id", metavar="ALERT_ID")
    p.add_argument("--outcome", required=True, help=f"{' or '.join(FEEDBACK_OUTCOMES)}")
    p.add_argument("--fault", default=None, help="what was found, e.g. outer_race, seal_leak")
    p.add_argument("--note", default=None)
    p.add_argument("--failure-at", default=None,
                   help="when the fault became a failure (ISO 8601, UTC unless a zone is given, or epoch ms), for lead times; "
                        "only with fault-found")
    p.add_argument("--who", default=None, help="default: your OS user name")
    p.add_argument("--json", action="store_true", help="print the record sent")
    p.set_defaults(func=cmd_alerts_resolve)
