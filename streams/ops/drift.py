"""Stage pump.scores.cloud -> ops.drift, ops.drift.windows: feature and prediction drift of each pump.

Every scored window reaches ``pump.scores.cloud`` (flagged or not) with its
deviations (robust z against the pump's own baseline), its edge score and
threshold, and the versions that scored it. The stage bins them per pump,
feature set, edge model version and event-time window (hourly and daily by
default) in the bins of the reference histograms the model was trained with,
so no sample is kept. When a window closes (the pump's newest event is
``grace`` past its end) it is judged (``vigil.models.drift``): per feature
(PSI, KL, a test suited to the sample size), and for the predictions (edge
scores in threshold units, flag rate, the cloud tier's confirmation rate). Each feature has its own hysteresis;
the pump's finding is open while any feature's is, and names those features.

A pump is judged against its own first ``reference_s`` (a day) of scored
windows under that edge version: the model's training reference pools a
fleet, and a steady pump's deviations sit narrower than the pool's for as long
as it runs (measured in the demo: 40 of 50 healthy pumps "drifted" on
motor_temp_c against the pooled reference, 0 against their own first day). The
fleet, the sum of every pump's closed windows on ``ops.drift.windows``, is
judged against the training reference (``fleet_drift``): that is what the
model learned. A version without a reference, or features the reference lacks,
are reported as unreferenced, never judged as drift.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Sequence

import numpy as np

from vigil.models.drift import DriftEpisode, DriftThresholds, FeatureDrift, bin_counts
from vigil.streams.ops.references import DriftReferences, FeatureSetReference, judge_counts, window_label
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.topics import FLEET_KEY, OPS_DRIFT, OPS_DRIFT_WINDOWS

logger = logging.getLogger(__name__)

CLOUD_SCHEMA = "vigil.pumps.CloudScore"
PREDICTION_FEATURES = ("edge_score", "flag_rate")


@dataclasses.dataclass
class WindowCounts:
    """Binned deviations and verdicts of one (window length, feature set, edge version, start) of a pump."""

    length_s: float
    feature_set: str
    model_version: str
    start_ms: int
    features: list[str]
    feature_counts: np.ndarray  # (features, bins) int64
    nonfinite: np.ndarray  # (features,) int64
    score_counts: np.ndarray  # (score bins,) int64
    # Per feature: sum x, sum x^2, sum x_t * x_t-1, pairs; and the last value seen, for the lag-1 autocorrelation.
    moments: np.ndarray | None = None  # (features, 4) float64
    last: np.ndarray | None = None  # (features,) float64, NaN: none yet
    windows: int = 0
    flagged: int = 0
    cloud_scored: int = 0
    cloud_confirmed: int = 0

    def __post_init__(self) -> None:
        k = len(self.features)
        self.moments = np.zeros((k, 4)) if self.moments is None else self.moments
        self.last = np.full(k, np.nan) if self.last is None else self.last

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.length_s * 1000)

    def add_moments(self, x: np.ndarray) -> None:
        """Accumulates the window's deviations (rows in event order) for ``effective_fraction``."""
        finite = np.isfinite(x)
        z = np.where(finite, x, 0.0)
        self.moments[:, 0] += z.sum(axis=0)
        self.moments[:, 1] += (z * z).sum(axis=0)
        previous = np.vstack([self.last[None, :], x])
        both = np.isfinite(previous[1:]) & np.isfinite(previous[:-1])
        self.moments[:, 2] += np.where(both, np.nan_to_num(previous[1:]) * np.nan_to_num(previous[:-1]), 0.0).sum(axis=0)
        self.moments[:, 3] += both.sum(axis=0)
        seen = finite.any(axis=0)
        last_rows = np.where(seen, x.shape[0] - 1 - np.argmax(finite[::-1], axis=0), 0)
        self.last = np.where(seen, x[last_rows, np.arange(x.shape[1])], self.last)

    def effective_fraction(self) -> np.ndarray:
        """Per feature n_eff / n = (1 - rho) / (1 + rho), rho the lag-1 autocorrelation (clipped to [0, 0.99999]).

        A slowly wandering feature (a motor temperature with a day-long time constant) gives a window of
        nearly the same value many times: as evidence it is worth a few samples, not its count.
        """
        n = np.maximum(self.feature_counts.sum(axis=1), 1)
        mean = self.moments[:, 0] / n
        var = self.moments[:, 1] / n - mean ** 2
        pairs = np.maximum(self.moments[:, 3], 1)
        rho = np.where((var > 1e-12) & (self.moments[:, 3] >= 2), (self.moments[:, 2] / pairs - mean ** 2) / np.maximum(var, 1e-12), 0.0)
        rho = np.clip(rho, 0.0, 0.99999)
        return (1.0 - rho) / (1.0 + rho)

    @property
    def key(self) -> str:
        return f"{window_label(self.length_s)}|{self.feature_set}|{self.model_version}|{self.start_ms}"


@dataclasses.dataclass
class DriftAssetState:
    last_seq: dict[str, int] = dataclasses.field(default_factory=dict)  # per stream
    # Newest event time per feature set: a pump's process samples may trail its vibration windows.
    watermark_ms: dict[str, int] = dataclasses.field(default_factory=dict)
    late: int = 0  # verdicts whose windows had closed when they arrived
    windows: dict[str, WindowCounts] = dataclasses.field(default_factory=dict)
    # episode key (kind|feature_set|window label) -> {"features": {name: DriftEpisode dict}, "opened_ts_ms": ...}
    episodes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # feature set -> the pump's own reference period: {"start_ms", "version", "features", "counts", "scores",
    # "windows", "flagged", "complete"} (counts as nested lists: a few hundred integers)
    own: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def to_bytes(self) -> bytes:
        header = {
            "last_seq": self.last_seq, "watermark_ms": self.watermark_ms, "late": self.late, "episodes": self.episodes, "own": self.own,
            "windows": [[k, w.length_s, w.feature_set, w.model_version, w.start_ms, w.features,
                         w.windows, w.flagged, w.cloud_scored, w.cloud_confirmed] for k, w in self.windows.items()],
        }
        arrays = {}
        for i, w in enumerate(self.windows.values()):
            arrays[f"f{i}"], arrays[f"n{i}"], arrays[f"s{i}"] = w.feature_counts, w.nonfinite, w.score_counts
            arrays[f"m{i}"], arrays[f"l{i}"] = w.moments, w.last
        return pack_state(header, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> "DriftAssetState":
        header, arrays = unpack_state(data)
        windows = {}
        for i, (key, length_s, fs, version, start_ms, features, n, flagged, scored, confirmed) in enumerate(header["windows"]):
            windows[key] = WindowCounts(length_s, fs, version, start_ms, features, arrays[f"f{i}"], arrays[f"n{i}"], arrays[f"s{i}"],
                                        arrays[f"m{i}"], arrays[f"l{i}"], n, flagged, scored, confirmed)
        return cls(header["last_seq"], header["watermark_ms"], header["late"], windows, header["episodes"], header["own"])

    def open_findings(self) -> dict[str, list[str]]:
        """Episode key -> the features whose episodes are open now."""
        return {key: sorted(f for f, e in episode["features"].items() if e["is_open"])
                for key, episode in self.episodes.items() if any(e["is_open"] for e in episode["features"].values())}


def finding_record(*, scope: str, asset_id: str, kind: str, feature_set: str, model_version: str, window: str, state: str,
                   opened_ts_ms: int, start_ms: int, end_ms: int, assets: Sequence[str], features: Sequence[FeatureDrift],
                   unreferenced: Sequence[str]) -> dict[str, Any]:
    """A DriftFinding record (schemas/ops/DriftFinding.v1.avsc); its id is fixed by where the episode opened."""
    return {
        "finding_id": f"drift:{scope}:{asset_id}:{kind}:{feature_set}:{window}:{opened_ts_ms}",
        "scope": scope, "asset_id": asset_id, "kind": kind, "feature_set": feature_set, "model_version": model_version,
        "window": window, "state": state, "opened_ts_ms": int(opened_ts_ms),
        "window_start_ms": int(start_ms), "window_end_ms": int(end_ms), "assets": sorted(assets),
        "features": [{"feature": f.feature, "n": int(f.n), "psi": float(f.psi), "kl": float(f.kl), "js": float(f.js),
                      "test": f.test, "p_value": None if f.p_value is None else float(f.p_value), "drifted": bool(f.drifted)}
                     for f in features],
        "unreferenced": sorted(unreferenced),
    }


def step_episodes(episode: dict[str, Any], judged: Sequence[FeatureDrift], end_ms: int, open_after: int,
                  close_after: int) -> tuple[str | None, list[str]]:
    """Steps each judged feature's hysteresis; returns the finding's change (OPEN, UPDATE, CLOSE or None) and the open features.

    Features not judged in this window (too few samples) keep their state: no
    evidence either way is not a clean window.
    """
    before = sorted(f for f, e in episode["features"].items() if e["is_open"])
    for f in judged:
        tracker = DriftEpisode.from_dict(episode["features"][f.feature]) if f.feature in episode["features"] else \
            DriftEpisode(open_after=open_after, close_after=close_after)
        tracker.step(f.drifted, end_ms)
        episode["features"][f.feature] = tracker.to_dict()
    after = sorted(f for f, e in episode["features"].items() if e["is_open"])
    if after == before:
        return None, after
    if not before:
        return "OPEN", after
    return ("CLOSE" if not after else "UPDATE"), after


def advance_episode(episodes: dict[str, dict[str, Any]], key: str, judged: Sequence[FeatureDrift], end_ms: int, open_after: int,
                    close_after: int) -> tuple[str, list[FeatureDrift], int] | None:
    """Steps the episode ``key`` by one judged window: (OPEN, UPDATE or CLOSE, the statistics to name, opened at), or None.

    An open finding names its open features; a closing one the last window's statistics, all clean.
    """
    episode = episodes.setdefault(key, {"features": {}, "opened_ts_ms": None})
    change, open_features = step_episodes(episode, judged, end_ms, open_after, close_after)
    if change is None:
        return None
    if change == "OPEN":
        episode["opened_ts_ms"] = end_ms
    named = [f for f in judged if f.feature in open_features] if change != "CLOSE" else list(judged)
    return change, named, episode["opened_ts_ms"]


class DriftStage:
    """Bins each pump's scored windows and judges every closed window against the scoring version's reference."""

    def __init__(self, codec: AvroCodec, references: DriftReferences, *, windows_s: Sequence[float] = (3600.0, 86400.0),
                 grace_s: float = 300.0, thresholds: DriftThresholds = DriftThresholds(), open_after: int = 2,
                 close_after: int = 3, reference_s: float = 86400.0) -> None:
        self.codec, self.references = codec, references
        self.reference_ms = int(reference_s * 1000)
        self.windows_s, self.grace_ms = tuple(windows_s), int(grace_s * 1000)
        self.thresholds, self.open_after, self.close_after = thresholds, open_after, close_after

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, DriftAssetState]) -> StageResult[DriftAssetState]:
        result: StageResult[DriftAssetState] = StageResult()
        batches: dict[tuple[str, str, str], list[dict[str, Any]]] = {}  # (asset, feature set, version) -> records
        touched: dict[str, DriftAssetState] = {}
        for message in messages:
            record = result.decode(self.codec, message, CLOUD_SCHEMA)
            if record is None:
                continue
            asset_id = record["asset_id"]
            asset = result.pending_state(asset_id, state) or DriftAssetState()
            result.update_state(asset_id, asset, message.partition)
            touched[asset_id] = asset
            if record["seq"] <= asset.last_seq.get(record["stream"], -1):
                result.duplicates += 1  # a replay; not admit(): commissioning windows never reach this topic, so seq has holes
                continue
            asset.last_seq[record["stream"]] = record["seq"]
            batches.setdefault((asset_id, record["feature_set"], record["edge_model_version"]), []).append(record)
        for (asset_id, feature_set, version), records in batches.items():
            self._bin(touched[asset_id], feature_set, version, records)
        for asset_id, asset in touched.items():
            self._close_due(result, asset_id, asset)
        return result

    def _bin(self, asset: DriftAssetState, feature_set: str, version: str, records: list[dict[str, Any]]) -> None:
        reference = self.references.get(version, feature_set)
        names = reference.features if reference is not None else sorted({n for r in records for n in r["deviations"]})
        ts = np.array([r["ts_ms"] for r in records], dtype=np.int64)
        # Windows that ended a grace before the newest event of earlier batches were closed then.
        closed_before_ms = asset.watermark_ms.get(feature_set, 0) - self.grace_ms
        asset.watermark_ms[feature_set] = max(asset.watermark_ms.get(feature_set, 0), int(ts.max()))
        deviations = np.array([[r["deviations"].get(n, np.nan) for n in names] for r in records], dtype=np.float64)
        ratio = np.array([[r["edge_score"] / r["edge_threshold"] if r["edge_threshold"] else np.nan] for r in records])
        flagged = np.array([r["flagged"] for r in records])
        scored = np.array([r["evaluated"] for r in records])
        confirmed = np.array([r["confirmed"] for r in records])
        score_edges = self.references.score_edges
        self._learn_own(asset, feature_set, version, names, ts, deviations, ratio, flagged, scored, confirmed)
        for length_s in self.windows_s:
            length_ms = int(length_s * 1000)
            starts = ts - ts % length_ms
            for start in np.unique(starts):
                rows = starts == start
                if int(start) + length_ms <= closed_before_ms:
                    asset.late += int(rows.sum())
                    continue
                window = self._window(asset, length_s, feature_set, version, int(start), names)
                window.feature_counts += bin_counts(deviations[rows], self.references.bin_edges)
                window.add_moments(deviations[rows])
                window.nonfinite += np.sum(~np.isfinite(deviations[rows]), axis=0)
                window.score_counts += bin_counts(ratio[rows], score_edges)[0]
                window.windows += int(rows.sum())
                window.flagged += int(flagged[rows].sum())
                window.cloud_scored += int(scored[rows].sum())
                window.cloud_confirmed += int(confirmed[rows].sum())

    def _learn_own(self, asset: DriftAssetState, feature_set: str, version: str, names: list[str], ts: np.ndarray,
                   deviations: np.ndarray, ratio: np.ndarray, flagged: np.ndarray, scored: np.ndarray,
                   confirmed: np.ndarray) -> None:
        """Bins the pump's first ``reference_s`` of scored windows as its own reference.

        Deviations are against the pump's commissioning baseline whatever version scored them, so one reference
        serves every version; its scores and flag rate are those of the version it began with.
        """
        if self.reference_ms <= 0:
            return
        own = asset.own.get(feature_set)
        if own is None:
            bins, score_bins = len(self.references.bin_edges) - 1, len(self.references.score_edges) - 1
            own = asset.own[feature_set] = {
                "start_ms": int(ts.min()), "version": version, "features": list(names), "counts": np.zeros((len(names), bins), np.int64).tolist(),
                "scores": [0] * score_bins, "windows": 0, "flagged": 0, "cloud_scored": 0, "cloud_confirmed": 0, "complete": False}
        if own["complete"] or own["features"] != list(names):
            return
        rows = ts < own["start_ms"] + self.reference_ms
        if version != own["version"]:  # scores of another version: the deviations still count, the scores do not
            ratio = np.full_like(ratio, np.nan)
            flagged, scored, confirmed = np.zeros_like(flagged), np.zeros_like(scored), np.zeros_like(confirmed)
        own["counts"] = (np.asarray(own["counts"], np.int64) + bin_counts(deviations[rows], self.references.bin_edges)).tolist()
        own["scores"] = (np.asarray(own["scores"], np.int64) + bin_counts(ratio[rows], self.references.score_edges)[0]).tolist()
        own["windows"] += int(rows.sum())
        own["flagged"] += int(flagged[rows].sum())
        own["cloud_scored"] = own.get("cloud_scored", 0) + int(scored[rows].sum())
        own["cloud_confirmed"] = own.get("cloud_confirmed", 0) + int(confirmed[rows].sum())
        own["complete"] = bool((~rows).any())

    def _asset_reference(self, asset: DriftAssetState, window: WindowCounts) -> FeatureSetReference | None:
        """What a pump's window is judged against: its own reference period, once complete and before the window
        (None: not judged yet); with ``reference_s`` 0, the model's training reference."""
        if self.reference_ms <= 0:
            return self.references.get(window.model_version, window.feature_set)
        own = asset.own.get(window.feature_set)
        if own is None or not own["complete"] or window.start_ms < own["start_ms"] + self.reference_ms \
                or own["features"] != window.features:
            return None
        counts = np.asarray(own["counts"], np.float64) + 0.5  # half a count per bin: a short reference has empty bins
        scores = np.asarray(own["scores"], np.float64) + 0.5
        same_version = own["version"] == window.model_version  # another version's scores are not comparable
        return FeatureSetReference(
            list(own["features"]), {n: (counts[i] / counts[i].sum()).tolist() for i, n in enumerate(own["features"])},
            (scores / scores.sum()).tolist() if same_version else None,
            (own["flagged"] + 1) / (own["windows"] + 2) if same_version else None,
            self.references.own_confirm_rate(own.get("cloud_confirmed", 0), own.get("cloud_scored", 0)) if same_version else None)

    def _window(self, asset: DriftAssetState, length_s: float, feature_set: str, version: str, start_ms: int,
                names: list[str]) -> WindowCounts:
        key = f"{window_label(length_s)}|{feature_set}|{version}|{start_ms}"
        window = asset.windows.get(key)
        if window is None:
            bins, score_bins = len(self.references.bin_edges) - 1, len(self.references.score_edges) - 1
            window = asset.windows[key] = WindowCounts(
                length_s, feature_set, version, start_ms, list(names), np.zeros((len(names), bins), np.int64),
                np.zeros(len(names), np.int64), np.zeros(score_bins, np.int64))
        return window

    def _close_due(self, result: StageResult[DriftAssetState], asset_id: str, asset: DriftAssetState) -> None:
        due = sorted((w for w in asset.windows.values() if w.end_ms + self.grace_ms <= asset.watermark_ms.get(w.feature_set, 0)),
                     key=lambda w: (w.end_ms, w.length_s, w.feature_set))
        for window in due:
            del asset.windows[window.key]
            result.emit(window_record(asset_id, window, asset.late), float(window.end_ms), OPS_DRIFT_WINDOWS, key=FLEET_KEY)
            reference = self._asset_reference(asset, window)
            if reference is None:
                continue  # the pump's own reference period is not over: nothing to judge against yet
            # Evidence in effective samples: consecutive windows of a slow feature are not independent draws.
            effective = window.feature_counts * window.effective_fraction()[:, None]
            verdicts = judge_counts(window.features, effective, window.score_counts, window.windows, window.flagged,
                                    reference, self.thresholds, cloud=(window.cloud_scored, window.cloud_confirmed))
            for kind, (judged, unreferenced) in verdicts.items():
                key = f"{kind}|{window.feature_set}|{window_label(window.length_s)}"
                stepped = advance_episode(asset.episodes, key, judged, window.end_ms, self.open_after, self.close_after)
                if stepped is None:
                    continue
                change, named, opened_ms = stepped
                result.emit(finding_record(
                    scope="asset", asset_id=asset_id, kind=kind, feature_set=window.feature_set,
                    model_version=window.model_version, window=window_label(window.length_s), state=change,
                    opened_ts_ms=opened_ms, start_ms=window.start_ms, end_ms=window.end_ms, assets=[asset_id],
                    features=named, unreferenced=unreferenced), float(window.end_ms), OPS_DRIFT)


def window_record(asset_id: str, window: WindowCounts, late: int) -> dict[str, Any]:
    """A DriftWindow record (schemas/ops/DriftWindow.v1.avsc), keyed by the fleet so one stage sees them all."""
    return {
        "asset_id": asset_id, "feature_set": window.feature_set, "model_version": window.model_version,
        "window": window_label(window.length_s), "start_ms": window.start_ms, "end_ms": window.end_ms,
        "windows": window.windows, "flagged": window.flagged, "cloud_scored": window.cloud_scored,
        "cloud_confirmed": window.cloud_confirmed,
        "feature_counts": {n: window.feature_counts[i].tolist() for i, n in enumerate(window.features)},
        "nonfinite": {n: int(window.nonfinite[i]) for i, n in enumerate(window.features)},
        "score_counts": window.score_counts.tolist(), "late": late,
    }

