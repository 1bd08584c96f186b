"""The demo's model change: mid-run it retrains on the stream, shadows the candidate, compares, promotes it.

Afterwards it counts, from the topics, which windows each version scored
across the switch: every window of pump.features must have exactly one edge
score (``windows_scored_twice`` and ``windows_unscored`` are 0 when the
switch lost and repeated nothing).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from vigil.models.registry import CLOUD_TIER, EDGE_TIER
from vigil.models.retraining import RetrainBounds
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings

logger = logging.getLogger(__name__)
# How long the promotion waits for the shadow's first scores when publishing is already well past it.
SHADOW_WAIT_S = 20.0


@dataclass
class DemoModelChange:
    """Started from the publishing loop; runs on its own thread so publishing keeps its pace."""

    settings: Settings
    codec: AvroCodec
    retrain_at: float = 0.4  # share of the published steps after which it retrains
    promote_at: float = 0.7  # ... and after which it promotes the shadowed candidate
    bounds: RetrainBounds = field(default_factory=RetrainBounds)
    retrain: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    promoted: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    _thread: threading.Thread | None = None
    _promote_now: threading.Event = field(default_factory=threading.Event)

    @property
    def enabled(self) -> bool:
        return self.retrain_at > 0

    def on_step(self, step: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        if self._thread is None and step >= self.retrain_at * total:
            self._thread = threading.Thread(target=self._run, name="vigil-demo-model-change", daemon=True)
            self._thread.start()
        if step >= self.promote_at * total:
            self._promote_now.set()

    def finish(self, timeout_s: float) -> None:
        """Promote now if publishing ended before ``promote_at``, and wait for the thread."""
        self._promote_now.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self.error = self.error or f"the model change did not finish within {timeout_s:.0f} s"

    def _run(self) -> None:
        from vigil.streams.lifecycle.compare import compare_tier
        from vigil.streams.lifecycle.control import ModelChanges

        try:
            self.retrain = self._retrain()
            self._promote_now.wait()
            candidate = self.retrain["candidate"]
            if self.retrain["decision"] == "shadow":
                self._wait_for_shadow_scores(timeout_s=SHADOW_WAIT_S)
                self.comparison = {tier: compare_tier(self.settings, tier, codec=self.codec) for tier in (EDGE_TIER, CLOUD_TIER)}
                edge = self.comparison[EDGE_TIER]["shadow"] or {}
                changes = ModelChanges(self.settings, codec=self.codec)
                why = (f"demo: the shadow agreed with the active model on {edge.get('flag_agreement')} of "
                       f"{edge.get('windows_compared')} edge flags (Spearman {edge.get('score_spearman')})")
                self.promoted = changes.promote_together([(EDGE_TIER, candidate[EDGE_TIER]), (CLOUD_TIER, candidate[CLOUD_TIER])],
                                                         why=why, who="vigil demo")
                for tier in (EDGE_TIER, CLOUD_TIER):
                    changes.retire(tier, "shadow", why="demo: promoted to active", who="vigil demo")
        except Exception as exc:  # the demo goes on with the models it has; the report says what happened
            logger.exception("the demo's model change failed")
            self.error = f"{type(exc).__name__}: {exc}"

    def _wait_for_shadow_scores(self, timeout_s: float) -> None:
        """Until the shadow has scored some windows (a retrain that finished late leaves it little of the stream)."""
        from vigil.streams.lifecycle.control import read_to_end
        from vigil.streams.runtime.topics import PUMP_SCORES_EDGE_SHADOW

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not read_to_end(self.settings, PUMP_SCORES_EDGE_SHADOW):
            time.sleep(1.0)

    def _retrain(self) -> dict[str, Any]:
        """`retrain_pumps` in this process. Measured on 2 cores (default demo), against a `vigil retrain pumps`
        subprocess: in-process it took 22 s and the switch came with a third of the run still to score; as a
        subprocess 40-67 s (107 s at nice 19, after the last window), with no better end-to-end p99."""
        from vigil.streams.lifecycle.retrain import retrain_pumps

        started = time.monotonic()
        report = retrain_pumps(self.settings, bounds=self.bounds, who="vigil demo")
        report["wall_s"] = round(time.monotonic() - started, 1)
        return report

    def summary(self) -> dict[str, Any]:
        """model_switches (from ops.events and models.audit), versions scored, windows scored twice or never."""
        if not self.enabled:
            return {}
        from vigil.streams.lifecycle.control import read_changes, read_to_end
        from vigil.streams.runtime.topics import MODELS_AUDIT, OPS_EVENTS, PUMP_FEATURES, PUMP_SCORES_EDGE, SCHEMA_OF_TOPIC

        decode = self.codec.decode
        audit = {(c["tier"], c["alias"], c["at_ms"]): c for c in read_changes(self.settings, MODELS_AUDIT, self.codec)}
        switches = []
        for record in read_to_end(self.settings, OPS_EVENTS):
            event = decode(record.value, SCHEMA_OF_TOPIC[OPS_EVENTS])
            if event["kind"] not in ("model_switched", "model_retired"):
                continue
            change = audit.get((event["tier"], event["alias"], event["requested_at_ms"]), {})
            switches.append({"tier": event["tier"], "alias": event["alias"], "kind": event["kind"],
                             "from": change.get("previous_version"),
                             "to": None if event["kind"] == "model_retired" else event["version"], "worker": event["worker"],
                             "requested_at_ms": event["requested_at_ms"], "at_ms": event["at_ms"],
                             "switch_s": round((event["at_ms"] - event["requested_at_ms"]) / 1000.0, 3)})
        windows = Counter()
        for record in read_to_end(self.settings, PUMP_FEATURES, timeout_s=120.0):
            w = decode(record.value, SCHEMA_OF_TOPIC[PUMP_FEATURES])
            windows[(w["asset_id"], w["stream"], w["seq"])] += 1
        scored: Counter[tuple[str, str, int]] = Counter()
        by_version: dict[str, dict[str, Any]] = defaultdict(lambda: {"windows": 0, "first_ts_ms": None, "last_ts_ms": None})
        for record in read_to_end(self.settings, PUMP_SCORES_EDGE, timeout_s=120.0):
            s = decode(record.value, SCHEMA_OF_TOPIC[PUMP_SCORES_EDGE])
            scored[(s["asset_id"], s["stream"], s["seq"])] += 1
            v = by_version[s["model_version"]]
            v["windows"] += 1
            v["first_ts_ms"] = s["ts_ms"] if v["first_ts_ms"] is None else min(v["first_ts_ms"], s["ts_ms"])
            v["last_ts_ms"] = s["ts_ms"] if v["last_ts_ms"] is None else max(v["last_ts_ms"], s["ts_ms"])
        edge = (self.comparison or {}).get(EDGE_TIER, {}).get("shadow") or {}
        return {
            "model_switches": switches,
            "windows_scored_twice": sum(1 for n in scored.values() if n > 1),
            "windows_unscored": sum(1 for key in windows if key not in scored),
            "versions_scored": dict(by_version),
            "retrain": None if self.retrain is None else {
                k: self.retrain.get(k) for k in ("decision", "reasons", "candidate", "active", "wall_s", "lineage")
            } | {"windows_kept": self.retrain["checks"]["windows_kept"], "assets_kept": len(self.retrain["checks"]["assets_kept"])},
            "shadow_comparison": {k: edge.get(k) for k in ("windows_compared", "flag_agreement", "flagged_by_both",
                                                           "flagged_by_served_only", "flagged_by_shadow_only",
                                                           "score_pearson", "score_spearman")} if edge else None,
            "model_change_error": self.error,
        }
