"""Retraining from the stream: which windows count as healthy training data, whether there is enough of it, and the
promotion gate that judges a candidate against the model it would replace.

The gate is the seed's monthly update: a candidate replaces the active model when,
on held-back failures, its recall is at most 0.05 lower and its false alarms at most
50 % higher; otherwise it is kept as a shadow. Pure functions: the CLI reads the
topics and trains.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from vigil.models.feedback import (
    DEFAULT_FAILURE_LOOKBACK_H,
    episodes_from_alerts,
    feedback_problem,
    judge_failure,
    latest_failure_reports,
    latest_feedback,
)


@dataclass(frozen=True)
class RetrainBounds:
    min_windows_per_asset: int = 60  # per (asset, stream): a commissioning baseline (30) and as much again to learn from
    min_assets: int = 3
    max_deadletter_share: float = 0.05  # of an asset's records; the brief's data-quality line is 1 % of readings fleet-wide
    # Of the windows read: above it the stream is mostly a shift still under way (ops.drift), not a settled operating point.
    max_drifting_share: float = 0.5
    max_recall_drop: float = 0.05
    max_false_alarm_rise: float = 0.5


def alert_spans(alerts: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per asset, the event-time spans of its pump alert episodes, [opened, closed]; an episode never closed runs on.

    >>> alert_spans([{"alert_id": "a", "asset_id": "p1", "kind": "pump.anomaly", "state": "OPEN", "ts_ms": 10, "opened_ts_ms": 10},
    ...              {"alert_id": "a", "asset_id": "p1", "kind": "pump.anomaly", "state": "CLOSE", "ts_ms": 50, "opened_ts_ms": 10},
    ...              {"alert_id": "b", "asset_id": "p2", "kind": "pump.anomaly", "state": "OPEN", "ts_ms": 70, "opened_ts_ms": 70}])
    {'p1': [(10, 50)], 'p2': [(70, inf)]}
    """
    episodes: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        if not alert["kind"].startswith("pump."):
            continue
        episode = episodes.setdefault(alert["alert_id"], {"asset": alert["asset_id"], "opened": alert["opened_ts_ms"], "closed": math.inf})
        if alert["state"] == "CLOSE":
            episode["closed"] = alert["ts_ms"]
    spans: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for episode in episodes.values():
        spans[episode["asset"]].append((episode["opened"], episode["closed"]))
    return {asset: sorted(s) for asset, s in sorted(spans.items())}


def drift_spans(findings: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per pump, the event-time spans of its own feature-drift episodes (ops.drift, scope asset), [opened, closed].

    >>> drift_spans([{"finding_id": "d1", "scope": "asset", "kind": "feature", "asset_id": "p1", "state": "OPEN", "opened_ts_ms": 10,
    ...               "window_end_ms": 10}, {"finding_id": "d1", "scope": "asset", "kind": "feature", "asset_id": "p1",
    ...               "state": "CLOSE", "opened_ts_ms": 10, "window_end_ms": 40}])
    {'p1': [(10, 40)]}
    """
    episodes: dict[str, tuple[str, int, float]] = {}
    for f in findings:
        if f["scope"] != "asset" or f["kind"] != "feature":
            continue
        asset, opened, closed = episodes.get(f["finding_id"], (f["asset_id"], f["opened_ts_ms"], float("inf")))
        episodes[f["finding_id"]] = (asset, opened, f["window_end_ms"] if f["state"] == "CLOSE" else closed)
    spans: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for asset, opened, closed in sorted(episodes.values()):
        spans[asset].append((opened, closed))
    return dict(spans)


def select_training_windows(windows: Sequence[Mapping[str, Any]], spans: Mapping[str, Sequence[tuple[int, float]]],
                            deadletters_per_asset: Mapping[str, int], bounds: RetrainBounds = RetrainBounds(),
                            drifting: Mapping[str, Sequence[tuple[int, float]]] | None = None,
                            ) -> tuple[list[Mapping[str, Any]], dict[str, Any], list[str]]:
    """(the windows to train on, the checks as a report, problems that forbid training).

    A window inside an alert episode of its asset is not healthy; an asset whose dead-letter share is above the
    bound is left out whole (its data cannot be trusted); a stream with fewer windows than the bound is left out.
    ``drifting``: per asset its drift episodes (``drift_spans``); windows inside them are kept (a new operating
    point is what retraining is for) but counted, and above ``max_drifting_share`` of the windows read the
    shift is still under way: no training.

    >>> ws = [{"asset_id": f"p{a}", "stream": "vibration/x", "seq": s, "ts_ms": s} for a in range(3) for s in range(70)]
    >>> kept, checks, problems = select_training_windows(ws, {"p0": [(60, float("inf"))]}, {"p2": 10})
    >>> len(kept), checks["windows_in_alert_episodes"], checks["streams_too_short"], problems
    (130, 10, [], ['2 assets with enough healthy windows (at least 60 per stream), 3 needed'])
    """
    in_episode = 0
    in_drift = sum(1 for w in windows if any(start <= w["ts_ms"] <= end for start, end in (drifting or {}).get(w["asset_id"], ())))
    healthy: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for w in windows:
        if any(start <= w["ts_ms"] <= end for start, end in spans.get(w["asset_id"], ())):
            in_episode += 1
            continue
        healthy[(w["asset_id"], w["stream"])].append(w)
    records = Counter(w["asset_id"] for w in windows)
    share = {a: deadletters_per_asset.get(a, 0) / (records[a] + deadletters_per_asset.get(a, 0)) for a in records}
    untrusted = sorted(a for a, s in share.items() if s > bounds.max_deadletter_share)
    short = sorted(f"{a}|{s}" for (a, s), ws in healthy.items() if len(ws) < bounds.min_windows_per_asset)
    kept = [w for (a, s), ws in sorted(healthy.items()) if a not in untrusted and f"{a}|{s}" not in short for w in ws]
    assets = sorted({w["asset_id"] for w in kept})
    checks = {
        "windows_read": len(windows), "windows_in_alert_episodes": in_episode, "windows_kept": len(kept), "assets_kept": assets,
        "assets_over_deadletter_share": {a: round(share[a], 4) for a in untrusted}, "streams_too_short": short,
        "windows_in_drift_episodes": in_drift,
    }
    problems = []
    if windows and in_drift / len(windows) > bounds.max_drifting_share:
        problems.append(f"{in_drift / len(windows):.0%} of the windows read fall in drift episodes of their pumps (ops.drift), above "
                        f"the {bounds.max_drifting_share:.0%} bound: the shift is still under way")
    if len(assets) < bounds.min_assets:
        problems.append(f"{len(assets)} assets with enough healthy windows (at least {bounds.min_windows_per_asset} per stream), "
                        f"{bounds.min_assets} needed")
    return kept, checks, problems


def promotion_gate(active: Mapping[str, float], candidate: Mapping[str, float],
                   bounds: RetrainBounds = RetrainBounds()) -> tuple[bool, list[str]]:
    """Whether the candidate may replace the active model, and why (recall and false alarms on held-back failures).

    >>> promotion_gate({"recall": 0.9, "false_alarms": 2}, {"recall": 0.86, "false_alarms": 3})
    (True, ['recall 0.860 vs 0.900: drop 0.040 <= 0.05', 'false alarms 3 vs 2: rise 50% <= 50%'])
    >>> promotion_gate({"recall": 0.9, "false_alarms": 0}, {"recall": 0.9, "false_alarms": 1})[0]
    False
    """
    drop = active["recall"] - candidate["recall"]
    reasons = [f"recall {candidate['recall']:.3f} vs {active['recall']:.3f}: drop {max(drop, 0.0):.3f} "
               f"{'<=' if drop <= bounds.max_recall_drop + 1e-12 else '>'} {bounds.max_recall_drop:g}"]
    allowed = active["false_alarms"] * (1.0 + bounds.max_false_alarm_rise)
    within = candidate["false_alarms"] <= allowed
    if active["false_alarms"]:
        rise = (candidate["false_alarms"] - active["false_alarms"]) / active["false_alarms"]
        reasons.append(f"false alarms {candidate['false_alarms']:g} vs {active['false_alarms']:g}: rise {max(rise, 0.0):.0%} "
                       f"{'<=' if within else '>'} {bounds.max_false_alarm_rise:.0%}")
    else:
        reasons.append(f"false alarms {candidate['false_alarms']:g} vs none: {'none added' if within else 'any rise from none is too many'}")
    return drop <= bounds.max_recall_drop + 1e-12 and candidate["false_alarms"] <= allowed, reasons


@dataclass(frozen=True)
class LabelledCases:
    """What maintenance said about the stream, as held-back cases to judge a pair on."""

    failures: tuple[tuple[str, int], ...]  # (asset, failure time): reported failures and fault-found labels naming one
    quiet: tuple[tuple[str, int, float], ...]  # (asset, opened, closed) of the episodes labelled nothing-found

    @property
    def assets(self) -> list[str]:
        return sorted({a for a, _ in self.failures} | {a for a, _, _ in self.quiet})


def labelled_cases(alerts: Iterable[Mapping[str, Any]], feedback: Iterable[Mapping[str, Any]],
                   failure_reports: Iterable[Mapping[str, Any]] = ()) -> LabelledCases:
    """The failures and the nothing-found episodes the topics hold (latest label per alert, latest report per failure id;
    invalid records and labels naming no pump alert read are left out).

    >>> opened = {"kind": "pump.anomaly", "state": "OPEN", "severity": "HIGH", "model_versions": {}}
    >>> alerts = [{**opened, "alert_id": "a1", "asset_id": "p1", "ts_ms": 10, "opened_ts_ms": 10},
    ...           {**opened, "alert_id": "a2", "asset_id": "p2", "ts_ms": 20, "opened_ts_ms": 20},
    ...           {**opened, "alert_id": "a2", "asset_id": "p2", "ts_ms": 30, "opened_ts_ms": 20, "state": "CLOSE"}]
    >>> label = {"resolved_ts_ms": 40, "who": "crew", "ts_ms": 40}
    >>> feedback = [{**label, "alert_id": "a1", "asset_id": "p1", "outcome": "fault-found", "failure_ts_ms": 35},
    ...             {**label, "alert_id": "a2", "asset_id": "p2", "outcome": "nothing-found"}]
    >>> reports = [{"failure_id": "p3/90", "asset_id": "p3", "failure_ts_ms": 90, "fault": "seal", "who": "crew", "ts_ms": 95},
    ...            {"failure_id": "x", "asset_id": "p1", "failure_ts_ms": 35, "fault": "race", "who": "crew", "ts_ms": 96}]
    >>> labelled_cases(alerts, feedback, reports)
    LabelledCases(failures=(('p1', 35), ('p3', 90)), quiet=(('p2', 20, 30),))
    """
    episodes = episodes_from_alerts(alerts)
    valid = [f for f in feedback if feedback_problem(f) is None and (e := episodes.get(f["alert_id"])) is not None
             and e.asset_id == f["asset_id"]]
    labels = latest_feedback(valid)
    failures = {(label.asset_id, label.failure_ts_ms) for label in labels.values()
                if label.outcome == "fault-found" and label.failure_ts_ms is not None}
    failures |= {(r["asset_id"], r["failure_ts_ms"]) for r in latest_failure_reports(failure_reports)}
    quiet = sorted((episodes[i].asset_id, episodes[i].opened_ts_ms,
                    episodes[i].closed_ts_ms if episodes[i].closed_ts_ms is not None else math.inf)
                   for i, label in labels.items() if label.outcome == "nothing-found")
    return LabelledCases(tuple(sorted(failures)), tuple(quiet))


def judge_on_labelled(alerts: Iterable[Mapping[str, Any]], cases: LabelledCases, *, lookback_h: float | None = None) -> dict[str, Any]:
    """Recall and false alarms of a pair's replayed alerts on labelled cases: a failure is detected when one of the pair's
    episodes opened within the lookback before it (``judge_failure``); a nothing-found episode is a false alarm of the
    pair when one of its episodes overlaps it. Recall is None without failures.

    >>> opened = {"kind": "pump.anomaly", "state": "OPEN", "severity": "HIGH", "model_versions": {}}
    >>> replayed = [{**opened, "alert_id": "r1", "asset_id": "p1", "ts_ms": 5, "opened_ts_ms": 5},
    ...             {**opened, "alert_id": "r2", "asset_id": "p2", "ts_ms": 25, "opened_ts_ms": 25}]
    >>> judge_on_labelled(replayed, LabelledCases((("p1", 35), ("p3", 90)), (("p2", 20, 30.0),)))
    {'failures': 2, 'detected': 1, 'recall': 0.5, 'quiet_episodes': 1, 'false_alarms': 1}
    >>> judge_on_labelled(iter(replayed), LabelledCases((("p1", 35),), (("p2", 20, 30.0),)))["false_alarms"]
    1
    """
    episodes = list(episodes_from_alerts(alerts).values())  # read once: ``alerts`` may be a single-pass iterable
    lookback = DEFAULT_FAILURE_LOOKBACK_H if lookback_h is None else lookback_h
    detected = sum(judge_failure(asset, at_ms, episodes, lookback_h=lookback).verdict == "DETECTED" for asset, at_ms in cases.failures)
    spans = [(e.asset_id, e.opened_ts_ms, math.inf if e.closed_ts_ms is None else e.closed_ts_ms) for e in episodes]
    false_alarms = sum(any(a == asset and opened <= end and start <= closed for a, opened, closed in spans)
                       for asset, start, end in cases.quiet)
    n = len(cases.failures)
    return {"failures": n, "detected": detected, "recall": detected / n if n else None, "quiet_episodes": len(cases.quiet),
            "false_alarms": false_alarms}
