"""`vigil alerts tail`: follow the alerts topic, one line per alert record (or JSON lines)."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

from streams.codec import AvroCodec, DecodeError
from streams.settings import Settings
from streams.topics import ALERTS, SCHEMA_OF_TOPIC

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

    consumer = Consumer(settings.reader_config(f"{settings.app_id}-alerts-tail-{time.time_ns()}", from_beginning=from_beginning))
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
