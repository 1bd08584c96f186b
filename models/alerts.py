"""Alert policy: turning a stream of cloud-confirmed windows into alert episodes.

One window is never an alert. An episode opens when the cloud tier confirmed
at least ``confirm_k`` of the last ``confirm_n`` windows the edge tier flagged
(every flagged window counts, confirmed or not, so a run of dismissed windows
pushes old confirmations out). It stays open while confirmations continue and
closes once ``quiet_s`` of event time passes without one; a later streak opens
a new episode.

Episode ids are a hash of (asset, stream, seq) of the window that opened the
episode, so replaying the same input produces the same ids and downstream
consumers can de-duplicate on them.

>>> policy = AlertPolicy(AlertPolicyConfig(confirm_k=2, confirm_n=3, quiet_s=60.0))
>>> state = AlertAssetState()
>>> def window(seq, confirmed, flagged=True):
...     return ScoredWindow("pump-1", "vibration/x", seq, seq * 10_000, flagged=flagged, confirmed=confirmed,
...                         edge_score=0.7, cloud_score=9.0 if confirmed else 1.0, cloud_threshold=4.0)
>>> [e.state for s, c in [(0, True), (1, False), (2, True), (3, True)] for e in policy.step(state, window(s, c))]
['OPEN']
>>> [e.state for e in policy.step(state, window(20, False, flagged=False))]  # 170 s after the last confirmation
['CLOSE']
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from vigil.models.diagnosis import Diagnosis, diagnose_fault

SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
TOP_FEATURES = 3
ENVELOPE_MEMORY = 16


@dataclass(frozen=True)
class AlertPolicyConfig:
    confirm_k: int = 3
    confirm_n: int = 5
    quiet_s: float = 3600.0
    # Only flagged windows this recent (event time) count towards k of n; None: any of the last n.
    # Without it, sparse captures let three stray confirmations days apart open an episode.
    confirm_within_s: float | None = None
    # Severity by the episode's peak cloud score above the cloud threshold, in the
    # score's own unit (robust sd of the healthy log reconstruction error).
    severity_margins: tuple[float, float, float] = (2.0, 5.0, 10.0)

    def __post_init__(self) -> None:
        if not 1 <= self.confirm_k <= self.confirm_n:
            raise ValueError(f"need 1 <= confirm_k <= confirm_n, got k={self.confirm_k}, n={self.confirm_n}")
        if self.quiet_s <= 0:
            raise ValueError(f"quiet_s must be > 0, got {self.quiet_s}")
        if self.confirm_within_s is not None and self.confirm_within_s <= 0:
            raise ValueError(f"confirm_within_s must be > 0, got {self.confirm_within_s}")


@dataclass(frozen=True)
class ScoredWindow:
    """One window after both tiers, as the alert policy sees it."""

    asset_id: str
    stream: str
    seq: int
    ts_ms: int
    flagged: bool
    confirmed: bool
    edge_score: float
    cloud_score: float | None
    cloud_threshold: float
    deviations: Mapping[str, float] = field(default_factory=dict)
    features: Mapping[str, float] = field(default_factory=dict)
    model_versions: Mapping[str, str] = field(default_factory=dict)


def scored_window(record: Mapping[str, Any]) -> ScoredWindow:
    """A pump.scores.cloud record (vigil.pumps.CloudScore) as the alert policy sees it."""
    return ScoredWindow(
        asset_id=record["asset_id"],
        stream=record["stream"],
        seq=record["seq"],
        ts_ms=record["ts_ms"],
        flagged=record["flagged"],
        confirmed=record["confirmed"],
        edge_score=record["edge_score"],
        cloud_score=record["cloud_score"],
        cloud_threshold=record["cloud_threshold"],
        deviations=record["deviations"],
        features=record["features"],
        model_versions={"edge": record["edge_model_version"], "cloud": record["cloud_model_version"]},
    )


@dataclass
class Episode:
    alert_id: str
    first_stream: str
    first_seq: int
    opened_ts_ms: int
    last_confirmed_ts_ms: int
    confirmations: int = 0
    peak_edge: float = 0.0
    peak_cloud: float = float("-inf")
    severity: str = "LOW"
    top_features: dict[str, float] = field(default_factory=dict)
    envelopes: list[dict[str, float]] = field(default_factory=list)
    model_versions: dict[str, str] = field(default_factory=dict)


@dataclass
class AlertAssetState:
    recent: list[bool] = field(default_factory=list)  # confirmed?, per flagged window, oldest first
    episode: Episode | None = None
    recent_ts_ms: list[int] = field(default_factory=list)  # event time of each of ``recent``


@dataclass(frozen=True)
class AlertEvent:
    alert_id: str
    asset_id: str
    state: str  # OPEN, UPDATE or CLOSE
    severity: str
    ts_ms: int
    opened_ts_ms: int
    first_stream: str
    first_seq: int
    last_stream: str
    last_seq: int
    confirmations: int
    edge_score: float
    cloud_score: float
    model_versions: dict[str, str]
    top_features: dict[str, float]
    diagnosis: Diagnosis | None


def episode_id(asset_id: str, stream: str, seq: int) -> str:
    """Deterministic: the same opening window always gives the same id.

    >>> episode_id("pump-1", "vibration/x", 42) == episode_id("pump-1", "vibration/x", 42)
    True
    """
    return hashlib.sha256(f"{asset_id}|{stream}|{seq}".encode()).hexdigest()[:20]


class AlertPolicy:
    def __init__(self, config: AlertPolicyConfig | None = None) -> None:
        self.config = config or AlertPolicyConfig()

    def severity(self, peak_cloud: float, threshold: float) -> str:
        margin = peak_cloud - threshold
        level = int(np.searchsorted(np.asarray(self.config.severity_margins), margin, side="right"))
        return SEVERITIES[level]

    def step(self, state: AlertAssetState, window: ScoredWindow) -> list[AlertEvent]:
        """Advance one asset's state by one window (in event order); returns the alert changes it causes."""
        events: list[AlertEvent] = []
        cfg = self.config
        episode = state.episode
        if episode is not None and window.ts_ms - episode.last_confirmed_ts_ms > cfg.quiet_s * 1000.0:
            events.append(self._event(window, episode, "CLOSE"))
            state.episode = episode = None
            state.recent, state.recent_ts_ms = [], []
        if not window.flagged:
            return events
        # State written before recent_ts_ms existed: its windows count as recent.
        missing = len(state.recent) - len(state.recent_ts_ms)
        stamps = [window.ts_ms] * missing + state.recent_ts_ms if missing >= 0 else state.recent_ts_ms[-missing:]
        state.recent = (state.recent + [window.confirmed])[-cfg.confirm_n :]
        state.recent_ts_ms = (stamps + [window.ts_ms])[-cfg.confirm_n :]
        if cfg.confirm_within_s is not None:
            since = window.ts_ms - cfg.confirm_within_s * 1000.0
            kept = [i for i, ts in enumerate(state.recent_ts_ms) if ts >= since]
            state.recent = [state.recent[i] for i in kept]
            state.recent_ts_ms = [state.recent_ts_ms[i] for i in kept]
        if not window.confirmed:
            return events
        if episode is None:
            if sum(state.recent) < cfg.confirm_k:
                return events
            episode = state.episode = Episode(
                alert_id=episode_id(window.asset_id, window.stream, window.seq),
                first_stream=window.stream,
                first_seq=window.seq,
                opened_ts_ms=window.ts_ms,
                last_confirmed_ts_ms=window.ts_ms,
            )
            self._absorb(episode, window)
            events.append(self._event(window, episode, "OPEN"))
            return events
        previous = episode.severity
        self._absorb(episode, window)
        if episode.severity != previous:
            events.append(self._event(window, episode, "UPDATE"))
        return events

    def _absorb(self, episode: Episode, window: ScoredWindow) -> None:
        episode.confirmations += 1
        episode.last_confirmed_ts_ms = window.ts_ms
        episode.peak_edge = max(episode.peak_edge, window.edge_score)
        if window.cloud_score is not None:
            episode.peak_cloud = max(episode.peak_cloud, window.cloud_score)
        episode.severity = max(episode.severity, self.severity(episode.peak_cloud, window.cloud_threshold), key=SEVERITIES.index)
        merged = dict(episode.top_features)
        for name, z in window.deviations.items():
            if abs(z) > abs(merged.get(name, 0.0)):
                merged[name] = z
        episode.top_features = dict(sorted(merged.items(), key=lambda item: -abs(item[1]))[:TOP_FEATURES])
        envelope = {k: v for k, v in window.features.items() if k.startswith("envelope_")}
        if envelope:
            episode.envelopes = (episode.envelopes + [envelope])[-ENVELOPE_MEMORY:]
        episode.model_versions.update(window.model_versions)

    def _event(self, window: ScoredWindow, episode: Episode, state: str) -> AlertEvent:
        return AlertEvent(
            alert_id=episode.alert_id,
            asset_id=window.asset_id,
            state=state,
            severity=episode.severity,
            ts_ms=window.ts_ms,
            opened_ts_ms=episode.opened_ts_ms,
            first_stream=episode.first_stream,
            first_seq=episode.first_seq,
            last_stream=window.stream,
            last_seq=window.seq,
            confirmations=episode.confirmations,
            edge_score=episode.peak_edge,
            cloud_score=episode.peak_cloud if np.isfinite(episode.peak_cloud) else 0.0,
            model_versions=dict(episode.model_versions),
            top_features=dict(episode.top_features),
            diagnosis=diagnose_fault(episode.envelopes) if episode.envelopes else None,
        )
