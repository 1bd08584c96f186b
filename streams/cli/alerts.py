"""`vigil alerts tail`: follow the alerts topic, one line per alert record (or JSON lines)."""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape

from vigil.streams.cli.common import console, stop_event
from vigil.streams.runtime.codec import AvroCodec, DecodeError, codec_from_settings
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import ALERTS, SCHEMA_OF_TOPIC

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


def register(sub: Any) -> None:
    p = sub.add_parser("alerts", help="read the alerts topic")
    alerts_sub = p.add_subparsers(dest="alerts_command", required=True)
    p = alerts_sub.add_parser("tail", help="follow alerts as they are published (Ctrl-C stops)")
    p.add_argument("--from-beginning", action="store_true", help="start from the oldest alert kept, not from now")
    p.add_argument("--max", type=int, default=None, help="stop after this many alert records")
    p.add_argument("--timeout-s", type=float, default=None, help="stop after this long with nothing new")
    p.add_argument("--json", action="store_true", help="one JSON object per alert record")
    p.set_defaults(func=cmd_alerts_tail)
