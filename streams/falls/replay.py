"""Wearers for `vigil produce falls` and the demo: trials replayed as ImuChunk streams, ADL and falls interleaved.

A SisFall-layout pack becomes one wearer per subject, whose trials follow
one another in shuffled order; the synthetic simulator
(``models.wearer_sim``) serves when no pack is given. Trials are separated by
a gap in event time, so the worker starts a new segment for each, exactly as
the offline evaluation screens each trial on its own. The spans returned
with the records say which event times held which trial: the ground truth an
alert is checked against.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from vigil.models.falls import FS_HZ, to_g
from vigil.streams.runtime.topics import WEARABLE_IMU_RAW

SISFALL_RANGE_G = 16.0  # ADXL345 at +-16 g
TRIAL_GAP_S = 5.0  # event time between two trials of a wearer: a new segment for the screen


@dataclass(frozen=True)
class WearerTrial:
    acc_g: np.ndarray  # (n, 3) float32
    is_fall: bool
    activity: str
    source: str  # where it came from: "SA01/F05/3" for a pack trial, "synthetic" for the simulator


@dataclass(frozen=True)
class TrialSpan:
    wearer_id: str
    start_ts_ms: int
    end_ts_ms: int
    is_fall: bool
    activity: str
    source: str

    def holds(self, ts_ms: float) -> bool:
        return self.start_ts_ms <= ts_ms < self.end_ts_ms


def pack_wearers(path: str | Path, subjects: Iterable[str] | None = None, max_trials: int | None = None,
                 seed: int = 0) -> tuple[dict[str, list[WearerTrial]], float]:
    """One wearer per subject of a SisFall-layout pack (or of ``subjects``), trials shuffled; and the pack's rate."""
    rng = np.random.default_rng(seed)
    with np.load(path) as d:
        offsets, fs = d["trial_offsets"], float(d["fs_hz"])
        acc = to_g(d["acc"], float(d["count_to_g"]))
        subject, activity, is_fall = d["subject"].astype(str), d["activity"].astype(str), d["is_fall"].astype(bool)
    wanted = sorted(set(subject.tolist()) if subjects is None else set(subjects))
    unknown = sorted(set(wanted) - set(subject.tolist()))
    if unknown:
        raise ValueError(f"{path} has no subjects {unknown}")
    wearers: dict[str, list[WearerTrial]] = {}
    for s in wanted:
        trials = np.flatnonzero(subject == s)
        trials = rng.permutation(trials)[:max_trials]
        wearers[s] = [WearerTrial(acc[offsets[t]:offsets[t + 1]], bool(is_fall[t]), str(activity[t]), f"{s}/{activity[t]}/{t}")
                      for t in trials]
    return wearers, fs


def simulated_wearers(wearers: int, trials_per_wearer: int, fall_fraction: float = 0.25, seed: int = 0) -> dict[str, list[WearerTrial]]:
    """SYNTHETIC wearers from ``models.wearer_sim``: for demos and tests without a dataset."""
    from vigil.models.wearer_sim import simulate_trials

    out = {}
    for w in range(wearers):
        falls = int(round(trials_per_wearer * fall_fraction))
        trials = simulate_trials(falls, trials_per_wearer - falls, seed=seed * 1000 + w)
        out[f"wearer-{w:03d}"] = [WearerTrial(t.acc_g, t.is_fall, t.activity, "synthetic") for t in trials]
    return out


def wearer_records(wearer_id: str, trials: list[WearerTrial], start_ms: int, *, fs_hz: float = FS_HZ, chunk_s: float = 1.0,
                   range_g: float = SISFALL_RANGE_G, gap_s: float = TRIAL_GAP_S, first_seq: int = 0) -> tuple[list[dict[str, Any]], list[TrialSpan]]:
    """ImuChunk records of one wearer's trials back to back (``gap_s`` apart), and each trial's span."""
    records, spans = [], []
    seq, ts = first_seq, float(start_ms)
    step = max(1, int(round(chunk_s * fs_hz)))
    for trial in trials:
        n = len(trial.acc_g)
        for i in range(0, n, step):
            chunk = np.ascontiguousarray(trial.acc_g[i:i + step], dtype="<f4")
            records.append({"wearer_id": wearer_id, "seq": seq, "ts": int(round(ts + i * 1000.0 / fs_hz)), "fs_hz": fs_hz,
                            "range_g": range_g, "xyz": chunk.tobytes()})
            seq += 1
        end = ts + n * 1000.0 / fs_hz
        spans.append(TrialSpan(wearer_id, int(round(ts)), int(round(end)), trial.is_fall, trial.activity, trial.source))
        ts = end + gap_s * 1000.0
    return records, spans


def interleave(per_wearer: Iterable[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """All wearers' records in event-time order (each wearer's own order kept)."""
    return heapq.merge(*per_wearer, key=lambda r: r["ts"])


def publish_wearers(producer: Any, wearers: dict[str, list[WearerTrial]], *, fs_hz: float = FS_HZ, start_ms: int | None = None,
                    speed: float = 0.0, rate_per_s: float = 0.0, should_stop: Callable[[], bool] | None = None,
                    on_sent: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Publish every wearer's trials as ImuChunks; ``speed`` paces by event time (1 = real time), ``rate_per_s``
    by records (0 and 0: as fast as possible). Returns counts and the spans (ground truth) of the published trials.

    Event time starts at ``start_ms`` (now). A run faster than real time puts its wearers' event time ahead of
    the clock; running again for the same wearers before the clock has caught up makes their new chunks
    dead letters (``timestamp_backwards``), as it would for a device whose clock jumped back.
    """
    from vigil.streams.devtools.producer import Pacer

    start_ms = int(time.time() * 1000) if start_ms is None else start_ms
    streams, spans = [], []
    for wearer_id, trials in wearers.items():
        # Sequence numbers continue across runs (a later run starts at a later ms), so a rerun is not taken for a replay.
        records, wearer_spans = wearer_records(wearer_id, trials, start_ms, fs_hz=fs_hz, first_seq=start_ms * 1000)
        streams.append(records)
        spans += wearer_spans
    pacer, started = Pacer(rate_per_s), time.monotonic()
    sent = 0
    last_ts = start_ms
    for record in interleave(streams):
        if should_stop is not None and should_stop():
            break
        if speed > 0:
            ahead = (record["ts"] - start_ms) / 1000.0 / speed - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.send_record(WEARABLE_IMU_RAW, record["wearer_id"], record)
        sent += 1
        last_ts = record["ts"]
        if on_sent is not None:
            on_sent(record)
        pacer.wait(sent)
    producer.flush()
    published = [s for s in spans if s.start_ts_ms <= last_ts]
    return {"records": sent, "wearers": len(wearers), "trials": len(published), "falls": sum(s.is_fall for s in published),
            "adl": sum(not s.is_fall for s in published), "spans": published}
