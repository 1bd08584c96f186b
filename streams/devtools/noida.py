"""The embedded Kafka-compatible broker (noida-db) for the demo, development and tests.

Only its Kafka service runs, on a port and data directory of our choosing.
Production uses Apache Kafka (``docker/compose.yaml``, ``VIGIL_BROKER``);
nothing else in vigil depends on this broker or its quirks.

Measured quirks that shape this module: it may ignore SIGTERM for more than
5 s (we escalate to SIGKILL after a grace period), and it keeps its whole log
in one JSON file rewritten on save (keep test data small, use a temporary
data dir). Its binary is started directly, not through the ``noida-db``
Python wrapper, which would leave the real server orphaned when killed.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


class BrokerStartError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_binary() -> Path:
    name = "noida-db.exe" if os.name == "nt" else "noida-db"
    path = Path(str(files("noida_db").joinpath(name)))
    if not path.is_file():
        raise BrokerStartError(f"noida-db binary not found at {path}; is the noida-db package installed?")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: a broker process gets SIGKILL if the thread that started it dies, so no orphan outlives a crash."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def kafka_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a Kafka metadata request to ``bootstrap`` gets an answer."""
    from confluent_kafka.admin import AdminClient

    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError:
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": int(timeout_s * 1000)})
    try:
        admin.list_topics(timeout=timeout_s)
        return True
    except Exception:
        return False


class EmbeddedBroker:
    """Start, wait for, and stop the embedded broker; a context manager.

    >>> with EmbeddedBroker() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap)               # 127.0.0.1:<free port>
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 30.0,
        stop_grace_s: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="vigil-broker-")
            data_dir = self._own_tmp.name
        self.data_dir = Path(data_dir)
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.broker.log"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> "EmbeddedBroker":
        if self.process and self.process.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(broker_binary()), "start", "--only", "kafka",
            "--kafka-port", str(self.port), "--host", self.host, "--data-dir", str(self.data_dir),
        ]
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerStartError(f"embedded broker exited with {self.process.returncode}: {self.log_tail()}")
            if kafka_answers(self.bootstrap, timeout_s=1.0):
                logger.info("embedded broker ready", extra={"bootstrap": self.bootstrap, "pid": self.process.pid})
                return self
            time.sleep(0.1)
        self.stop()
        raise BrokerStartError(f"embedded broker did not answer on {self.bootstrap} within {self.startup_timeout_s} s: {self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after the grace period; returns the exit code."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("embedded broker ignored SIGTERM; killing it", extra={"pid": proc.pid})
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def restart(self) -> "EmbeddedBroker":
        """Stop and start on the same port and data directory (data persists)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._own_tmp is not None:
            self._own_tmp.cleanup()
            self._own_tmp = None
            with contextlib.suppress(FileNotFoundError):
                self.log_path.unlink()

    def log_tail(self, n_bytes: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n_bytes:].decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
