"""Stage pump.scores.edge -> pump.scores.cloud: the LSTM autoencoder confirms or dismisses flagged windows.

Every scored window's deviation vector enters its stream's history (the last
``window`` of them, kept in state), but only windows the edge tier flagged
are scored: the cascade's point is that the expensive tier sees a small
fraction of the traffic. All flagged windows of a batch that share a feature
set are scored in one call, so inference costs one forward pass per batch,
not per window.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from vigil.models.cloud import CloudModel
from vigil.models.registry import CLOUD_TIER
from vigil.streams.pumps.edge import state_key
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.serving import ModelServingStage, ServingModel, ServingSet
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.validation import unsupported_feature_set

SCHEMA = "vigil.pumps.EdgeScore"


@dataclass
class CloudStreamState:
    """Per (asset, stream): last seq seen and the most recent deviation vectors, oldest first."""

    last_seq: int = -1
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def to_bytes(self) -> bytes:
        return pack_state({"last_seq": self.last_seq}, {"history": self.history})

    @classmethod
    def from_bytes(cls, data: bytes) -> "CloudStreamState":
        header, arrays = unpack_state(data)
        return cls(history=arrays["history"], **header)


def tuned_thresholds(model: CloudModel, metadata: Mapping[str, Any]) -> dict[str, float]:
    """A tuned threshold (in the registry metadata, written by `vigil tune`) overrides the training quantile."""
    tuned = metadata.get("thresholds", {})
    return {name: float(tuned.get(name, scorer.threshold_)) for name, scorer in model.feature_sets.items()}


class CloudStage(ModelServingStage[CloudModel]):
    source_topic = "pump.scores.edge"
    tier = CLOUD_TIER
    shadow_topic = "pump.scores.cloud.shadow"

    def __init__(self, codec: AvroCodec, model: CloudModel, model_version: str, thresholds: Mapping[str, float] | None = None) -> None:
        self.codec = codec
        self.models = ServingSet(ServingModel(model, model_version, {"thresholds": dict(thresholds or {})}))

    @property
    def thresholds(self) -> dict[str, float]:
        return tuned_thresholds(self.serving.model, self.serving.metadata)

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, CloudStreamState]) -> StageResult[CloudStreamState]:
        result: StageResult[CloudStreamState] = StageResult()
        models = self.models  # one set of models for the whole batch, whatever swaps meanwhile
        shadow = models.shadow if self.shadow_topic else None
        serving_models = [m for m in (models.active, models.canary, shadow) if m is not None]
        thresholds = {m.version: tuned_thresholds(m.model, m.metadata) for m in serving_models}
        by_version = {m.version: m.model for m in serving_models}
        # Long enough for every model served: a canary or shadow may look further back than the active model.
        keep = max(m.model.window for m in serving_models)
        # (output index, deviation history) per serving version and feature set, scored together after the loop
        to_score: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = defaultdict(list)
        for message in messages:
            record = result.decode(self.codec, message, SCHEMA)
            if record is None:
                continue
            key = state_key(record["asset_id"], record["stream"])
            stream = result.pending_state(key, state) or CloudStreamState()
            if not result.admit(record["seq"], stream.last_seq):
                continue
            stream.last_seq = record["seq"]
            result.update_state(key, stream, message.partition)
            if record["state"] != "SCORED":
                continue
            serving = models.for_asset(record["asset_id"])
            model, model_version = serving.model, serving.version
            scorer = model.for_feature_set(record["feature_set"])
            if scorer is None:
                result.reject(message, unsupported_feature_set("cloud", model_version, model.feature_sets, record))
                continue
            names = scorer.feature_names_
            z = np.array([record["deviations"].get(name, 0.0) for name in names], dtype=np.float64)
            history = stream.history if stream.history.shape[1:] == (len(names),) else np.zeros((0, len(names)))
            stream.history = np.vstack([history, z[None, :]])[-keep:]
            output = {
                "asset_id": record["asset_id"],
                "stream": record["stream"],
                "seq": record["seq"],
                "ts_ms": record["ts_ms"],
                "feature_set": record["feature_set"],
                "edge_score": record["score"],
                "edge_threshold": record["threshold"],
                "flagged": record["flagged"],
                "evaluated": False,
                "cloud_score": None,
                "cloud_threshold": thresholds[model_version][record["feature_set"]],
                "confirmed": False,
                "history_windows": min(len(stream.history), model.window),
                "edge_model_version": record["model_version"],
                "cloud_model_version": model_version,
                "deviations": record["deviations"],
                "features": record.get("features", {}),
            }
            index = result.emit(output, float(record["ts_ms"]))
            if record["flagged"]:
                to_score[(model_version, record["feature_set"])].append((index, stream.history))
            if shadow is not None:  # the same window as the shadow would have judged it
                shadow_output = {**output, "cloud_model_version": shadow.version,
                                 "history_windows": min(len(stream.history), shadow.model.window),
                                 "cloud_threshold": thresholds[shadow.version].get(record["feature_set"], float("nan"))}
                shadow_index = result.emit(shadow_output, float(record["ts_ms"]), self.shadow_topic)
                if record["flagged"] and shadow.model.for_feature_set(record["feature_set"]) is not None:
                    to_score[(shadow.version, record["feature_set"])].append((shadow_index, stream.history))

        for (version, name), items in to_score.items():
            started = time.perf_counter()
            model = by_version[version]
            sequences = [np.vstack([np.zeros((max(0, model.window - len(h)), h.shape[1])), h[-model.window :]]) for _, h in items]
            scores = model.feature_sets[name].score_many(np.stack(sequences))
            result.timed(self.tier, started)
            threshold = thresholds[version][name]
            for (index, _), score in zip(items, scores.tolist()):
                out = result.outputs[index]
                out["evaluated"] = True
                out["cloud_score"] = score
                out["confirmed"] = score >= threshold
                if result.output_topics[index] is None:
                    result.confirmed[name] = result.confirmed.get(name, 0) + int(score >= threshold)
        return result
