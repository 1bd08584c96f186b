"""The demo's monitoring story: changes injected into the fleet, a simulated maintenance crew, and what the stages found.

The simulated fleet gets a duty-point step on a fifth of its healthy pumps
mid-week and flat-lined sensors on two others (``vigil.models.simulate.inject_changes``).
Once the cascade has caught up, a crew labels every pump alert episode as
maintenance would (fault found on the pumps developing a bearing fault, with
the simulated failure time; nothing found elsewhere) through the same path as
``vigil alerts resolve``, and reports each pump's failure through the path of
``vigil failures report``: the pumps that developed a fault, and a coupling
failure a quarter into the run on a healthy pump that had not alerted by then,
which the simulated vibration carries no sign of, so the report shows what a
MISSED verdict looks like.
Then everything is read back from the topics: ``ops.drift`` and
``ops.quality`` folded into findings (assets, features or checks named,
opened and closed), how long after each injected change its first finding
opened, the realised performance per model version, and each failure's
verdict from ``ops.failures``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from vigil.models.feedback import current_verdicts
from vigil.streams.lifecycle.control import read_records
from vigil.streams.ops.labels import failure_record, feedback_record, send_failure_reports, send_feedback_records
from vigil.streams.ops.performance import report_from_topics
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import ALERTS_LABELLED, OPS_DRIFT, OPS_DRIFT_WINDOWS, OPS_FAILURES, OPS_QUALITY, OPS_QUALITY_WINDOWS

HOUR_MS, DAY_MS = 3_600_000, 86_400_000
CREW = "demo-crew"


@dataclass(frozen=True)
class InjectedChange:
    asset_id: str
    change: str  # duty_point or stuck_sensor
    at_ms: int
    detail: str


def fold_findings(records: Iterable[Mapping[str, Any]], *, named: str) -> list[dict[str, Any]]:
    """OPEN/UPDATE/CLOSE records of ``ops.drift`` or ``ops.quality`` -> one finding each, in opening order.

    ``named``: "features" (drift: every feature an OPEN or UPDATE named, with its largest KL) or "check" (quality).

    >>> rows = fold_findings([
    ...     {"finding_id": "f1", "scope": "asset", "asset_id": "p1", "state": "OPEN", "opened_ts_ms": 5, "window_end_ms": 5,
    ...      "assets": ["p1"], "features": [{"feature": "rms_g", "kl": 0.9, "drifted": True}]},
    ...     {"finding_id": "f1", "scope": "asset", "asset_id": "p1", "state": "CLOSE", "opened_ts_ms": 5, "window_end_ms": 9,
    ...      "assets": ["p1"], "features": [{"feature": "rms_g", "kl": 0.1, "drifted": False}]}], named="features")
    >>> [(r["finding_id"], r["named"], r["opened_ms"], r["closed_ms"]) for r in rows]
    [('f1', {'rms_g': 0.9}, 5, 9)]
    """
    findings: dict[str, dict[str, Any]] = {}
    for r in records:
        f = findings.setdefault(r["finding_id"], {
            "finding_id": r["finding_id"], "scope": r["scope"], "asset_id": r["asset_id"], "assets": set(),
            "named": {} if named == "features" else r["check"], "opened_ms": r["opened_ts_ms"], "closed_ms": None,
            # when the stage could say so: the end of the window that opened it (a quality finding's opened_ms is its start)
            "found_ms": r["window_end_ms"],
            **{k: r[k] for k in ("kind", "feature_set", "window", "model_version", "topology", "stream") if k in r}})
        f["assets"] |= set(r["assets"])
        if r["state"] == "CLOSE":
            f["closed_ms"] = r["window_end_ms"]
        elif named == "features":
            for s in r["features"]:
                if s["drifted"]:
                    f["named"][s["feature"]] = round(max(f["named"].get(s["feature"], 0.0), s["kl"]), 3)
    rows = sorted(findings.values(), key=lambda f: (f["opened_ms"], f["finding_id"]))
    return [{**f, "assets": sorted(f["assets"])} for f in rows]


def time_to_finding(injected: Sequence[InjectedChange], drift: Sequence[Mapping[str, Any]],
                    quality: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each injected change, in event hours after it: the first finding naming its pump, and the first fleet finding
    (counted to the end of the window that opened it: when the stage could tell).

    A duty-point step is found by drift, a stuck sensor by data quality. A fleet finding judged on an hour of
    the whole fleet can open before any one pump has enough captures to name.
    """
    rows = []
    for change in injected:
        pool = drift if change.change == "duty_point" else quality
        after = [f for f in pool if f["found_ms"] > change.at_ms]
        own = min((f for f in after if change.asset_id in f["assets"]), key=lambda f: f["found_ms"], default=None)
        fleet = min((f for f in after if f["scope"] == "fleet" and f.get("kind", "feature") == "feature"),
                    key=lambda f: f["found_ms"], default=None)

        def hours(f: Mapping[str, Any] | None) -> float | None:
            return None if f is None else round((f["found_ms"] - change.at_ms) / HOUR_MS, 1)

        rows.append({"asset_id": change.asset_id, "change": change.change, "at_ms": change.at_ms,
                     "found_by": None if own is None else own["finding_id"], "hours_to_finding": hours(own),
                     "fleet_finding": None if fleet is None else fleet["finding_id"], "hours_to_fleet_finding": hours(fleet)})
    return rows


class DemoMonitoring:
    def __init__(self, settings: Settings, codec: AvroCodec, injected: Sequence[InjectedChange]) -> None:
        self.settings, self.codec, self.injected = settings, codec, list(injected)
        self.labels_sent = 0
        self.failures_reported = 0

    def resolve_alerts(self, episodes: Iterable[Any], failures: Mapping[str, tuple[str | None, int | None]],
                       timeout_s: float = 60.0) -> int:
        """Labels every pump alert episode once, as a crew would after inspecting the pump; waits until the label stage has them.

        ``failures``: asset -> (fault kind, failure time) of the pumps developing a fault (None, None elsewhere).
        """
        now_ms = int(time.time() * 1000)
        records = []
        for e in episodes:
            fault, failure_ms = failures.get(e.asset_id, (None, None))
            alert = {"alert_id": e.alert_id, "asset_id": e.asset_id}
            if fault is not None:
                records.append(feedback_record(alert, "fault-found", who=CREW, now_ms=now_ms, fault=f"{fault}_race",
                                               failure_ts_ms=failure_ms, note="bearing replaced"))
            else:
                records.append(feedback_record(alert, "nothing-found", who=CREW, now_ms=now_ms, note="inspected, no defect"))
        if records:
            send_feedback_records(self.settings, self.codec, records)
        self.labels_sent = len(records)
        return self._wait_for(ALERTS_LABELLED, "alert_id", {r["alert_id"] for r in records}, timeout_s,
                              accept=lambda r: r["outcome"] is not None)

    def unannounced_failure(self, assets: Sequence[Any], first_alert_ms: Mapping[str, int], start_ms: int,
                            end_ms: int) -> tuple[str, int] | None:
        """(asset, time) of the demo's unannounced failure: a quarter into the run, before the injected changes, on the first
        pump with no fault and no alert opened before then, one without an injected change if there is one (None when
        there is no such pump)."""
        at_ms = start_ms + (end_ms - start_ms) // 4
        changed = {c.asset_id for c in self.injected}
        quiet = sorted((a.asset_id in changed, a.asset_id) for a in assets
                       if not a.fault and first_alert_ms.get(a.asset_id, end_ms + 1) > at_ms)
        return (quiet[0][1], at_ms) if quiet else None

    def report_failures(self, failed: Sequence[tuple[str, str, int]], serving_version_at: Any, *, unannounced: tuple[str, int] | None,
                        timeout_s: float = 60.0) -> int:
        """Reports ``failed`` (asset, fault, failure time) and, when given, an ``unannounced`` (asset, time) coupling failure;
        waits until ops.failures has a verdict on each. ``serving_version_at(asset, ms)``: the pair that served the pump then."""
        now_ms = int(time.time() * 1000)
        reports = [failure_record(asset, at_ms, f"{fault}_race", who=CREW, now_ms=now_ms, note="bearing failed",
                                  model_version=serving_version_at(asset, at_ms)) for asset, fault, at_ms in failed]
        if unannounced is not None:
            asset, at_ms = unannounced
            reports.append(failure_record(asset, at_ms, "coupling", who=CREW, now_ms=now_ms, model_version=serving_version_at(asset, at_ms),
                                          note="coupling sheared; the simulated data carries no sign of it"))
        if reports:
            send_failure_reports(self.settings, self.codec, reports)
        self.failures_reported = len(reports)
        return self._wait_for(OPS_FAILURES, "failure_id", {r["failure_id"] for r in reports}, timeout_s)

    def _wait_for(self, topic: str, id_field: str, ids: set[str], timeout_s: float,
                  accept: Any = lambda record: True) -> int:
        """Until ``topic`` holds an accepted record for each of ``ids`` (by ``id_field``) or the timeout; how many it holds."""
        wanted, deadline = set(ids), time.monotonic() + timeout_s
        while wanted and time.monotonic() < deadline:
            wanted -= {r[id_field] for r in read_records(self.settings, self.codec, topic)[0] if accept(r)}
            if wanted:
                time.sleep(1.0)
        return len(ids) - len(wanted)

    def wait_for_fleet_stages(self, scrape: Any, timeout_s: float = 60.0) -> bool:
        """Until the fleet stages have consumed every summary now on ``ops.*.windows`` (by their records-in counters)."""
        from vigil.streams.lifecycle.control import read_to_end

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            samples = scrape() or {}
            done = all(samples.get(f'vigil_records_in_total{{stage="{stage}"}}', 0.0) >= len(read_to_end(self.settings, topic))
                       for stage, topic in ((f"{OPS_DRIFT}.fleet", OPS_DRIFT_WINDOWS), (f"{OPS_QUALITY}.fleet", OPS_QUALITY_WINDOWS)))
            if done:
                return True
            time.sleep(1.0)
        return False

    def summary(self, start_ms: int, end_ms: int) -> dict[str, Any]:
        """The demo's ``drift_findings``, ``quality_findings``, ``injected``, ``time_to_finding``, ``realised``, ``failures`` (the
        current verdict on each reported failure, from ops.failures) and ``missed_failures`` (per model version)."""
        drift = fold_findings(read_records(self.settings, self.codec, OPS_DRIFT)[0], named="features")
        quality = fold_findings(read_records(self.settings, self.codec, OPS_QUALITY)[0], named="check")
        report = report_from_topics(self.settings, self.codec, since_ms=start_ms, until_ms=end_ms + 1)
        return {
            "injected": [{"asset_id": c.asset_id, "change": c.change, "at_ms": c.at_ms, "detail": c.detail} for c in self.injected],
            "drift_findings": drift,
            "quality_findings": quality,
            "time_to_finding": time_to_finding(self.injected, drift, quality),
            "labels_sent": self.labels_sent,
            "realised": [{k: t[k] for k in ("model_version", "episodes", "labelled", "unlabelled", "fault_found", "nothing_found",
                                            "precision", "false_alarms", "false_alarms_per_asset_year", "detections",
                                            "median_lead_time_h")} for t in report["totals"]],
            "failures_reported": self.failures_reported,
            "failures": [{k: v[k] for k in ("failure_id", "asset_id", "failure_ts_ms", "fault", "verdict", "alert_ids", "lead_time_h",
                                            "model_version", "revision")}
                         for v in current_verdicts(read_records(self.settings, self.codec, OPS_FAILURES)[0])],
            "missed_failures": report["missed_failures"],
        }
