"""Readers for data packs in the layout of ``../shared/datasets`` (PRONOSTIA and CWRU npz files).

A pack becomes a time-ordered stream of VibrationChunk-shaped records, one
asset per bearing (PRONOSTIA) or per record (CWRU), timestamps from the pack.
Any pack in the same layout works, including bearings never seen before.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from vigil.models.assets import AssetCatalog

PackKind = Literal["pronostia", "cwru"]
PACK_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)  # packs give times of day or offsets, not dates


@dataclass(frozen=True)
class PackChunk:
    asset_id: str
    seq: int
    ts_ms: int
    fs_hz: float
    rpm: float | None
    channel: str
    samples: np.ndarray  # float32, g (PRONOSTIA) or the source's units (CWRU)

    def as_record(self) -> dict[str, Any]:
        return {
            "asset_id": self.asset_id,
            "seq": self.seq,
            "ts_ms": self.ts_ms,
            "fs_hz": self.fs_hz,
            "rpm": self.rpm,
            "channel": self.channel,
            "samples": self.samples.astype("<f4").tobytes(),
        }


def pack_kind(path: str | Path) -> PackKind:
    with np.load(path) as d:
        keys = set(d.files)
    if {"bearings", "bearing_offsets", "acc_h", "acc_v"} <= keys:
        return "pronostia"
    if {"signal", "offsets", "fault", "rpm"} <= keys:
        return "cwru"
    raise ValueError(f"{path} is neither a PRONOSTIA-layout nor a CWRU-layout pack (keys: {sorted(keys)[:12]})")


def pack_assets(kind: PackKind) -> AssetCatalog:
    """Asset configuration matching a pack: bearing geometry, and for PRONOSTIA's
    0.1 s snapshots a 0.1 s window so each snapshot is scored as soon as it arrives."""
    if kind == "pronostia":
        return AssetCatalog.from_mapping({"defaults": {"bearing": "pronostia", "window_s": 0.1}})
    return AssetCatalog.from_mapping({"defaults": {"bearing": "skf6205", "window_s": 1.0}})


def _start_ms(t0_clock: str) -> int:
    h, m, s = t0_clock.split(":")
    seconds = int(h) * 3600 + int(m) * 60 + float(s)
    return int(PACK_EPOCH.timestamp() * 1000 + round(seconds * 1000))


def iter_pronostia(path: str | Path, bearings: list[str] | None = None) -> Iterator[PackChunk]:
    """Every snapshot of every bearing, both channels (h, v), merged in event-time order."""
    d = np.load(path)
    names = [str(b) for b in d["bearings"]]
    wanted = names if bearings is None else bearings
    unknown = set(wanted) - set(names)
    if unknown:
        raise ValueError(f"bearings {sorted(unknown)} are not in {path} (it has {names})")
    fs = float(d["fs_hz"])
    offsets = d["bearing_offsets"]
    t_s, rpms, clocks = d["t_s"], d["rpm"], d["t0_clock"]
    channels = (("h", d["acc_h"], d["scale_h"]), ("v", d["acc_v"], d["scale_v"]))  # each npz access re-reads: load once

    def one(b: int) -> Iterator[tuple[int, int, PackChunk]]:
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        start = _start_ms(str(clocks[b]))
        rpm = float(rpms[b])
        t_ms = np.round(t_s[lo:hi] * 1000.0).astype(np.int64) + start
        for j in range(hi - lo):
            row = lo + j
            for c, (channel, acc, scale) in enumerate(channels):
                x = acc[row].astype(np.float32) * np.float32(scale[row])
                yield int(t_ms[j]), b, PackChunk(names[b], 2 * j + c, int(t_ms[j]), fs, rpm, channel, x)

    merged = heapq.merge(*(one(names.index(name)) for name in wanted), key=lambda item: (item[0], item[1], item[2].seq))
    for _, _, chunk in merged:
        yield chunk


def iter_cwru(path: str | Path, chunk_s: float = 1.0) -> Iterator[PackChunk]:
    """Each record as its own asset (``cwru-<file id>``), cut into continuous chunks of ``chunk_s``."""
    d = np.load(path)
    fs = float(d["fs_hz"])
    start = int(PACK_EPOCH.timestamp() * 1000)
    n_chunk = int(round(chunk_s * fs))
    signal, offsets, file_ids, rpms = d["signal"], d["offsets"], d["file_id"], d["rpm"]
    for i in range(len(file_ids)):
        x = signal[offsets[i] : offsets[i + 1]].astype(np.float32)
        asset = f"cwru-{file_ids[i]}"
        for seq, lo in enumerate(range(0, len(x), n_chunk)):
            yield PackChunk(asset, seq, start + int(round(lo / fs * 1000.0)), fs, float(rpms[i]), "de", x[lo : lo + n_chunk])


def iter_pack(path: str | Path) -> Iterator[PackChunk]:
    kind = pack_kind(path)
    return iter_pronostia(path) if kind == "pronostia" else iter_cwru(path)


@dataclass(frozen=True)
class RunToFailureRecord:
    """One bearing's snapshots for a PRONOSTIA-layout pack: (snapshots, samples) g per channel."""

    name: str
    acc_h: np.ndarray
    acc_v: np.ndarray
    t_s: np.ndarray  # seconds since the record's first snapshot
    rpm: float
    load_n: float = 0.0
    t0_clock: str = "00:00:00.000"


def write_pronostia_layout(path: str | Path, records: list[RunToFailureRecord], fs_hz: int, provenance: str) -> None:
    """Write records as a pack in the PRONOSTIA layout (see ../shared/datasets/README.md), int16 with per-snapshot scales."""
    def quantise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = np.maximum(np.abs(x).max(axis=1) / 32767.0, 1e-6)
        return np.round(x / scale[:, None]).astype(np.int16), scale

    h, sh = zip(*(quantise(np.asarray(r.acc_h, dtype=np.float64)) for r in records))
    v, sv = zip(*(quantise(np.asarray(r.acc_v, dtype=np.float64)) for r in records))
    counts = [len(r.t_s) for r in records]
    np.savez(
        path,
        bearings=np.array([r.name for r in records]),
        bearing_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        condition=np.zeros(len(records), dtype=np.int8),
        rpm=np.array([r.rpm for r in records], dtype=np.int16),
        load_n=np.array([r.load_n for r in records], dtype=np.int16),
        t0_clock=np.array([r.t0_clock for r in records]),
        snapshot_bearing=np.repeat(np.arange(len(records)), counts).astype(np.int8),
        file_index=np.concatenate([np.arange(1, c + 1) for c in counts]).astype(np.int32),
        t_s=np.concatenate([r.t_s for r in records]).astype(np.float64),
        t_flag=np.zeros(sum(counts), dtype=np.int8),
        fs_hz=np.int32(fs_hz),
        snapshot_period_s=np.float64(np.median(np.diff(records[0].t_s)) if counts[0] > 1 else 0.0),
        acc_h=np.vstack(h), scale_h=np.concatenate(sh), acc_v=np.vstack(v), scale_v=np.concatenate(sv),
        provenance=np.array(provenance),
    )
