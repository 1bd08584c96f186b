"""`vigil models compare`: a tier's active model against its shadow and canary, read back from the topics.

The served topic (``pump.scores.edge``, ``pump.scores.cloud``, ``fall.suspected``)
carries the active model's verdicts and, for the assets in its share, the
canary's; the shadow topic carries the shadow's verdicts on the same windows.
Both are read from the beginning and cut to an event-time range. The fall
topics hold only the candidates a model fired on, so for ``falls`` every
candidate on ``fall.candidates`` within the span of the shadow's records is
compared, a missing verdict counting as not fired.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from vigil.models.alerts import AlertAssetState, AlertPolicy, scored_window
from vigil.models.comparison import Verdict, compare_verdicts, flag_rates_by_version, over_candidates
from vigil.models.lifecycle import control_key, current_changes
from vigil.streams.lifecycle.control import read_changes, read_to_end
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import (
    FALL_CANDIDATES,
    FALL_SUSPECTED,
    FALL_SUSPECTED_SHADOW,
    MODELS_CONTROL,
    PUMP_SCORES_CLOUD,
    PUMP_SCORES_CLOUD_SHADOW,
    PUMP_SCORES_EDGE,
    PUMP_SCORES_EDGE_SHADOW,
    SCHEMA_OF_TOPIC,
)


def _edge_verdict(r: Mapping[str, Any]) -> Verdict | None:
    if r["state"] != "SCORED":
        return None  # commissioning windows carry no verdict
    return Verdict(r["asset_id"], (r["asset_id"], r["stream"], r["seq"]), r["model_version"], r["score"], r["flagged"])


def _cloud_verdict(r: Mapping[str, Any]) -> Verdict | None:
    if not r["evaluated"]:
        return None  # the cloud tier judges flagged windows only
    return Verdict(r["asset_id"], (r["asset_id"], r["stream"], r["seq"]), r["cloud_model_version"], r["cloud_score"], r["confirmed"])


def _fall_verdict(r: Mapping[str, Any]) -> Verdict | None:
    # fall.suspected holds only the candidates a model fired on: a window one model lacks is one it let pass
    return Verdict(r["wearer_id"], (r["wearer_id"], r["seq"]), r["model_version"], r["probability"], True)


@dataclass(frozen=True)
class TierTopics:
    served: str
    shadow: str
    verdict: Callable[[Mapping[str, Any]], Verdict | None]
    event_ms: Callable[[Mapping[str, Any]], int]


TIERS = {
    "edge": TierTopics(PUMP_SCORES_EDGE, PUMP_SCORES_EDGE_SHADOW, _edge_verdict, lambda r: r["ts_ms"]),
    "cloud": TierTopics(PUMP_SCORES_CLOUD, PUMP_SCORES_CLOUD_SHADOW, _cloud_verdict, lambda r: r["ts_ms"]),
    "falls": TierTopics(FALL_SUSPECTED, FALL_SUSPECTED_SHADOW, _fall_verdict, lambda r: r["impact_ts_ms"]),
}


def _records(settings: Settings, topic: str, codec: AvroCodec, since_ms: int | None, until_ms: int | None,
             event_ms: Callable[[Mapping[str, Any]], int]) -> list[dict[str, Any]]:
    schema = SCHEMA_OF_TOPIC[topic]
    records = [codec.decode(r.value, schema) for r in read_to_end(settings, topic, timeout_s=120.0)]
    return [r for r in records if (since_ms is None or event_ms(r) >= since_ms) and (until_ms is None or event_ms(r) < until_ms)]


def alerts_raised(records: list[dict[str, Any]], policy: AlertPolicy) -> list[dict[str, Any]]:
    """The alert episodes the alert policy opens on these cloud verdicts, replayed per asset in event order."""
    states: dict[str, AlertAssetState] = defaultdict(AlertAssetState)
    opened = []
    for record in sorted(records, key=lambda r: (r["asset_id"], r["ts_ms"], r["stream"], r["seq"])):
        for event in policy.step(states[record["asset_id"]], scored_window(record)):
            if event.state == "OPEN":
                opened.append({"asset_id": event.asset_id, "alert_id": event.alert_id, "opened_ts_ms": event.opened_ts_ms})
    return opened


def compare_tier(settings: Settings, tier: str, *, since_ms: int | None = None, until_ms: int | None = None,
                 codec: AvroCodec | None = None) -> dict[str, Any]:
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: one of {sorted(TIERS)}")
    codec = codec or AvroCodec()
    topics = TIERS[tier]
    served = _records(settings, topics.served, codec, since_ms, until_ms, topics.event_ms)
    shadow = _records(settings, topics.shadow, codec, since_ms, until_ms, topics.event_ms)
    served_verdicts = [v for v in map(topics.verdict, served) if v is not None]
    shadow_verdicts = [v for v in map(topics.verdict, shadow) if v is not None]
    paired_served, paired_shadow = served_verdicts, shadow_verdicts
    if tier == "falls" and shadow:
        first, last = min(r["impact_ts_ms"] for r in shadow), max(r["impact_ts_ms"] for r in shadow)
        candidates = _records(settings, FALL_CANDIDATES, codec, first, last + 1, lambda r: r["impact_ts_ms"])
        in_span = [v for r, v in zip(served, served_verdicts) if first <= r["impact_ts_ms"] <= last]
        paired_served, paired_shadow = over_candidates(((c["wearer_id"], (c["wearer_id"], c["seq"])) for c in candidates),
                                                       in_span, shadow_verdicts)
    in_force = current_changes(read_changes(settings, MODELS_CONTROL, codec))
    aliases = {alias: {"version": c["version"], "share": c["share"]} if c["action"] != "retire" else None
               for alias in ("active", "shadow", "canary") if (c := in_force.get(control_key(tier, alias))) is not None}
    report: dict[str, Any] = {
        "tier": tier, "since_ms": since_ms, "until_ms": until_ms, "in_force": aliases,
        "served_topic": settings.topic(topics.served), "shadow_topic": settings.topic(topics.shadow),
        "served_records": len(served), "shadow_records": len(shadow),
        "shadow": compare_verdicts(paired_served, paired_shadow) if shadow_verdicts else None,
        # the active model and a canary serve different assets: their flag rates compare, their verdicts do not pair
        "by_version": flag_rates_by_version(served_verdicts),
    }
    if tier == "cloud":
        policy = AlertPolicy(settings.alert_policy())
        by_version: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in served:
            by_version[record["cloud_model_version"]].append(record)
        report["alerts"] = {"served": {v: alerts_raised(rs, policy) for v, rs in sorted(by_version.items())},
                            "shadow": alerts_raised(shadow, policy) if shadow else []}
    return report
