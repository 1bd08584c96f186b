"""The embedded broker wrapper: start, readiness, clean stop, restart with data kept."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from vigil.streams.devtools.noida import EmbeddedBroker, kafka_answers

pytestmark = pytest.mark.broker


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_starts_answers_and_stops_without_orphans(tmp_path):
    broker = EmbeddedBroker(data_dir=tmp_path / "data")
    with broker:
        pid = broker.pid
        assert kafka_answers(broker.bootstrap)
        assert broker.url == f"kafka://127.0.0.1:{broker.port}"
    assert not alive(pid)
    assert not kafka_answers(broker.bootstrap, timeout_s=0.5)


def test_a_broker_outlives_no_parent(tmp_path):
    """If the process that started the broker is SIGKILLed, the broker goes too."""
    script = (
        "import sys, time; from vigil.streams.devtools.noida import EmbeddedBroker; "
        f"b = EmbeddedBroker(data_dir={str(tmp_path / 'd')!r}).start(); print(b.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        broker_pid = int(parent.stdout.readline())
        assert alive(broker_pid)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(broker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(broker_pid)
    finally:
        parent.kill()


def test_vigil_broker_command_prints_the_address_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil", "broker", "--kind", "noida", "--port", "0", "--data-dir", str(tmp_path / "d"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        import json

        info = json.loads(proc.stdout.readline())
        assert info["broker"] == "noida-db" and kafka_answers(info["bootstrap"])
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert not alive(info["pids"][0])
    finally:
        proc.kill()


def test_commands_that_need_a_broker_say_how_to_get_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "VIGIL_BROKER"}
    out = subprocess.run([sys.executable, "-m", "vigil", "topics"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "vigil broker" in out.stderr and "VIGIL_BROKER" in out.stderr
