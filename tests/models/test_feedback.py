import pytest

from vigil.models.feedback import (
    Episode,
    Feedback,
    episodes_from_alerts,
    feedback_problem,
    iso_week,
    latest_feedback,
    realised_performance,
    totals,
)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
W49 = 1_795_996_800_000  # Monday 2026-11-30 00:00 UTC, the start of 2026-W49
W50 = W49 + 7 * DAY_MS
A, B = "e1/c1", "e2/c1"


def alert(alert_id, asset_id, state, ts_ms, opened_ts_ms, edge="e1", cloud="c1", severity="LOW", kind="pump.anomaly"):
    """An Alert record (schemas/common/Alert.v1.avsc) with the fields episodes are folded from filled in."""
    return {
        "alert_id": alert_id, "asset_id": asset_id, "kind": kind, "state": state, "severity": severity,
        "ts_ms": ts_ms, "opened_ts_ms": opened_ts_ms, "first_seq": 0, "first_stream": "vibration/x",
        "last_seq": 0, "last_stream": "vibration/x", "confirmations": 3, "edge_score": 0.9, "cloud_score": 9.0,
        "model_versions": {"edge": edge, "cloud": cloud}, "top_features": {}, "diagnosis": None, "detail": "",
    }


def label(alert_id, asset_id, outcome, failure_ts_ms=None, ts_ms=W50 + 14 * DAY_MS, **extra):
    return {"alert_id": alert_id, "asset_id": asset_id, "outcome": outcome, "fault": None, "note": None,
            "resolved_ts_ms": ts_ms, "failure_ts_ms": failure_ts_ms, "who": "crew-3", "ts_ms": ts_ms, **extra}


def fleet_alerts():
    """6 pump episodes over 2026-W49/W50 from two edge versions, with UPDATEs, CLOSEs, a replay and a fall alert."""
    a1, a2, a3 = W49 + 10 * HOUR_MS, W49 + DAY_MS, W50 + DAY_MS
    b1, b2, b3 = W49 + 2 * DAY_MS, W50, W50 + 3 * DAY_MS
    return [
        alert("a1", "pump-1", "OPEN", a1, a1),
        alert("a1", "pump-1", "UPDATE", a1 + HOUR_MS, a1, severity="HIGH", edge="e2"),  # scored by e2 after a rollout
        alert("a1", "pump-1", "CLOSE", a1 + 5 * HOUR_MS, a1, severity="HIGH", edge="e2"),
        alert("a2", "pump-2", "OPEN", a2, a2),
        alert("a2", "pump-2", "CLOSE", a2 + 2 * HOUR_MS, a2),
        alert("a3", "pump-3", "OPEN", a3, a3),
        alert("b1", "pump-1", "OPEN", b1, b1, edge="e2"),
        alert("a2", "pump-2", "OPEN", a2, a2),  # replayed
        alert("b2", "pump-2", "OPEN", b2, b2, edge="e2", severity="MEDIUM"),
        alert("b3", "pump-4", "OPEN", b3, b3, edge="e2"),
        alert("f1", "wearer-1", "OPEN", b3, b3, kind="fall.emergency"),
    ]


def fleet_feedback():
    # 4 labelled: a1, b1, b2 fault-found with failure times (lead 48 h, 12 h, 30 h), a2 nothing-found; a3, b3 unlabelled
    return [
        label("a1", "pump-1", "fault-found", failure_ts_ms=W49 + 58 * HOUR_MS, fault="outer_race"),
        label("a2", "pump-2", "nothing-found", note="bearing fine, loose guard"),
        label("b1", "pump-1", "fault-found", failure_ts_ms=W49 + 2 * DAY_MS + 12 * HOUR_MS),
        label("b2", "pump-2", "fault-found", failure_ts_ms=W50 + 30 * HOUR_MS),
    ]


# pumps 1-3 watched through both weeks; pump-4 joined at the start of W50
EXPOSURE = {"pump-1": (W49, W50 + 7 * DAY_MS), "pump-2": (W49, W50 + 7 * DAY_MS),
            "pump-3": (W49, W50 + 7 * DAY_MS), "pump-4": (W50, W50 + 7 * DAY_MS)}


def test_weeks_are_iso_weeks_in_utc():
    assert iso_week(W49) == "2026-W49"
    assert iso_week(W49 - 1) == "2026-W48"  # Sunday 23:59:59.999
    assert iso_week(1_798_761_600_000) == "2026-W53"  # Friday 2027-01-01 belongs to 2026's last week


def test_episodes_fold_states_and_keep_the_opening_version():
    episodes = episodes_from_alerts(fleet_alerts())
    assert sorted(episodes) == ["a1", "a2", "a3", "b1", "b2", "b3"]  # the fall alert is not a pump's
    assert episodes["a1"] == Episode("a1", "pump-1", "pump.anomaly", W49 + 10 * HOUR_MS, W49 + 15 * HOUR_MS, A, "HIGH")
    assert episodes["a3"].closed_ts_ms is None
    assert episodes["b2"].model_version == B and episodes["b2"].severity == "MEDIUM"
    assert "f1" in episodes_from_alerts(fleet_alerts(), kind_prefix=None)


def test_a_replayed_open_does_not_make_a_second_episode():
    records = fleet_alerts()
    once = episodes_from_alerts(records)
    assert episodes_from_alerts(records + records) == once
    assert episodes_from_alerts(list(reversed(records))) == once  # order does not matter either
    only_update_then_open = [alert("x", "pump-9", "UPDATE", 20, 10, edge="e2", severity="HIGH"), alert("x", "pump-9", "OPEN", 10, 10)]
    (episode,) = episodes_from_alerts(only_update_then_open).values()
    assert (episode.model_version, episode.severity, episode.opened_ts_ms) == (A, "HIGH", 10)


def test_realised_performance_per_version_and_week():
    report = realised_performance(episodes_from_alerts(fleet_alerts()), latest_feedback(fleet_feedback()), exposure=EXPOSURE)
    rows = {(r.model_version, r.week): r for r in report.rows}
    assert list(rows) == [(A, "2026-W49"), (A, "2026-W50"), (B, "2026-W49"), (B, "2026-W50")]
    assert report.unmatched == []

    a49 = rows[(A, "2026-W49")]
    assert (a49.episodes, a49.labelled, a49.unlabelled, a49.fault_found, a49.nothing_found) == (2, 2, 0, 1, 1)
    assert a49.precision == 0.5 and a49.false_alarms == 1
    assert a49.lead_times_h == (48.0,) and a49.detections == 1 and a49.median_lead_time_h == 48.0
    # 3 pumps x 7 days watched in W49 (pump-4 not yet): 1 false alarm per 21 asset-days
    assert a49.asset_years == pytest.approx(21 / 365.25)
    assert a49.false_alarms_per_asset_year == pytest.approx(365.25 / 21)  # 17.39

    a50 = rows[(A, "2026-W50")]
    assert (a50.episodes, a50.labelled, a50.unlabelled, a50.precision) == (1, 0, 1, None)
    assert a50.asset_years == pytest.approx(28 / 365.25)
    assert a50.false_alarms_per_asset_year is None  # nobody looked: not "no false alarms"
    assert a50.lead_times_h == () and a50.median_lead_time_h is None

    b49 = rows[(B, "2026-W49")]
    assert (b49.episodes, b49.fault_found, b49.precision, b49.lead_times_h) == (1, 1, 1.0, (12.0,))
    assert b49.false_alarms_per_asset_year == 0.0

    b50 = rows[(B, "2026-W50")]
    assert (b50.episodes, b50.labelled, b50.unlabelled, b50.fault_found, b50.precision) == (2, 1, 1, 1, 1.0)
    assert b50.lead_times_h == (30.0,)


def test_totals_per_version_use_the_whole_exposure():
    report = realised_performance(episodes_from_alerts(fleet_alerts()), latest_feedback(fleet_feedback()), exposure=EXPOSURE)
    a, b = totals(report.rows, exposure=EXPOSURE)
    assert (a.model_version, a.week, a.episodes, a.labelled, a.unlabelled, a.precision) == (A, "all", 3, 2, 1, 0.5)
    # 3 pumps x 14 days + pump-4 x 7 days = 49 asset-days
    assert a.asset_years == pytest.approx(49 / 365.25)
    assert a.false_alarms_per_asset_year == pytest.approx(365.25 / 49)  # 7.45
    assert (b.model_version, b.episodes, b.fault_found, b.precision) == (B, 3, 2, 1.0)
    assert b.lead_times_h == (12.0, 30.0) and b.detections == 2 and b.median_lead_time_h == 21.0
    assert totals(report.rows)[0].asset_years is None  # without the exposure, no rate rather than a wrong one
    # grouping by version alone gives the same totals
    by_version = realised_performance(episodes_from_alerts(fleet_alerts()), latest_feedback(fleet_feedback()),
                                      exposure=EXPOSURE, by=("model_version",))
    assert by_version.rows == [a, b]


def test_the_later_feedback_for_an_alert_wins_and_counts_once():
    first = label("a2", "pump-2", "nothing-found", ts_ms=W50)
    second = label("a2", "pump-2", "fault-found", failure_ts_ms=W49 + 2 * DAY_MS, ts_ms=W50 + DAY_MS)
    latest = latest_feedback([first, second])
    assert latest["a2"].outcome == "fault-found"
    assert latest_feedback([second, first]) == latest  # by ts_ms, not by arrival
    same_time = label("a2", "pump-2", "nothing-found", ts_ms=W50 + DAY_MS)
    assert latest_feedback([second, same_time])["a2"].outcome == "nothing-found"  # a tie goes to the later arrival

    episodes = episodes_from_alerts(fleet_alerts())
    (row,) = realised_performance({"a2": episodes["a2"]}, latest, by=("model_version",)).rows
    assert (row.episodes, row.labelled, row.fault_found, row.nothing_found, row.precision) == (1, 1, 1, 0, 1.0)
    assert row.lead_times_h == (24.0,)


def test_feedback_for_an_unknown_alert_is_returned_not_counted():
    records = fleet_feedback() + [label("zz", "pump-1", "nothing-found"), label("b1", "pump-3", "fault-found")]
    # b1's second record names the wrong pump and, being later, replaces the good one: it must not be credited
    records[-1]["ts_ms"] += 1
    report = realised_performance(episodes_from_alerts(fleet_alerts()), latest_feedback(records), by=("model_version",))
    assert {(u.feedback.alert_id, u.reason.split(":")[0]) for u in report.unmatched} == {("zz", "unknown alert id"), ("b1", "asset mismatch")}
    a, b = report.rows
    assert (a.labelled, a.nothing_found) == (2, 1)
    assert (b.labelled, b.unlabelled, b.lead_times_h) == (1, 2, (30.0,))


def test_no_feedback_leaves_everything_unlabelled():
    report = realised_performance(episodes_from_alerts(fleet_alerts()), {}, exposure=EXPOSURE, by=("model_version",))
    assert [(r.episodes, r.labelled, r.unlabelled, r.precision, r.false_alarms_per_asset_year, r.median_lead_time_h)
            for r in report.rows] == [(3, 0, 3, None, None, None), (3, 0, 3, None, None, None)]
    assert report.unmatched == []
    assert realised_performance({}, {}).rows == []


def test_a_fault_found_without_a_failure_time_has_no_lead_time():
    episodes = [Episode("a1", "pump-1", "pump.anomaly", W49, None, A, "LOW"), Episode("a2", "pump-1", "pump.anomaly", W49, None, A, "LOW")]
    feedback = latest_feedback([label("a1", "pump-1", "fault-found"), label("a2", "pump-1", "fault-found", failure_ts_ms=W49 - 6 * HOUR_MS)])
    (row,) = realised_performance(episodes, feedback, by=("week",)).rows
    assert (row.model_version, row.week, row.fault_found, row.detections) == ("all", "2026-W49", 2, 1)
    assert row.lead_times_h == (-6.0,)  # the alert came 6 h after the failure: kept, not dropped


@pytest.mark.parametrize("change, reason", [
    ({"alert_id": None}, "no alert id"),
    ({"alert_id": ""}, "no alert id"),
    ({"asset_id": 7}, "no asset id"),
    ({"outcome": "fixed"}, "unknown outcome 'fixed'"),
    ({"ts_ms": "1700000000000"}, "ts_ms is not an integer: '1700000000000'"),
    ({"resolved_ts_ms": 1.5}, "resolved_ts_ms is not an integer: 1.5"),
    ({"resolved_ts_ms": None}, "no resolved_ts_ms"),
    ({"failure_ts_ms": True}, "failure_ts_ms is not an integer: True"),
    ({"outcome": "nothing-found", "failure_ts_ms": 5}, "failure_ts_ms given with outcome 'nothing-found'"),
    ({"who": ""}, "no reporter (who)"),
    ({"note": 3}, "note is not a string: 3"),
])
def test_feedback_problem_names_the_reason(change, reason):
    assert feedback_problem(label("a1", "pump-1", "fault-found", failure_ts_ms=5)) is None
    record = {**label("a1", "pump-1", "fault-found"), **change}
    assert feedback_problem(record) == reason
    with pytest.raises(ValueError, match="invalid feedback"):
        latest_feedback([record])


def test_optional_fields_may_be_absent():
    record = {"alert_id": "a1", "asset_id": "pump-1", "outcome": "nothing-found", "resolved_ts_ms": 1, "who": "crew-3", "ts_ms": 2}
    assert feedback_problem(record) is None
    assert Feedback.from_record(record) == Feedback("a1", "pump-1", "nothing-found", None, None, 1, None, "crew-3", 2)


def test_an_unknown_grouping_is_refused():
    with pytest.raises(ValueError, match="by must name"):
        realised_performance({}, {}, by=("asset",))
