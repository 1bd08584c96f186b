"""The `vigil` command as users run it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from models.registry import ModelRegistry
from streams.codec import AvroCodec
from streams.topics import PUMP_PROCESS_RAW, PUMP_VIBRATION_RAW, SCHEMA_OF_TOPIC
from tests.fixtures.broker import consume_all


def vigil(*args: str, env: dict[str, str] | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout_s)


def test_train_edge_simulate_writes_an_active_verified_model(tmp_path):
    out = vigil("train", "edge", "--simulate", "--pumps", "4", "--windows", "60", "--json", env={"VIGIL_MODELS": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    registry = ModelRegistry(tmp_path)
    assert registry.active_version("edge") == report["version"]
    model, meta = registry.load("edge")
    assert set(model.feature_sets) == {"vibration.v2", "process.v1"}
    assert meta["training_data"]["healthy"] is True and meta["baseline_windows"] == 30
    assert 0.5 < report["metrics"]["vibration.v2"]["threshold"] < 1


@pytest.mark.broker
def test_produce_simulate_publishes_what_it_says(broker_settings):
    env = broker_settings.to_env()
    out = vigil("produce", "pumps", "--simulate", "3", "--steps", "5", "--seed", "4", "--json", env=env)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["vibration"] == 15 and stats["process"] == 15 and stats["delivered"] == 30
    codec = AvroCodec()
    got = consume_all(broker_settings, PUMP_VIBRATION_RAW, 15, timeout_s=20, decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[PUMP_VIBRATION_RAW]))
    assert sorted((k, v["seq"]) for k, v in got) == sorted((f"pump-{p:03d}".encode(), s) for p in range(3) for s in range(5))
    assert len(consume_all(broker_settings, PUMP_PROCESS_RAW, 15, timeout_s=20)) == 15


@pytest.mark.broker
def test_produce_pack_replays_a_pack(broker_settings, cwru_pack):
    out = vigil("produce", "pumps", "--pack", str(cwru_pack), "--json", env=broker_settings.to_env(), timeout_s=600)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert len(stats["assets"]) == 61 and stats["delivered"] == stats["records"] > 600


@pytest.mark.broker
def test_demo_runs_end_to_end_and_prints_the_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--pumps", "4", "--steps", "60", "--max-seconds", "100", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["complete"] and summary["pumps"] == 4
    assert summary["edge_scores"] == summary["windows_expected"] == 4 * 60 * 2
    assert summary["dead_letters"] == summary["malformed_injected"]
    rows = summary["per_pump"]
    assert sum(r["records"] for r in rows) == summary["records_published"]
    assert all(r["windows_scored"] == 60 - 30 for r in rows)
    faulty = [r for r in rows if r["simulated_fault"]]
    healthy = [r for r in rows if not r["simulated_fault"]]
    assert len(faulty) == 1
    assert faulty[0]["flagged_windows"] > max(r["flagged_windows"] for r in healthy)
