"""PRONOSTIA-layout run-to-failure packs: evaluation of the pump cascade under the protocol stated in
``vigil.streams.pumps.run_to_failure`` (detections, false-alarm assets, lead before failure, cost-based thresholds).
"""
from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any, Iterable, Mapping

from vigil.models.alerts import AlertAssetState, AlertPolicy, AlertPolicyConfig
from vigil.models.cloud import CloudModel
from vigil.models.costs import AssetOutcome, CostModel, CostRow, cheapest, cost_table
from vigil.models.edge import EdgeModel
from vigil.models.packs import iter_pronostia
from vigil.models.alerts import scored_window
from vigil.streams.pumps.offline import OfflineOutput, OfflinePumpPipeline
from vigil.streams.pumps.run_to_failure import AssetLife, RunToFailureProtocol, pack_lives, protocol_assets


def run_cascade(
    path: str | Path,
    edge: tuple[EdgeModel, str],
    cloud: tuple[CloudModel, str],
    *,
    cloud_thresholds: Mapping[str, float] | None = None,
    policy: AlertPolicyConfig = AlertPolicyConfig(),
    bearings: list[str] | None = None,
    protocol: RunToFailureProtocol = RunToFailureProtocol(),
) -> tuple[dict[str, AssetLife], OfflineOutput]:
    lives = pack_lives(path, bearings)
    pipeline = OfflinePumpPipeline(
        assets=protocol_assets(lives, protocol), edge=edge, cloud=cloud, cloud_thresholds=cloud_thresholds, policy=AlertPolicy(policy)
    )
    records = (("vibration", c.asset_id, c.as_record()) for c in iter_pronostia(path, bearings))
    return lives, pipeline.feed_batched(records, batch_size=512)


def replay_alerts(cloud_scores: list[dict[str, Any]], threshold: float, policy: AlertPolicyConfig) -> list[dict[str, Any]]:
    """The alert policy over recorded cloud scores with another confirmation threshold (what `vigil tune` varies).

    Cloud scores do not depend on the threshold, so this equals a full re-run."""
    alert_policy = AlertPolicy(policy)
    states: dict[str, AlertAssetState] = {}
    opened = []
    for record in cloud_scores:
        confirmed = record["evaluated"] and record["cloud_score"] >= threshold
        window = scored_window({**record, "confirmed": confirmed, "cloud_threshold": threshold})
        for event in alert_policy.step(states.setdefault(record["asset_id"], AlertAssetState()), window):
            opened.append({"asset_id": event.asset_id, "state": event.state, "ts_ms": event.ts_ms, "alert_id": event.alert_id})
    return opened


def score_episodes(
    alerts: Iterable[Mapping[str, Any]], lives: Mapping[str, AssetLife], protocol: RunToFailureProtocol = RunToFailureProtocol()
) -> dict[str, Any]:
    """The JSON report of the protocol from alert records (only OPEN events matter)."""
    opened: dict[str, list[int]] = {name: [] for name in lives}
    for a in alerts:
        if a["state"] == "OPEN" and a["asset_id"] in opened:
            opened[a["asset_id"]].append(a["ts_ms"])
    per_asset = []
    for name, life in sorted(lives.items()):
        times = sorted(opened[name])
        early = [t for t in times if life.fraction(t) < protocol.false_alarm_fraction]
        late = [t for t in times if protocol.false_alarm_fraction <= life.fraction(t) < 1.0]
        first = late[0] if late else None
        per_asset.append({
            "asset": name,
            "windows": life.windows,
            "life_hours": round(life.duration_ms / 3.6e6, 3),
            "episodes": len(times),
            "false_alarm": bool(early),
            "false_alarm_episodes": len(early),
            "detected": first is not None,
            "first_episode_fraction": round(life.fraction(first), 4) if first is not None else None,
            "lead_hours": round((life.end_ms - first) / 3.6e6, 3) if first is not None else None,
            "lead_fraction": round((life.end_ms - first) / life.duration_ms, 4) if first is not None else None,
        })
    return fleet_summary(per_asset)


def fleet_summary(per_asset: list[dict[str, Any]]) -> dict[str, Any]:
    """The protocol's fleet figures from per-asset rows (those of ``score_episodes``)."""
    detected = [a for a in per_asset if a["detected"]]
    return {
        "assets": len(per_asset),
        "detected": len(detected),
        "false_alarm_assets": sum(a["false_alarm"] for a in per_asset),
        "median_lead_hours": round(median(a["lead_hours"] for a in detected), 3) if detected else None,
        "median_lead_fraction": round(median(a["lead_fraction"] for a in detected), 4) if detected else None,
        "per_asset": per_asset,
    }


def cascade_funnel(output: OfflineOutput) -> dict[str, Any]:
    scored = sum(1 for s in output.scores if s["state"] == "SCORED")
    flagged = sum(1 for s in output.scores if s["flagged"])
    confirmed = sum(1 for c in output.cloud_scores if c["confirmed"])
    return {
        "windows": len(output.features),
        "scored_windows": scored,
        "flagged_windows": flagged,
        "confirmed_windows": confirmed,
        "alert_episodes": sum(1 for a in output.alerts if a["state"] == "OPEN"),
        "cloud_fraction": round(flagged / scored, 4) if scored else 0.0,
        "dead_letters": len(output.dead_letters),
    }


def evaluate_run_to_failure(
    path: str | Path,
    edge: tuple[EdgeModel, str],
    cloud: tuple[CloudModel, str],
    *,
    cloud_thresholds: Mapping[str, float] | None = None,
    policy: AlertPolicyConfig = AlertPolicyConfig(),
    bearings: list[str] | None = None,
    protocol: RunToFailureProtocol = RunToFailureProtocol(),
) -> dict[str, Any]:
    lives, output = run_cascade(path, edge, cloud, cloud_thresholds=cloud_thresholds, policy=policy, bearings=bearings, protocol=protocol)
    return summarize_run(lives, output, (edge[1], cloud[1]), policy, protocol)


def summarize_run(
    lives: Mapping[str, AssetLife], output: OfflineOutput, versions: tuple[str, str], policy: AlertPolicyConfig,
    protocol: RunToFailureProtocol = RunToFailureProtocol(),
) -> dict[str, Any]:
    """The JSON report of one cascade run: the protocol's figures, the funnel, model versions and policy."""
    report = score_episodes(output.alerts, lives, protocol)
    funnel = cascade_funnel(output)
    report["cloud_fraction"] = funnel["cloud_fraction"]
    report["funnel"] = funnel
    report["models"] = {"edge": versions[0], "cloud": versions[1]}
    report["policy"] = policy.__dict__ | {"severity_margins": list(policy.severity_margins)}
    return report


DEFAULT_CANDIDATES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0)


def tune_run_to_failure(
    path: str | Path,
    edge: tuple[EdgeModel, str],
    cloud: tuple[CloudModel, str],
    *,
    candidates: Iterable[float] = DEFAULT_CANDIDATES,
    costs: CostModel = CostModel(),
    policy: AlertPolicyConfig = AlertPolicyConfig(),
    bearings: list[str] | None = None,
    protocol: RunToFailureProtocol = RunToFailureProtocol(),
) -> tuple[list[CostRow], CostRow]:
    """Expected cost of each candidate cloud threshold on a run-to-failure pack; returns the table and the cheapest.

    Every record is taken to end in a failure (the layout's meaning). The cascade runs
    once; each candidate then replays the alert policy over the recorded cloud scores."""
    lives, output = run_cascade(path, edge, cloud, policy=policy, bearings=bearings, protocol=protocol)
    return price_thresholds(lives, output, candidates=candidates, costs=costs, policy=policy, protocol=protocol)


def price_thresholds(
    lives: Mapping[str, AssetLife],
    output: OfflineOutput,
    *,
    candidates: Iterable[float] = DEFAULT_CANDIDATES,
    costs: CostModel = CostModel(),
    policy: AlertPolicyConfig = AlertPolicyConfig(),
    protocol: RunToFailureProtocol = RunToFailureProtocol(),
) -> tuple[list[CostRow], CostRow]:
    """``tune_run_to_failure`` over a cascade run already made."""

    def outcomes_at(threshold: float) -> list[AssetOutcome]:
        report = score_episodes(replay_alerts(output.cloud_scores, threshold, policy), lives, protocol)
        return [
            AssetOutcome(failed=True, detected=a["detected"], false_alarms=a["false_alarm_episodes"], healthy_life_fraction=protocol.false_alarm_fraction)
            for a in report["per_asset"]
        ]

    rows = cost_table(sorted(set(candidates)), outcomes_at, costs)
    return rows, cheapest(rows)
