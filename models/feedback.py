"""Realised performance: alert episodes joined with the maintenance crews' delayed labels.

The alert stage publishes every state change of an episode (OPEN, UPDATE,
CLOSE) on ``alerts`` (schemas/common/Alert.v1.avsc). Days or weeks later a
crew sends an ``alerts.feedback`` record saying what it found at the pump:
``fault-found`` or ``nothing-found``. This module turns both into the numbers
that say whether the models earn their keep, per model version and per ISO
week. Nothing here reads Kafka: a stage or CLI reads the topics and hands the
records over.

Definitions (the numbers a report prints):

- **model version** of an episode: the ``"edge/cloud"`` pair from the
  ``model_versions`` map of its OPEN record. An episode needs both tiers (the
  edge flags a window, the cloud confirms it), so changing either changes
  which episodes open; the pair is what earns or loses the precision.
- **week**: the ISO week (UTC) of the episode's ``opened_ts_ms``, e.g. ``"2026-W49"``.
- **precision**: fault-found / labelled. Unlabelled episodes are counted as
  unlabelled, never as true or false; with no labels precision is None.
- **false alarms**: the nothing-found episodes.
- **asset-years**: observed exposure, the sum over assets of the time each was
  watched (``exposure[asset] = (start_ms, end_ms)``, e.g. its first and last
  window), clipped to the row's ISO week when rows are weekly; a year is
  365.25 days. The exposure is the fleet's: every model version in a row's
  week is credited the same asset-years. Where versions served different
  assets (a canary), call once per version with that version's episodes and
  exposure.
- **false alarms per asset-year**: false alarms / asset-years. A lower bound
  while some episodes are unlabelled; None when none is labelled (0.0 would
  read as "no false alarms" where nobody looked), without exposure, or with
  none observed.
- **lead time**: ``failure_ts_ms - opened_ts_ms`` in hours, for fault-found
  episodes whose feedback names a failure time; unknown (not guessed) when it
  does not. ``detections`` counts the episodes with a known lead time.
  Negative lead times are kept: the alert came after the failure (or after
  the onset, where a simulated fleet names the injected fault's onset), and
  dropping them would flatter the median.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Literal, Mapping, Sequence

from vigil.models.alerts import SEVERITIES

FEEDBACK_OUTCOMES = ("fault-found", "nothing-found")
ALERT_STATES = ("OPEN", "UPDATE", "CLOSE")
GROUPINGS = ("model_version", "week")
ALL = "all"  # model_version or week of a row that is not grouped by it
UNKNOWN_VERSION = "?"
MS_PER_HOUR = 3_600_000
MS_PER_YEAR = 365.25 * 24 * MS_PER_HOUR

Grouping = Literal["model_version", "week"]


@dataclass(frozen=True)
class Feedback:
    """One ``alerts.feedback`` record: what a crew found for one alert."""

    alert_id: str
    asset_id: str
    outcome: str  # one of FEEDBACK_OUTCOMES
    fault: str | None  # what was found, e.g. "outer_race"; free text from the crew
    note: str | None
    resolved_ts_ms: int  # when the crew closed the job
    # When the asset failed (or, for a simulated fleet, when the fault was injected);
    # None when nobody knows: lead time is then unknown, never taken from resolved_ts_ms.
    failure_ts_ms: int | None
    who: str
    ts_ms: int  # when the feedback was given; the later feedback for an alert wins

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Feedback":
        problem = feedback_problem(record)
        if problem is not None:
            raise ValueError(f"invalid feedback: {problem}")
        return cls(
            alert_id=record["alert_id"],
            asset_id=record["asset_id"],
            outcome=record["outcome"],
            fault=record.get("fault"),
            note=record.get("note"),
            resolved_ts_ms=record["resolved_ts_ms"],
            failure_ts_ms=record.get("failure_ts_ms"),
            who=record["who"],
            ts_ms=record["ts_ms"],
        )


def _is_int(value: Any) -> bool:
    # bool is an int to Python but never a timestamp
    return isinstance(value, int) and not isinstance(value, bool)


def feedback_problem(record: Mapping[str, Any]) -> str | None:
    """Why a feedback record cannot be used (the stage dead-letters with this reason); None when it can.

    >>> ok = {"alert_id": "a1", "asset_id": "pump-1", "outcome": "fault-found", "resolved_ts_ms": 2, "who": "crew-3", "ts_ms": 3}
    >>> feedback_problem(ok) is None
    True
    >>> feedback_problem({**ok, "outcome": "maybe"})
    "unknown outcome 'maybe'"
    """
    for name, reason in (("alert_id", "no alert id"), ("asset_id", "no asset id")):
        if not isinstance(record.get(name), str) or not record[name]:
            return reason
    outcome = record.get("outcome")
    if outcome not in FEEDBACK_OUTCOMES:
        return f"unknown outcome {outcome!r}"
    for name in ("resolved_ts_ms", "ts_ms", "failure_ts_ms"):
        value = record.get(name)
        if value is None:
            if name != "failure_ts_ms":
                return f"no {name}"
        elif not _is_int(value):
            return f"{name} is not an integer: {value!r}"
    if outcome == "nothing-found" and record.get("failure_ts_ms") is not None:
        # a failure time says something failed: the two cannot both be true
        return "failure_ts_ms given with outcome 'nothing-found'"
    if not isinstance(record.get("who"), str) or not record["who"]:
        return "no reporter (who)"
    for name in ("fault", "note"):
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            return f"{name} is not a string: {value!r}"
    return None


def latest_feedback(records: Iterable[Mapping[str, Any]]) -> dict[str, Feedback]:
    """The feedback that counts for each alert id: the latest by ``ts_ms``, then by arrival.

    A crew that corrects itself sends a second record; the alert is counted
    once, as the correction says. Invalid records raise ValueError (the stage
    dead-letters them before they reach a topic this reads).

    >>> base = {"alert_id": "a1", "asset_id": "pump-1", "resolved_ts_ms": 0, "who": "crew-3"}
    >>> latest = latest_feedback([{**base, "outcome": "nothing-found", "ts_ms": 5},
    ...                           {**base, "outcome": "fault-found", "ts_ms": 9}])
    >>> latest["a1"].outcome
    'fault-found'
    """
    latest: dict[str, Feedback] = {}
    for record in records:
        feedback = Feedback.from_record(record)
        previous = latest.get(feedback.alert_id)
        # >= so that of two with the same ts_ms the one that arrived later wins
        if previous is None or feedback.ts_ms >= previous.ts_ms:
            latest[feedback.alert_id] = feedback
    return latest


@dataclass
class Episode:
    """One alert episode, folded from its OPEN/UPDATE/CLOSE records."""

    alert_id: str
    asset_id: str
    kind: str
    opened_ts_ms: int
    closed_ts_ms: int | None  # None while the episode is open (or its CLOSE was not read)
    model_version: str  # "edge/cloud" of the OPEN record; see model_version_label
    severity: str  # the highest the episode reached


def model_version_label(model_versions: Mapping[str, str]) -> str:
    """The ``"edge/cloud"`` pair that raised an episode; ``?`` for a tier the record does not name.

    >>> model_version_label({"edge": "e-3", "cloud": "c-7"})
    'e-3/c-7'
    """
    return f"{model_versions.get('edge', UNKNOWN_VERSION)}/{model_versions.get('cloud', UNKNOWN_VERSION)}"


def episodes_from_alerts(records: Iterable[Mapping[str, Any]], *, kind_prefix: str | None = "pump.") -> dict[str, Episode]:
    """One episode per alert id from Alert records, in any order; replays and duplicates change nothing.

    Alert ids are deterministic, so a replayed OPEN names the episode it
    opened before. The model version is the first OPEN's (the versions that
    raised it, even if a later window was scored by a newer one); without an
    OPEN in ``records`` (retention cut it off), the earliest record's.
    ``kind_prefix`` keeps the pump episodes (the fall topology shares the
    topic); None keeps every kind.
    """
    episodes: dict[str, Episode] = {}
    # (is not OPEN, ts_ms) of the record that gave each episode its version: lower wins
    version_rank: dict[str, tuple[bool, int]] = {}
    for record in records:
        if kind_prefix is not None and not record["kind"].startswith(kind_prefix):
            continue
        state = record["state"]
        if state not in ALERT_STATES:
            raise ValueError(f"unknown alert state {state!r} for alert {record['alert_id']}")
        alert_id = record["alert_id"]
        rank = (state != "OPEN", record["ts_ms"])
        episode = episodes.get(alert_id)
        if episode is None:
            episode = episodes[alert_id] = Episode(
                alert_id=alert_id,
                asset_id=record["asset_id"],
                kind=record["kind"],
                opened_ts_ms=record["opened_ts_ms"],
                closed_ts_ms=None,
                model_version=model_version_label(record["model_versions"]),
                severity=record["severity"],
            )
            version_rank[alert_id] = rank
        elif rank < version_rank[alert_id]:
            episode.model_version = model_version_label(record["model_versions"])
            episode.opened_ts_ms = record["opened_ts_ms"]
            version_rank[alert_id] = rank
        # severity only rises within an episode; records may come out of order
        episode.severity = max(episode.severity, record["severity"], key=SEVERITIES.index)
        if state == "CLOSE" and (episode.closed_ts_ms is None or record["ts_ms"] < episode.closed_ts_ms):
            episode.closed_ts_ms = record["ts_ms"]
    return episodes


def iso_week(ts_ms: int) -> str:
    """The ISO week (UTC) of an event time, e.g. ``"2026-W49"``.

    >>> iso_week(1_764_547_200_000)  # Monday 2025-12-01 00:00 UTC
    '2025-W49'
    """
    year, week, _ = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


def week_bounds_ms(week: str) -> tuple[int, int]:
    """[start, end) of an ISO week in ms: Monday 00:00 UTC to the next Monday."""
    year, number = week.split("-W")
    monday = datetime.combine(date.fromisocalendar(int(year), int(number), 1), datetime.min.time(), tzinfo=timezone.utc)
    start = int(monday.timestamp() * 1000)
    return start, start + int(timedelta(days=7).total_seconds() * 1000)


def asset_years(exposure: Mapping[str, tuple[int, int]], within: tuple[int, int] | None = None) -> float:
    """Observed exposure: the sum over assets of the time each was watched, in years, optionally clipped to ``within``."""
    total_ms = 0
    for asset, (start, end) in exposure.items():
        if end < start:
            raise ValueError(f"exposure of {asset} ends before it starts: {start} > {end}")
        if within is not None:
            start, end = max(start, within[0]), min(end, within[1])
        total_ms += max(0, end - start)
    return total_ms / MS_PER_YEAR


@dataclass(frozen=True)
class RealisedPerformance:
    model_version: str  # "edge/cloud", or "all" when not grouped by version
    week: str  # ISO week of the episodes' opening, or "all" when not grouped by week
    episodes: int
    labelled: int
    unlabelled: int
    fault_found: int
    nothing_found: int
    precision: float | None  # fault_found / labelled; None without labels
    false_alarms: int  # the nothing-found episodes; an unlabelled one is not assumed false
    asset_years: float | None  # None without exposure
    false_alarms_per_asset_year: float | None
    detections: int  # fault-found episodes with a known lead time
    lead_times_h: tuple[float, ...]  # failure - opened, in the episodes' opening order
    median_lead_time_h: float | None


@dataclass(frozen=True)
class UnmatchedFeedback:
    """Feedback that names no episode read (or the wrong asset): not counted, for the caller to dead-letter."""

    feedback: Feedback
    reason: str


@dataclass(frozen=True)
class PerformanceReport:
    rows: list[RealisedPerformance]
    unmatched: list[UnmatchedFeedback] = field(default_factory=list)


def _row(model_version: str, week: str, episodes: Sequence[Episode], feedback: Mapping[str, Feedback],
         years: float | None) -> RealisedPerformance:
    labels = [feedback[e.alert_id] for e in episodes if e.alert_id in feedback]
    fault_found = sum(f.outcome == "fault-found" for f in labels)
    nothing_found = len(labels) - fault_found
    lead_times = tuple(
        (label.failure_ts_ms - episode.opened_ts_ms) / MS_PER_HOUR
        for episode in episodes
        if (label := feedback.get(episode.alert_id)) is not None
        and label.outcome == "fault-found" and label.failure_ts_ms is not None
    )
    return RealisedPerformance(
        model_version=model_version,
        week=week,
        episodes=len(episodes),
        labelled=len(labels),
        unlabelled=len(episodes) - len(labels),
        fault_found=fault_found,
        nothing_found=nothing_found,
        precision=fault_found / len(labels) if labels else None,
        false_alarms=nothing_found,
        asset_years=years,
        false_alarms_per_asset_year=nothing_found / years if years and labels else None,
        detections=len(lead_times),
        lead_times_h=lead_times,
        median_lead_time_h=statistics.median(lead_times) if lead_times else None,
    )


def realised_performance(
    episodes: Mapping[str, Episode] | Iterable[Episode],
    feedback: Mapping[str, Feedback],
    *,
    exposure: Mapping[str, tuple[int, int]] | None = None,
    by: Sequence[Grouping] = ("model_version", "week"),
) -> PerformanceReport:
    """Precision, false alarms per asset-year and lead times per group (see the module docstring).

    ``feedback`` is ``latest_feedback(...)``: one label per alert id. Rows come
    for groups with at least one episode, sorted by (model_version, week);
    feedback for an alert id not in ``episodes``, or for another asset than
    the episode's, comes back in ``unmatched`` and is not counted.

    >>> day_ms = 24 * MS_PER_HOUR
    >>> episodes = [Episode("a1", "pump-1", "pump.anomaly", 0, None, "e1/c1", "HIGH"),
    ...             Episode("a2", "pump-2", "pump.anomaly", day_ms, None, "e1/c1", "LOW")]
    >>> base = {"who": "crew-3", "resolved_ts_ms": 9 * day_ms, "ts_ms": 9 * day_ms}
    >>> labels = latest_feedback([{**base, "alert_id": "a1", "asset_id": "pump-1", "outcome": "fault-found", "failure_ts_ms": 2 * day_ms},
    ...                           {**base, "alert_id": "a2", "asset_id": "pump-2", "outcome": "nothing-found"},
    ...                           {**base, "alert_id": "zz", "asset_id": "pump-9", "outcome": "nothing-found"}])
    >>> report = realised_performance(episodes, labels, by=("model_version",))
    >>> row = report.rows[0]
    >>> row.model_version, row.week, row.precision, row.false_alarms, row.lead_times_h
    ('e1/c1', 'all', 0.5, 1, (48.0,))
    >>> [u.reason for u in report.unmatched]
    ['unknown alert id']
    """
    unknown = set(by) - set(GROUPINGS)
    if unknown or not by:
        raise ValueError(f"by must name some of {GROUPINGS}, got {tuple(by)}")
    episode_list = list(episodes.values()) if isinstance(episodes, Mapping) else list(episodes)
    known = {e.alert_id: e for e in episode_list}
    unmatched: list[UnmatchedFeedback] = []
    counted: dict[str, Feedback] = {}
    for alert_id, label in feedback.items():
        episode = known.get(alert_id)
        if episode is None:
            unmatched.append(UnmatchedFeedback(label, "unknown alert id"))
        elif label.asset_id != episode.asset_id:
            # a typo in either id would otherwise credit the wrong pump's alert
            unmatched.append(UnmatchedFeedback(label, f"asset mismatch: alert {alert_id} is for {episode.asset_id}, feedback names {label.asset_id}"))
        else:
            counted[alert_id] = label
    groups: dict[tuple[str, str], list[Episode]] = defaultdict(list)
    for episode in sorted(episode_list, key=lambda e: (e.opened_ts_ms, e.alert_id)):
        version = episode.model_version if "model_version" in by else ALL
        week = iso_week(episode.opened_ts_ms) if "week" in by else ALL
        groups[(version, week)].append(episode)
    rows = []
    for (version, week), members in sorted(groups.items()):
        years = None
        if exposure is not None:
            years = asset_years(exposure, week_bounds_ms(week) if week != ALL else None)
        rows.append(_row(version, week, members, counted, years))
    return PerformanceReport(rows, unmatched)


def totals(rows: Iterable[RealisedPerformance], *, exposure: Mapping[str, tuple[int, int]] | None = None) -> list[RealisedPerformance]:
    """One row per model version over all its rows (week ``"all"``), counts summed and ratios recomputed.

    The rate needs the whole exposure, not the weeks that happen to have an
    episode (a quiet week is exposure without false alarms, and weekly rows
    only exist for weeks with episodes), so asset-years come from
    ``exposure`` over its full span, and are None without it.
    """
    merged: dict[str, list[RealisedPerformance]] = defaultdict(list)
    for row in rows:
        merged[row.model_version].append(row)
    years = asset_years(exposure) if exposure is not None else None
    out = []
    for version, group in sorted(merged.items()):
        labelled = sum(r.labelled for r in group)
        fault_found = sum(r.fault_found for r in group)
        nothing_found = sum(r.nothing_found for r in group)
        lead_times = tuple(t for r in group for t in r.lead_times_h)
        out.append(RealisedPerformance(
            model_version=version,
            week=ALL,
            episodes=sum(r.episodes for r in group),
            labelled=labelled,
            unlabelled=sum(r.unlabelled for r in group),
            fault_found=fault_found,
            nothing_found=nothing_found,
            precision=fault_found / labelled if labelled else None,
            false_alarms=sum(r.false_alarms for r in group),
            asset_years=years,
            false_alarms_per_asset_year=nothing_found / years if years and labelled else None,
            detections=sum(r.detections for r in group),
            lead_times_h=lead_times,
            median_lead_time_h=statistics.median(lead_times) if lead_times else None,
        ))
    return out


# A pump alert episode that opened this long before a failure (or less) was its warning.
DEFAULT_FAILURE_LOOKBACK_H = 30 * 24.0
FAILURE_VERDICTS = ("DETECTED", "MISSED")


def failure_id_for(asset_id: str, failure_ts_ms: int) -> str:
    """The id of a failure report that names none: one failure of one asset at one time.

    >>> failure_id_for("pump-7", 1_700_000_000_000)
    'pump-7/1700000000000'
    """
    return f"{asset_id}/{failure_ts_ms}"


def failure_problem(record: Mapping[str, Any]) -> str | None:
    """Why a failure report cannot be judged (the stage dead-letters with this reason); None when it can.

    >>> ok = {"failure_id": "p/5", "asset_id": "p", "failure_ts_ms": 5, "fault": "seal_leak", "who": "crew-3", "ts_ms": 9}
    >>> failure_problem(ok) is None
    True
    >>> failure_problem({**ok, "fault": ""})
    'no fault named'
    """
    for name, reason in (("failure_id", "no failure id"), ("asset_id", "no asset id"), ("fault", "no fault named"),
                         ("who", "no reporter (who)")):
        if not isinstance(record.get(name), str) or not record[name]:
            return reason
    for name in ("failure_ts_ms", "ts_ms"):
        if not _is_int(record.get(name)):
            return f"{name} is not an integer: {record.get(name)!r}"
    for name in ("note", "model_version"):
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            return f"{name} is not a string: {value!r}"
    return None


def latest_failure_reports(reports: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The report that counts per failure id (the latest by ``ts_ms``, then by arrival; invalid ones left out), in
    failure-time order.

    >>> r = {"asset_id": "p", "failure_ts_ms": 5, "fault": "seal", "who": "crew"}
    >>> [(x["failure_id"], x["ts_ms"]) for x in latest_failure_reports([{**r, "failure_id": "b", "ts_ms": 9},
    ...     {**r, "failure_id": "b", "ts_ms": 7}, {**r, "failure_id": "a", "ts_ms": 8}, {**r, "failure_id": "c", "ts_ms": "x"}])]
    [('a', 8), ('b', 9)]
    """
    latest: dict[str, Mapping[str, Any]] = {}
    for report in reports:
        known = latest.get(report.get("failure_id"))
        if failure_problem(report) is None and (known is None or report["ts_ms"] >= known["ts_ms"]):
            latest[report["failure_id"]] = report
    return sorted(latest.values(), key=lambda r: (r["failure_ts_ms"], r["failure_id"]))


@dataclass(frozen=True)
class FailureJudgement:
    verdict: str  # one of FAILURE_VERDICTS
    alert_ids: tuple[str, ...]  # the warning episodes, earliest first
    lead_time_h: float | None  # failure - the earliest warning's opening; None when missed
    model_version: str  # the earliest warning's "edge/cloud"; when missed, the version the report names


def judge_failure(asset_id: str, failure_ts_ms: int, episodes: Iterable[Episode], *,
                  lookback_h: float = DEFAULT_FAILURE_LOOKBACK_H, reported_version: str | None = None) -> FailureJudgement:
    """DETECTED when a pump episode of ``asset_id`` opened within ``lookback_h`` before the failure (or at it), else MISSED.

    An episode opened after the failure is no warning of it; one that opened earlier than the lookback warned of
    something else. A missed failure is charged to the version the report names (the one serving when it failed).

    >>> opened = lambda i, h: Episode(i, "pump-1", "pump.anomaly", int(h * MS_PER_HOUR), None, "e1/c1", "HIGH")
    >>> judge_failure("pump-1", 100 * MS_PER_HOUR, [opened("late", 101), opened("a2", 40), opened("a1", 10)])
    FailureJudgement(verdict='DETECTED', alert_ids=('a1', 'a2'), lead_time_h=90.0, model_version='e1/c1')
    >>> judge_failure("pump-1", 100 * MS_PER_HOUR, [opened("old", 10)], lookback_h=48, reported_version="e2/c2")
    FailureJudgement(verdict='MISSED', alert_ids=(), lead_time_h=None, model_version='e2/c2')
    """
    if lookback_h <= 0:
        raise ValueError(f"lookback_h must be > 0, got {lookback_h}")
    since_ms = failure_ts_ms - lookback_h * MS_PER_HOUR
    warnings = sorted((e for e in episodes if e.asset_id == asset_id and since_ms <= e.opened_ts_ms <= failure_ts_ms),
                      key=lambda e: (e.opened_ts_ms, e.alert_id))
    if not warnings:
        return FailureJudgement("MISSED", (), None, reported_version or f"{UNKNOWN_VERSION}/{UNKNOWN_VERSION}")
    first = warnings[0]
    return FailureJudgement("DETECTED", tuple(e.alert_id for e in warnings), (failure_ts_ms - first.opened_ts_ms) / MS_PER_HOUR,
                            first.model_version)


def current_verdicts(verdicts: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The current FailureVerdict per failure id (its highest revision), in failure-time order.

    >>> v = {"failure_id": "f1", "failure_ts_ms": 5}
    >>> [(x["failure_id"], x["revision"]) for x in current_verdicts([{**v, "revision": 1}, {**v, "revision": 0},
    ...                                                               {**v, "failure_id": "f0", "revision": 0}])]
    [('f0', 0), ('f1', 1)]
    """
    latest: dict[str, Mapping[str, Any]] = {}
    for verdict in verdicts:
        known = latest.get(verdict["failure_id"])
        if known is None or verdict["revision"] >= known["revision"]:
            latest[verdict["failure_id"]] = verdict
    return sorted(latest.values(), key=lambda v: (v["failure_ts_ms"], v["failure_id"]))
