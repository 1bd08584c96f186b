"""Realised performance read back from the topics: alert episodes, the crews' labels, reported failures and each pump's exposure.

The numbers and their definitions are ``vigil.models.feedback``'s; `vigil report models` and the demo show them.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from vigil.models.feedback import (
    RealisedPerformance,
    episodes_from_alerts,
    feedback_problem,
    judge_failure,
    latest_failure_reports,
    latest_feedback,
    realised_performance,
    totals,
)
from vigil.streams.lifecycle.control import read_records
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import ALERTS, ALERTS_FEEDBACK, MAINTENANCE_FAILURES, PUMP_TRENDS


def exposure_from_trends(trends: list[dict[str, Any]], since_ms: int, until_ms: int) -> dict[str, tuple[int, int]]:
    """Per pump the span from its first trend hour's start to its last one's end, clipped to [since_ms, until_ms].

    >>> exposure_from_trends([{"asset_id": "p1", "hour_start_ms": 0, "hour_end_ms": 3_600_000},
    ...                       {"asset_id": "p1", "hour_start_ms": 7_200_000, "hour_end_ms": 10_800_000}], 1_000, 10**12)
    {'p1': (1000, 10800000)}
    """
    spans: dict[str, tuple[int, int]] = {}
    for t in trends:
        start, end = spans.get(t["asset_id"], (t["hour_start_ms"], t["hour_end_ms"]))
        spans[t["asset_id"]] = (min(start, t["hour_start_ms"]), max(end, t["hour_end_ms"]))
    clipped = {asset: (max(start, since_ms), min(end, until_ms)) for asset, (start, end) in spans.items()}
    return {asset: span for asset, span in sorted(clipped.items()) if span[1] > span[0]}


def judged_failures(reports: list[dict[str, Any]], episodes: Any, *, since_ms: int, until_ms: int) -> list[dict[str, Any]]:
    """Each failure reported within [since_ms, until_ms) (the latest report per failure id; invalid ones left out) judged
    against every episode read, as the label stage judges it; in failure-time order."""
    out = []
    for report in latest_failure_reports(reports):
        if since_ms <= report["failure_ts_ms"] < until_ms:
            judged = judge_failure(report["asset_id"], report["failure_ts_ms"], episodes, reported_version=report.get("model_version"))
            out.append({"failure_id": report["failure_id"], "asset_id": report["asset_id"], "failure_ts_ms": report["failure_ts_ms"],
                        "fault": report["fault"], **dataclasses.asdict(judged), "alert_ids": list(judged.alert_ids)})
    return out


def model_report(alerts: list[dict[str, Any]], feedback: list[dict[str, Any]], trends: list[dict[str, Any]], *,
                 since_ms: int, until_ms: int, failures: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The report from the topics' records: rows per (model version, ISO week), totals per version, counts of
    feedback records that name no pump alert read ("unmatched", a wrong asset included) or are invalid, and the
    failures reported in the range, each DETECTED or MISSED, with the missed ones counted per model version.

    >>> alert = {"alert_id": "a1", "asset_id": "p1", "kind": "pump.anomaly", "state": "OPEN", "ts_ms": 10, "opened_ts_ms": 10,
    ...          "severity": "HIGH", "model_versions": {"edge": "e1", "cloud": "c1"}}
    >>> label = {"alert_id": "a1", "asset_id": "p1", "outcome": "fault-found", "resolved_ts_ms": 20, "who": "crew-3", "ts_ms": 20}
    >>> report = model_report([alert], [label, {**label, "alert_id": "zz"}], [], since_ms=0, until_ms=100)
    >>> [(r["model_version"], r["week"], r["labelled"], r["precision"]) for r in report["rows"]], report["unmatched"]
    ([('e1/c1', '1970-W01', 1, 1.0)], 1)
    """
    every_episode = episodes_from_alerts(alerts)
    valid = [f for f in feedback if feedback_problem(f) is None]
    # Matched against every episode read, not only the recent ones: a label for an older episode is not unmatched.
    matched = [f for f in valid if (e := every_episode.get(f["alert_id"])) is not None and e.asset_id == f["asset_id"]]
    episodes = {i: e for i, e in every_episode.items() if since_ms <= e.opened_ts_ms < until_ms}
    labels = {i: label for i, label in latest_feedback(matched).items() if i in episodes}
    exposure = exposure_from_trends(trends, since_ms, until_ms)
    report = realised_performance(episodes, labels, exposure=exposure)
    judged = judged_failures(failures or [], every_episode.values(), since_ms=since_ms, until_ms=until_ms)
    missed: dict[str, int] = {}
    for failure in judged:
        if failure["verdict"] == "MISSED":
            missed[failure["model_version"]] = missed.get(failure["model_version"], 0) + 1
    return {
        "since_ms": since_ms,
        "until_ms": until_ms,
        "rows": [_json(r) for r in report.rows],
        "totals": [_json(r) for r in totals(report.rows, exposure=exposure)],
        "unmatched": len(valid) - len(matched),
        "invalid": len(feedback) - len(valid),
        "assets_observed": len(exposure),
        "failures": judged,
        "missed_failures": missed,
    }


def _json(row: RealisedPerformance) -> dict[str, Any]:
    return {**dataclasses.asdict(row), "lead_times_h": list(row.lead_times_h)}




def report_from_topics(settings: Settings, codec: AvroCodec, *, since_ms: int, until_ms: int) -> dict[str, Any]:
    """``model_report`` over what ``alerts``, ``alerts.feedback``, ``maintenance.failures`` and ``pump.trends`` hold now, with the
    undecodable records counted."""
    alerts, bad_alerts = read_records(settings, codec, ALERTS)
    feedback, bad_feedback = read_records(settings, codec, ALERTS_FEEDBACK)
    failures, bad_failures = read_records(settings, codec, MAINTENANCE_FAILURES)
    trends, _ = read_records(settings, codec, PUMP_TRENDS)
    return {**model_report(alerts, feedback, trends, since_ms=since_ms, until_ms=until_ms, failures=failures),
            "undecodable": bad_alerts + bad_feedback + bad_failures}
