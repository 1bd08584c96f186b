"""Per-asset configuration: bearing geometry, window length, demodulation band.

Loaded from a JSON file (``VIGIL_ASSETS``)::

    {
      "defaults": {"window_s": 1.0},
      "assets": {
        "pump-007": {"bearing": {"n_rollers": 8, "roller_diameter_mm": 6.75, "pitch_diameter_mm": 28.5}},
        "Bearing1_*": {"bearing": "pronostia", "window_s": 0.1}
      }
    }

Exact ids win over patterns; patterns (shell-style) are tried in file order.
Anything not given falls back to the documented defaults of ``AssetConfig``.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from vigil.models.bearing import PRONOSTIA_BEARING, SKF_6205, BearingGeometry, FaultOrders

NAMED_BEARINGS = {"skf6205": SKF_6205, "pronostia": PRONOSTIA_BEARING}


@dataclass(frozen=True)
class AssetConfig:
    """How one asset's vibration is windowed and analysed.

    - ``bearing``: geometry of the monitored bearing (default SKF 6205).
    - ``window_s``: length of a feature window (default 1 s). A segment of
      continuous samples shorter than this, ended by a gap, is a window of its own.
    - ``demod_band_hz``: band that envelope analysis demodulates (default
      fs/8 to 0.45 fs: above shaft and fault harmonics, below Nyquist).
    - ``slip_tolerance``: relative band around each defect frequency (default
      2 %, rolling elements slip).
    - ``max_abs_g``: physical range of the accelerometer; a sample beyond it is
      rejected as out of range (default 200 g).
    - ``baseline_windows``: commissioning windows per stream, the asset's own
      baseline for the edge tier (default: the edge model's).
    - ``process_window_samples``: each process window describes the trailing
      mean of this many samples (default 1: every sample as it is). Process
      sensors sampled every second are noisy; a short average trades a few
      seconds of delay for far fewer single-sample flags (SKAB, docs/evaluation.md).
    """

    bearing: BearingGeometry = SKF_6205
    window_s: float = 1.0
    demod_band_hz: tuple[float, float] | None = None
    slip_tolerance: float = 0.02
    max_abs_g: float = 200.0
    baseline_windows: int | None = None
    process_window_samples: int = 1

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")
        if not 0 < self.slip_tolerance < 0.2:
            raise ValueError(f"slip_tolerance must be in (0, 0.2), got {self.slip_tolerance}")
        if self.max_abs_g <= 0:
            raise ValueError(f"max_abs_g must be > 0, got {self.max_abs_g}")
        if self.process_window_samples < 1:
            raise ValueError(f"process_window_samples must be >= 1, got {self.process_window_samples}")
        if self.baseline_windows is not None and self.baseline_windows < 2:
            raise ValueError(f"baseline_windows must be >= 2, got {self.baseline_windows}")
        if self.demod_band_hz is not None and not 0 <= self.demod_band_hz[0] < self.demod_band_hz[1]:
            raise ValueError(f"demod_band_hz must be (low, high) with low < high, got {self.demod_band_hz}")

    @property
    def fault_orders(self) -> FaultOrders:
        return self.bearing.fault_orders()

    def demod_band(self, fs_hz: float) -> tuple[float, float]:
        if self.demod_band_hz is not None:
            lo, hi = self.demod_band_hz
            return lo, min(hi, 0.5 * fs_hz)
        return fs_hz / 8.0, 0.45 * fs_hz


def _config_from_mapping(base: AssetConfig, raw: Mapping[str, Any]) -> AssetConfig:
    known = {f.name for f in fields(AssetConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown asset settings {sorted(unknown)}; known: {sorted(known)}")
    changes: dict[str, Any] = dict(raw)
    if "bearing" in changes:
        bearing = changes["bearing"]
        if isinstance(bearing, str):
            if bearing not in NAMED_BEARINGS:
                raise ValueError(f"unknown bearing {bearing!r}; named bearings: {sorted(NAMED_BEARINGS)}")
            changes["bearing"] = NAMED_BEARINGS[bearing]
        else:
            changes["bearing"] = BearingGeometry(**bearing)
    if changes.get("demod_band_hz") is not None:
        changes["demod_band_hz"] = tuple(changes["demod_band_hz"])
    return replace(base, **changes)


@dataclass
class AssetCatalog:
    defaults: AssetConfig = field(default_factory=AssetConfig)
    exact: dict[str, AssetConfig] = field(default_factory=dict)
    patterns: list[tuple[str, AssetConfig]] = field(default_factory=list)

    def for_asset(self, asset_id: str) -> AssetConfig:
        found = self.exact.get(asset_id)
        if found is not None:
            return found
        for pattern, config in self.patterns:
            if fnmatch.fnmatchcase(asset_id, pattern):
                return config
        return self.defaults

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "AssetCatalog":
        defaults = _config_from_mapping(AssetConfig(), raw.get("defaults", {}))
        catalog = cls(defaults=defaults)
        for key, settings in raw.get("assets", {}).items():
            config = _config_from_mapping(defaults, settings)
            if any(ch in key for ch in "*?["):
                catalog.patterns.append((key, config))
            else:
                catalog.exact[key] = config
        return catalog

    @classmethod
    def load(cls, path: str | Path | None) -> "AssetCatalog":
        if not path:
            return cls()
        return cls.from_mapping(json.loads(Path(path).read_text()))
