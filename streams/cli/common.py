"""What every command shares: consoles, JSON output, and a stop event for SIGINT/SIGTERM."""
from __future__ import annotations

import json
import signal
import threading
from datetime import datetime, timezone
from typing import Any

from rich.console import Console

console = Console(stderr=True)  # progress, notices and errors: stdout stays clean for --json
out = Console()


def print_json(value: Any) -> None:
    print(json.dumps(value, default=str))


def stop_event() -> threading.Event:
    """Set on SIGINT or SIGTERM, so long commands end cleanly and stop what they started."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def is_duration(text: str) -> bool:
    return text[-1:] in DURATION_UNITS and text[:-1].replace(".", "", 1).isdigit()


def duration_s(text: str) -> float:
    """'90s', '30m', '12h', '7d' -> seconds."""
    if not is_duration(text):
        raise ValueError(f"{text!r} is not a duration such as 30m, 12h or 7d")
    return float(text[:-1]) * DURATION_UNITS[text[-1]]


def time_ms(text: str | None) -> int | None:
    """'2h', '30m', '7d' before now, or an ISO date-time (UTC unless it says otherwise), as epoch ms."""
    if text is None:
        return None
    if is_duration(text):
        return int((datetime.now(timezone.utc).timestamp() - duration_s(text)) * 1000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO date-time") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp() * 1000)
