"""PRONOSTIA-layout run-to-failure packs: the protocol's asset lives, commissioning lengths and feature windows.

Protocol (issue 4, the design brief's evaluation contract):

- each bearing is one asset, both accelerometer channels are its streams;
- its commissioning baseline is the first 10 % of its life, at least 30 windows;
- an alert episode opened in the first 30 % of life makes it a false-alarm asset;
- it is detected when an episode opens after 30 % of life and before the end of
  the record (the failure); the lead is the end of record minus that opening.

Training (``vigil.streams.pumps.training``), evaluation and the demo read packs through here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from vigil.models.assets import AssetCatalog
from vigil.models.packs import PACK_EPOCH, iter_pronostia, pack_kind
from vigil.streams.pumps.offline import OfflinePumpPipeline


@dataclass(frozen=True)
class RunToFailureProtocol:
    baseline_fraction: float = 0.10
    min_baseline_windows: int = 30
    false_alarm_fraction: float = 0.30


@dataclass(frozen=True)
class AssetLife:
    asset_id: str
    windows: int  # per channel
    start_ms: int
    end_ms: int  # the last snapshot: failure

    @property
    def duration_ms(self) -> int:
        return max(1, self.end_ms - self.start_ms)

    def fraction(self, ts_ms: int) -> float:
        return (ts_ms - self.start_ms) / self.duration_ms


def pack_lives(path: str | Path, bearings: Iterable[str] | None = None) -> dict[str, AssetLife]:
    if pack_kind(path) != "pronostia":
        raise ValueError(f"{path} is not a PRONOSTIA-layout run-to-failure pack")
    with np.load(path) as d:
        names = [str(b) for b in d["bearings"]]
        offsets, t_s, clocks = d["bearing_offsets"], d["t_s"], d["t0_clock"]
        lives = {}
        for b, name in enumerate(names):
            if bearings is not None and name not in bearings:
                continue
            lo, hi = int(offsets[b]), int(offsets[b + 1])
            h, m, s = str(clocks[b]).split(":")
            start = int(PACK_EPOCH.timestamp() * 1000 + round((int(h) * 3600 + int(m) * 60 + float(s)) * 1000))
            lives[name] = AssetLife(name, hi - lo, start + int(round(t_s[lo] * 1000)), start + int(round(t_s[hi - 1] * 1000)))
    return lives


def protocol_asset_mapping(lives: Mapping[str, AssetLife], protocol: RunToFailureProtocol = RunToFailureProtocol()) -> dict[str, Any]:
    """PRONOSTIA bearing geometry, one window per 0.1 s snapshot, and each bearing's own commissioning
    length, as a VIGIL_ASSETS document."""
    per_asset = {
        name: {"baseline_windows": max(protocol.min_baseline_windows, math.ceil(protocol.baseline_fraction * life.windows))}
        for name, life in lives.items()
    }
    return {"defaults": {"bearing": "pronostia", "window_s": 0.1}, "assets": per_asset}


def protocol_assets(lives: Mapping[str, AssetLife], protocol: RunToFailureProtocol = RunToFailureProtocol()) -> AssetCatalog:
    return AssetCatalog.from_mapping(protocol_asset_mapping(lives, protocol))


def pack_features(path: str | Path, assets: AssetCatalog, bearings: list[str] | None = None) -> list[dict[str, Any]]:
    pipeline = OfflinePumpPipeline(assets=assets)
    records = (("vibration", c.asset_id, c.as_record()) for c in iter_pronostia(path, bearings))
    return pipeline.feed_batched(records, batch_size=512).features
