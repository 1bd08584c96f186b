"""What every command shares: consoles, JSON output, and a stop event for SIGINT/SIGTERM."""
from __future__ import annotations

import json
import signal
import threading
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
