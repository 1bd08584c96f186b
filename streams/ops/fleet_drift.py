"""Stage ops.drift.windows -> ops.drift: drift of the whole fleet, from the pumps' binned windows.

Each pump's drift stage publishes its closed windows as counts on the
one-partition ``ops.drift.windows``; this stage sums them per window length,
feature set, edge version and start, and judges the sum against the version's
reference with the same rules and hysteresis as a pump's. A fleet window
closes once summaries a whole window later have arrived (pumps close their
windows at their own pace); a summary for a closed window is counted as late.
The finding names the features and the pumps whose own windows drifted.

Training has no cloud verdicts to speak of, so the fleet's cloud confirmation
rate (confirmed / flagged windows the cloud tier scored) is judged against the
fleet's own first ``reference_s`` (a day) of closed windows, per window length,
feature set and edge version, once that period holds at least
``DriftReferences.min_cloud_reference`` cloud verdicts: the binomial rule a
pump's own rate is judged with. A rate that halves means the edge flags what
the cloud no longer confirms (or the cloud model stopped confirming); one that
rises by half, that the flagged windows look more like faults.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from vigil.models.drift import DriftThresholds
from vigil.streams.ops.drift import advance_episode, finding_record
from vigil.streams.ops.references import DriftReferences, FeatureSetReference, judge_counts
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.topics import FLEET_KEY

WINDOW_SCHEMA = "vigil.ops.DriftWindow"


@dataclasses.dataclass
class FleetWindow:
    window: str
    feature_set: str
    model_version: str
    start_ms: int
    end_ms: int
    features: list[str]
    feature_counts: np.ndarray
    score_counts: np.ndarray
    windows: int = 0
    flagged: int = 0
    cloud_scored: int = 0
    cloud_confirmed: int = 0
    assets: list[str] = dataclasses.field(default_factory=list)
    drifted_assets: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # pump -> its drifted features
    # pump -> its drifted predictions (edge_score, flag_rate) against the training reference
    prediction_assets: dict[str, list[str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FleetDriftState:
    watermark_ms: dict[str, int] = dataclasses.field(default_factory=dict)  # window|feature set -> newest end seen
    late: int = 0
    windows: dict[str, FleetWindow] = dataclasses.field(default_factory=dict)
    episodes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # feature set -> feature -> KL of the latest closed short window (the vigil_drift_kl gauge)
    last_kl: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    # window|feature set|edge version -> the fleet's own confirmation reference: start_ms, cloud_scored, cloud_confirmed
    confirm_reference: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def to_bytes(self) -> bytes:
        fields = [[k, w.window, w.feature_set, w.model_version, w.start_ms, w.end_ms, w.features, w.windows, w.flagged,
                   w.cloud_scored, w.cloud_confirmed, w.assets, w.drifted_assets, w.prediction_assets] for k, w in self.windows.items()]
        arrays = {}
        for i, w in enumerate(self.windows.values()):
            arrays[f"f{i}"], arrays[f"s{i}"] = w.feature_counts, w.score_counts
        return pack_state({"watermark_ms": self.watermark_ms, "late": self.late, "windows": fields, "episodes": self.episodes,
                           "last_kl": self.last_kl, "confirm_reference": self.confirm_reference}, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> "FleetDriftState":
        header, arrays = unpack_state(data)
        windows = {}
        for i, (key, label, fs, version, start, end, features, n, flagged, scored, confirmed, assets, drifted,
                predicted) in enumerate(header["windows"]):
            windows[key] = FleetWindow(label, fs, version, start, end, features, arrays[f"f{i}"], arrays[f"s{i}"], n, flagged,
                                       scored, confirmed, assets, drifted, predicted)
        # confirm_reference is absent from state written before the fleet's confirmation rate was judged
        return cls(header["watermark_ms"], header["late"], windows, header["episodes"], header["last_kl"],
                   header.get("confirm_reference", {}))


class FleetDriftStage:
    def __init__(self, codec: AvroCodec, references: DriftReferences, *, thresholds: DriftThresholds = DriftThresholds(),
                 open_after: int = 2, close_after: int = 3, short_window: str = "1h", reference_s: float = 86400.0) -> None:
        self.codec, self.references, self.thresholds = codec, references, thresholds
        self.open_after, self.close_after, self.short_window = open_after, close_after, short_window
        self.reference_ms = int(reference_s * 1000)  # 0: the fleet's confirmation rate is not judged

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, FleetDriftState]) -> StageResult[FleetDriftState]:
        result: StageResult[FleetDriftState] = StageResult()
        fleet: FleetDriftState | None = None
        for message in messages:
            record = result.decode(self.codec, message, WINDOW_SCHEMA)
            if record is None:
                continue
            if fleet is None:
                fleet = result.pending_state(FLEET_KEY, state) or FleetDriftState()
                result.update_state(FLEET_KEY, fleet, message.partition)
            self._add(fleet, record)
        if fleet is not None:
            self._close_due(result, fleet)
        return result

    def _add(self, fleet: FleetDriftState, record: Mapping[str, Any]) -> None:
        stream = f"{record['window']}|{record['feature_set']}"
        length_ms = record["end_ms"] - record["start_ms"]
        if record["end_ms"] + length_ms <= fleet.watermark_ms.get(stream, 0) and \
                f"{stream}|{record['model_version']}|{record['start_ms']}" not in fleet.windows:
            fleet.late += 1
            return
        fleet.watermark_ms[stream] = max(fleet.watermark_ms.get(stream, 0), record["end_ms"])
        key = f"{stream}|{record['model_version']}|{record['start_ms']}"
        window = fleet.windows.get(key)
        names = sorted(record["feature_counts"])
        if window is None:
            bins = len(next(iter(record["feature_counts"].values()), [])) or len(self.references.bin_edges) - 1
            window = fleet.windows[key] = FleetWindow(
                record["window"], record["feature_set"], record["model_version"], record["start_ms"], record["end_ms"], names,
                np.zeros((len(names), bins), np.int64), np.zeros(len(record["score_counts"]), np.int64))
        if record["asset_id"] in window.assets:
            return  # a replayed summary
        counts = np.array([record["feature_counts"].get(n, [0] * window.feature_counts.shape[1]) for n in window.features], np.int64)
        window.feature_counts += counts
        window.score_counts += np.asarray(record["score_counts"], np.int64)
        window.windows += record["windows"]
        window.flagged += record["flagged"]
        window.cloud_scored += record["cloud_scored"]
        window.cloud_confirmed += record["cloud_confirmed"]
        window.assets.append(record["asset_id"])
        verdicts = judge_counts(window.features, counts, np.asarray(record["score_counts"]), record["windows"], record["flagged"],
                                self.references.get(record["model_version"], record["feature_set"]), self.thresholds)
        for kind, named in (("feature", window.drifted_assets), ("prediction", window.prediction_assets)):
            drifted = [f.feature for f in verdicts[kind][0] if f.drifted]
            if drifted:
                named[record["asset_id"]] = drifted

    def _close_due(self, result: StageResult[FleetDriftState], fleet: FleetDriftState) -> None:
        due = sorted((w for w in fleet.windows.values()
                      if w.end_ms + (w.end_ms - w.start_ms) <= fleet.watermark_ms.get(f"{w.window}|{w.feature_set}", 0)),
                     key=lambda w: (w.end_ms, w.window, w.feature_set))
        for window in due:
            del fleet.windows[f"{window.window}|{window.feature_set}|{window.model_version}|{window.start_ms}"]
            verdicts = judge_counts(window.features, window.feature_counts, window.score_counts, window.windows, window.flagged,
                                    self._reference(fleet, window), self.thresholds, cloud=(window.cloud_scored, window.cloud_confirmed))
            if window.window == self.short_window:
                fleet.last_kl[window.feature_set] = {f.feature: round(float(f.kl), 6) for f in verdicts["feature"][0]}
            for kind, (judged, unreferenced) in verdicts.items():
                key = f"{kind}|{window.feature_set}|{window.window}"
                stepped = advance_episode(fleet.episodes, key, judged, window.end_ms, self.open_after, self.close_after)
                if stepped is None:
                    continue
                change, named, opened_ms = stepped
                open_features = {f.feature for f in named} if change != "CLOSE" else set()
                by_asset = window.drifted_assets if kind == "feature" else window.prediction_assets
                assets = sorted(a for a, named_here in by_asset.items() if set(named_here) & open_features)
                result.emit(finding_record(
                    scope="fleet", asset_id=FLEET_KEY, kind=kind, feature_set=window.feature_set,
                    model_version=window.model_version, window=window.window, state=change, opened_ts_ms=opened_ms,
                    start_ms=window.start_ms, end_ms=window.end_ms, assets=assets, features=named, unreferenced=unreferenced),
                    float(window.end_ms))

    def _reference(self, fleet: FleetDriftState, window: FleetWindow) -> FeatureSetReference | None:
        """The version's training reference, with the fleet's own confirmation rate once its reference period is over and
        the window starts after it; a window within the period adds its cloud verdicts to it."""
        training = self.references.get(window.model_version, window.feature_set)
        if self.reference_ms <= 0:
            return training
        key = f"{window.window}|{window.feature_set}|{window.model_version}"
        own = fleet.confirm_reference.setdefault(key, {"start_ms": window.start_ms, "cloud_scored": 0, "cloud_confirmed": 0})
        if window.end_ms <= own["start_ms"] + self.reference_ms:
            own["cloud_scored"] += window.cloud_scored
            own["cloud_confirmed"] += window.cloud_confirmed
            return training
        rate = self.references.own_confirm_rate(own["cloud_confirmed"], own["cloud_scored"])
        if training is None or window.start_ms < own["start_ms"] + self.reference_ms or rate is None:
            return training
        return dataclasses.replace(training, confirm_rate=rate)
