"""Shared fixtures. Broker fixtures live in tests/fixtures/broker.py; data-set paths in tests/fixtures/data.py."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from vigil.models.simulate import FleetSimulator, make_fleet
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage

pytest_plugins = ["tests.fixtures.broker", "tests.fixtures.data", "tests.fixtures.models", "tests.fixtures.falls"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that reads the shared datasets without the `dataset` marker: `-m "not dataset"` must leave none behind."""
    from tests.fixtures.data import DATASET_FIXTURES

    unmarked = [item.nodeid for item in items
                if DATASET_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("dataset") is None]
    if unmarked:
        raise pytest.UsageError("tests that read ../shared/datasets need @pytest.mark.dataset: " + ", ".join(unmarked))


@pytest.fixture
def codec() -> AvroCodec:
    return AvroCodec()


@pytest.fixture
def chunk() -> Callable[..., dict[str, Any]]:
    """A valid VibrationChunk record; keyword arguments override fields."""

    def make(seq: int = 0, *, asset_id: str = "pump-1", ts_ms: int | None = None, n: int = 1000, fs_hz: float = 1000.0,
             channel: str = "x", rpm: float | None = 1500.0, seed: int | None = None, **override: Any) -> dict[str, Any]:
        rng = np.random.default_rng(seq if seed is None else seed)
        record = {
            "asset_id": asset_id,
            "seq": seq,
            "ts_ms": 1_767_225_600_000 + seq * 1000 if ts_ms is None else ts_ms,
            "fs_hz": fs_hz,
            "rpm": rpm,
            "channel": channel,
            "samples": (0.1 * rng.standard_normal(n)).astype("<f4").tobytes(),
        }
        record.update(override)
        return record

    return make


@pytest.fixture
def as_messages(codec: AvroCodec) -> Callable[..., list[RawMessage]]:
    """Encode records as they would arrive from ``topic`` (offsets counted from ``start``)."""

    def convert(records: list[dict[str, Any]], topic: str = "pump.vibration.raw", schema: str = "vigil.pumps.VibrationChunk",
                partition: int = 0, start: int = 0) -> list[RawMessage]:
        return [
            RawMessage(topic, partition, start + i, r["asset_id"].encode(), codec.encode(topic, schema, r))
            for i, r in enumerate(records)
        ]

    return convert


@pytest.fixture
def simulated_fleet() -> Callable[..., list[Any]]:
    def run(pumps: int = 3, steps: int = 40, seed: int = 0, n_faulty: int | None = 0, horizon_s: float | None = None) -> list[Any]:
        sim = FleetSimulator(make_fleet(pumps, seed=seed, n_faulty=n_faulty, horizon_s=horizon_s or steps), seed=seed)
        return [r for step in sim.steps(steps) for r in step]

    return run
