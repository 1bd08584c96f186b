"""Stage pump.scores.edge -> pump.scores.cloud: the LSTM autoencoder confirms or dismisses flagged windows.

Every scored window's deviation vector enters its stream's history (the last
``window`` of them, kept in state), but only windows the edge tier flagged
are scored: the cascade's point is that the expensive tier sees a small
fraction of the traffic. All flagged windows of a batch that share a feature
set are scored in one call, so inference costs one forward pass per batch,
not per window.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from vigil.models.cloud import CloudModel
from vigil.streams.pumps.edge import state_key
from vigil.streams.runtime.codec import AvroCodec
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


class CloudStage:
    source_topic = "pump.scores.edge"

    def __init__(self, codec: AvroCodec, model: CloudModel, model_version: str, thresholds: Mapping[str, float] | None = None) -> None:
        self.codec = codec
        self.model = model
        self.model_version = model_version
        # A tuned threshold (from the registry metadata, written by `vigil tune`) overrides the training quantile.
        self.thresholds = {name: float((thresholds or {}).get(name, scorer.threshold_)) for name, scorer in model.feature_sets.items()}

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, CloudStreamState]) -> StageResult[CloudStreamState]:
        result: StageResult[CloudStreamState] = StageResult()
        to_score: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
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
            scorer = self.model.for_feature_set(record["feature_set"])
            if scorer is None:
                result.reject(message, unsupported_feature_set("cloud", self.model_version, self.model.feature_sets, record))
                continue
            names = scorer.feature_names_
            z = np.array([record["deviations"].get(name, 0.0) for name in names], dtype=np.float64)
            history = stream.history if stream.history.shape[1:] == (len(names),) else np.zeros((0, len(names)))
            stream.history = np.vstack([history, z[None, :]])[-self.model.window :]
            threshold = self.thresholds[record["feature_set"]]
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
                "cloud_threshold": threshold,
                "confirmed": False,
                "history_windows": len(stream.history),
                "edge_model_version": record["model_version"],
                "cloud_model_version": self.model_version,
                "deviations": record["deviations"],
                "features": record.get("features", {}),
            }
            index = result.emit(output, float(record["ts_ms"]))
            if record["flagged"]:
                padded = np.vstack([np.zeros((self.model.window - len(stream.history), len(names))), stream.history])
                to_score[record["feature_set"]].append((index, padded))

        for name, items in to_score.items():
            scores = self.model.feature_sets[name].score_many(np.stack([sequence for _, sequence in items]))
            threshold = self.thresholds[name]
            result.confirmed[name] = int(np.count_nonzero(scores >= threshold))
            for (index, _), score in zip(items, scores.tolist()):
                out = result.outputs[index]
                out["evaluated"] = True
                out["cloud_score"] = score
                out["confirmed"] = score >= threshold
        return result
