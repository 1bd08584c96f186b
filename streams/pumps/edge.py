"""Stage pump.features -> pump.scores.edge: per-asset commissioning baseline, then Isolation Forest scores.

The first ``baseline_windows`` windows of each (asset, stream) are its
commissioning baseline; they are published as COMMISSIONING, unscored.
Afterwards every window is scored; all windows of a batch that share a
feature set are scored in one call.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from vigil.models.assets import AssetCatalog
from vigil.models.edge import Baseline, EdgeModel, deviations
from vigil.models.registry import EDGE_TIER
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.serving import ModelServingStage, ServingModel, ServingSet
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.validation import unsupported_feature_set

SCHEMA = "vigil.pumps.FeatureWindow"


def state_key(asset_id: str, stream: str) -> str:
    return f"{asset_id}|{stream}"


@dataclass
class EdgeStreamState:
    """Per (asset, stream): last scored seq, and the baseline (rows while commissioning)."""

    last_seq: int = -1
    feature_set: str = ""
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    center: np.ndarray | None = None
    scale: np.ndarray | None = None

    @property
    def commissioned(self) -> bool:
        return self.center is not None

    def to_bytes(self) -> bytes:
        arrays = {"rows": self.rows}
        if self.center is not None and self.scale is not None:
            arrays |= {"center": self.center, "scale": self.scale}
        return pack_state({"last_seq": self.last_seq, "feature_set": self.feature_set}, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> "EdgeStreamState":
        header, arrays = unpack_state(data)
        return cls(rows=arrays["rows"], center=arrays.get("center"), scale=arrays.get("scale"), **header)


class EdgeStage(ModelServingStage[EdgeModel]):
    source_topic = "pump.features"
    tier = EDGE_TIER
    shadow_topic = "pump.scores.edge.shadow"

    def __init__(self, codec: AvroCodec, model: EdgeModel, model_version: str, assets: AssetCatalog | None = None) -> None:
        self.codec = codec
        self.models = ServingSet(ServingModel(model, model_version))
        self.assets = assets or AssetCatalog()

    def baseline_windows(self, asset_id: str, model: EdgeModel | None = None) -> int:
        return self.assets.for_asset(asset_id).baseline_windows or (model or self.model).baseline_windows

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, EdgeStreamState]) -> StageResult[EdgeStreamState]:
        result: StageResult[EdgeStreamState] = StageResult()
        models = self.models  # one set of models for the whole batch, whatever swaps meanwhile
        # (output index, feature vector, baseline) per serving version and feature set, scored together after the loop
        to_score: dict[tuple[str, str], list[tuple[int, np.ndarray, Baseline]]] = defaultdict(list)
        by_version = {}
        for message in messages:
            record = result.decode(self.codec, message, SCHEMA)
            if record is None:
                continue
            serving = models.for_asset(record["asset_id"])
            model, model_version = serving.model, serving.version
            by_version[model_version] = model
            feature_set = model.for_feature_set(record["feature_set"])
            if feature_set is None:
                result.reject(message, unsupported_feature_set("edge", model_version, model.feature_sets, record))
                continue
            key = state_key(record["asset_id"], record["stream"])
            stream = result.pending_state(key, state) or EdgeStreamState(feature_set=record["feature_set"])
            if not result.admit(record["seq"], stream.last_seq):
                continue
            x = np.array([record["features"].get(name, np.nan) for name in feature_set.feature_names], dtype=np.float64)
            stream.last_seq = record["seq"]
            result.update_state(key, stream, message.partition)
            output = {
                "asset_id": record["asset_id"],
                "stream": record["stream"],
                "seq": record["seq"],
                "ts_ms": record["ts_ms"],
                "state": "COMMISSIONING",
                "score": None,
                "flagged": False,
                "threshold": feature_set.scorer.threshold_,
                "model_version": model_version,
                "baseline_windows": 0,
                "feature_set": record["feature_set"],
                "deviations": {},
                "features": {name: value for name, value in record["features"].items() if np.isfinite(value)},
            }
            n_base = self.baseline_windows(record["asset_id"], model)
            if not stream.commissioned:
                rows = stream.rows if stream.rows.size else np.zeros((0, len(x)))
                stream.rows = np.vstack([rows, x[None, :]])
                output["baseline_windows"] = len(stream.rows)
                if len(stream.rows) >= n_base:
                    baseline = feature_set.fit_baseline(stream.rows)
                    stream.center, stream.scale = baseline.center, baseline.scale
                    stream.rows = np.zeros((0, 0))
            else:
                output["state"] = "SCORED"
                output["baseline_windows"] = n_base
                to_score[(model_version, record["feature_set"])].append((len(result.outputs), x, Baseline(stream.center, stream.scale)))
            result.emit(output, float(record["ts_ms"]) + 1000.0 * record["duration_s"])

        served = len(result.outputs)
        shadow = models.shadow if self.shadow_topic else None
        if shadow is not None:  # the same windows, as they would have been scored by the shadow
            for i in range(served):
                result.emit(_as_scored_by(result.outputs[i], shadow.model, shadow.version), result.event_end_ms[i], self.shadow_topic)
        for (version, name), items in to_score.items():
            started = time.perf_counter()
            X = np.vstack([x for _, x, _ in items])
            center = np.vstack([b.center for _, _, b in items])
            scale = np.vstack([b.scale for _, _, b in items])
            flagged = _score_into(result.outputs, [i for i, _, _ in items], by_version[version].feature_sets[name], X, center, scale)
            result.flagged[name] = result.flagged.get(name, 0) + flagged
            shadow_set = shadow.model.for_feature_set(name) if shadow is not None else None
            if shadow_set is not None:
                _score_into(result.outputs, [served + i for i, _, _ in items], shadow_set, X, center, scale)
            result.timed(self.tier, started)
        return result


def _as_scored_by(output: dict, model: EdgeModel, version: str) -> dict:
    """A copy of an edge output for another model, unscored until ``_score_into`` fills it in."""
    feature_set = model.for_feature_set(output["feature_set"])
    threshold = feature_set.scorer.threshold_ if feature_set is not None else float("nan")
    return {**output, "score": None, "flagged": False, "model_version": version, "threshold": threshold, "deviations": {}}


def _score_into(outputs: list[dict], indexes: list[int], fs_model: Any, X: np.ndarray, center: np.ndarray, scale: np.ndarray) -> int:
    """Scores the rows of X with one feature set's model into ``outputs[indexes]``; returns how many it flagged."""
    Z = deviations(X, center, scale, fs_model.log_mask)
    scores = fs_model.score_many(Z)
    threshold = fs_model.scorer.threshold_
    for i, score, z in zip(indexes, scores.tolist(), Z):
        out = outputs[i]
        out["score"] = score
        out["flagged"] = score >= threshold
        out["deviations"] = dict(zip(fs_model.feature_names, np.round(z, 3).tolist()))
    return int(np.count_nonzero(scores >= threshold))
