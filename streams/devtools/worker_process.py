"""`vigil worker` as a subprocess, for the tests and the benchmarks that kill, restart and scrape workers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.streams.devtools.noida import free_port
from vigil.streams.runtime.metrics import scrape_metrics
from vigil.streams.runtime.settings import Settings


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    web_port: int
    log_path: Path

    def metrics(self) -> dict[str, float]:
        """The worker's Prometheus samples, {'name{labels}': value}."""
        return scrape_metrics(f"http://127.0.0.1:{self.web_port}/metrics")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def get_json(self, path: str) -> Any:
        """A JSON page of the worker's web server (raises urllib.error.HTTPError on 4xx/5xx)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=10) as response:
            return json.loads(response.read())

    def log(self, tail_chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-tail_chars:]


def launch_worker(settings: Settings, log_path: Path, loglevel: str = "info") -> WorkerProcess:
    """Start a `vigil worker` subprocess with ``settings``; the caller stops it by PID (``WorkerProcess.stop``)."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vigil", "worker", "--web-port", str(port), "--loglevel", loglevel],
            env={**os.environ, **settings.to_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return WorkerProcess(process, port, log_path)
