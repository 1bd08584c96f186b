"""Stage fall.candidates -> fall.suspected: the high-specificity model on each screened window.

The whole batch's windows are scored in one call (measured with
``python -m loadtest.bench_fall_stages``: 228-277 us per candidate batched,
decode included, against 4.1-5.5 ms one at a time: scikit-learn's per-call cost).
Only windows the model fires on go on to the wearer.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from vigil.models.falls import FEATURE_NAMES, POST_S, FallClassifier, fall_window_features, window_samples
from vigil.models.registry import FALL_TIER
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.serving import ModelServingStage, ServingModel, ServingSet
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.validation import Rejection, check_identity, check_samples

SCHEMA = "vigil.falls.FallCandidate"


@dataclass
class WearerClassifyState:
    last_seq: int = -1

    def to_bytes(self) -> bytes:
        return pack_state({"last_seq": self.last_seq})

    @classmethod
    def from_bytes(cls, data: bytes) -> "WearerClassifyState":
        header, _ = unpack_state(data)
        return cls(**header)


class FallModelStage(ModelServingStage[FallClassifier]):
    """Stage 2: FallSuspected records for the candidates ``model`` fires on."""

    source_topic = "fall.candidates"
    tier = FALL_TIER
    shadow_topic = "fall.suspected.shadow"

    def __init__(self, codec: AvroCodec, model: FallClassifier, model_version: str) -> None:
        self.codec = codec
        self.models = ServingSet(ServingModel(model, model_version))

    def check(self, record: Mapping[str, Any], key: bytes | None,
              serving: ServingModel[FallClassifier] | None = None) -> tuple[Rejection | None, np.ndarray | None]:
        model, model_version = (serving or self.serving).model, (serving or self.serving).version
        found = check_identity(record, key, "wearer_id", "impact_ts_ms")
        if found:
            return found, None
        wearer = record["wearer_id"]
        if record["fs_hz"] != model.fs_hz:
            return Rejection("unsupported_rate", f"window at {record['fs_hz']} Hz; model {model_version} is for {model.fs_hz:g} Hz", wearer), None
        expected = window_samples(model.fs_hz)
        if len(record["xyz"]) != expected * 12:
            return Rejection("undecodable", f"window holds {len(record['xyz'])} bytes, not {expected * 12}", wearer), None
        # Stage 1 cut it from checked samples; only corruption on the way could make it non-finite.
        return check_samples(record["xyz"], 3, expected, math.inf, wearer, "xyz")

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, WearerClassifyState]) -> StageResult[WearerClassifyState]:
        result: StageResult[WearerClassifyState] = StageResult()
        models = self.models  # one set of models for the whole batch, whatever swaps meanwhile
        # (record, window) per serving version; each version's windows classified together
        accepted: dict[str, list[tuple[dict[str, Any], np.ndarray]]] = defaultdict(list)
        serving_of: dict[str, ServingModel[FallClassifier]] = {}
        for message in messages:
            record = result.decode(self.codec, message, SCHEMA)
            if record is None:
                continue
            serving = models.for_asset(str(record.get("wearer_id")))
            rejection, window = self.check(record, message.key, serving)
            if rejection is not None:
                result.reject(message, rejection)
                continue
            wearer = record["wearer_id"]
            wearer_state = result.pending_state(wearer, state) or WearerClassifyState()
            if not result.admit(record["seq"], wearer_state.last_seq):
                continue
            result.update_state(wearer, WearerClassifyState(last_seq=record["seq"]), message.partition)
            accepted[serving.version].append((record, window))
            serving_of[serving.version] = serving
        shadow = models.shadow if self.shadow_topic else None
        for version, items in accepted.items():
            self._emit_fired(result, serving_of[version], items, None)
            if shadow is not None and shadow.model.fs_hz == serving_of[version].model.fs_hz:
                self._emit_fired(result, shadow, items, self.shadow_topic)
        return result

    @staticmethod
    def _emit_fired(result: StageResult[WearerClassifyState], serving: ServingModel[FallClassifier],
                    items: list[tuple[dict[str, Any], np.ndarray]], topic: str | None) -> None:
        """FallSuspected records for the windows ``serving`` fires on, to ``topic`` (None: fall.suspected)."""
        model = serving.model
        accepted = [record for record, _ in items]
        started = time.perf_counter()
        features = fall_window_features(np.stack([window for _, window in items]), model.fs_hz)
        probability = model.predict_proba_features(features)
        result.timed(FALL_TIER, started)
        fires = probability >= model.threshold_
        for record, row, p in zip([r for r, fired in zip(accepted, fires) if fired], features[fires], probability[fires]):
            result.emit({
                "wearer_id": record["wearer_id"],
                "seq": record["seq"],
                "impact_ts_ms": record["impact_ts_ms"],
                "window_start_ts_ms": record["window_start_ts_ms"],
                "fs_hz": record["fs_hz"],
                "probability": float(p),
                "threshold": float(model.threshold_),
                "model_version": serving.version,
                "features": dict(zip(FEATURE_NAMES, row.astype(float).tolist())),
                "xyz": record["xyz"],
            }, record["impact_ts_ms"] + POST_S * 1000.0, topic)
