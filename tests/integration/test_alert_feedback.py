"""`vigil alerts resolve` and `vigil report models` on the session's real broker: a label goes to its alert's partition,
a refused one sends nothing, and the report counts exactly what the crews said."""
from __future__ import annotations

import getpass
import json
import time
from datetime import datetime, timezone

import pytest

from tests.integration.test_cli import vigil
from vigil.models.feedback import MS_PER_YEAR, iso_week, week_bounds_ms
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.lifecycle.control import read_to_end
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.topics import ALERTS, ALERTS_FEEDBACK, ALL_TOPICS, PUMP_TRENDS, SCHEMA_OF_TOPIC, ensure_topics

pytestmark = pytest.mark.broker

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def alert(alert_id: str, asset: str, state: str, ts_ms: int, opened: int, *, edge: str = "e1", kind: str = "pump.anomaly") -> dict:
    return {"alert_id": alert_id, "asset_id": asset, "kind": kind, "state": state, "severity": "HIGH", "ts_ms": ts_ms,
            "opened_ts_ms": opened, "first_seq": 0, "first_stream": "vibration/x", "last_seq": 1, "last_stream": "vibration/x",
            "confirmations": 2, "edge_score": 0.8, "cloud_score": 6.0, "model_versions": {"edge": edge, "cloud": "c1"},
            "top_features": {"rms_g": 3.0}, "diagnosis": None, "detail": ""}


def trend(asset: str, hour_start_ms: int) -> dict:
    return {"asset_id": asset, "hour_start_ms": hour_start_ms, "hour_end_ms": hour_start_ms + HOUR_MS, "revision": 0, "windows": 360,
            "scored": 360, "flagged": 0, "alerts": 0, "vibration_windows": 180, "week_start_ms": hour_start_ms - 6 * DAY_MS,
            "week_windows": 360, "week_flagged": 0, "week_alerts": 0, "late_records": 0}


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).isoformat()


def test_resolve_sends_labels_to_the_alerts_partition_and_the_report_counts_them(broker_settings):
    settings, codec = broker_settings, AvroCodec()
    env = settings.to_env()
    ensure_topics(settings, [spec for spec in ALL_TOPICS if spec.name in (ALERTS, ALERTS_FEEDBACK, PUMP_TRENDS)])
    now = int(time.time() * 1000)
    t0 = week_bounds_ms(iso_week(now - 7 * DAY_MS))[0] + DAY_MS + 12 * HOUR_MS  # last week's Tuesday noon: one ISO week, within 30 days
    producer = RecordProducer(settings, codec)
    for record in (
        alert("a1", "pump-1", "OPEN", t0, t0),
        alert("a2", "pump-2", "OPEN", t0 + HOUR_MS, t0 + HOUR_MS),
        alert("a1", "pump-1", "CLOSE", t0 + 2 * HOUR_MS, t0),
        alert("a3", "pump-1", "OPEN", t0 + 3 * HOUR_MS, t0 + 3 * HOUR_MS),  # left unlabelled
        alert("b1", "pump-2", "OPEN", t0 + 4 * HOUR_MS, t0 + 4 * HOUR_MS, edge="e2"),  # another version, unlabelled
        alert("old", "pump-2", "OPEN", now - 60 * DAY_MS, now - 60 * DAY_MS),  # labelled, but opened before --since
        alert("w-1/fall/0", "w-1", "OPEN", t0, t0, kind="fall.emergency"),
    ):
        producer.send_record(ALERTS, record["asset_id"], record)
    for asset in ("pump-1", "pump-2"):  # watched from Monday noon to Wednesday noon
        for hour_start in (t0 - DAY_MS, t0, t0 + DAY_MS - HOUR_MS):
            producer.send_record(PUMP_TRENDS, asset, trend(asset, hour_start))
    ghost = {"alert_id": "ghost", "asset_id": "pump-3", "outcome": "nothing-found", "fault": None, "note": None,
             "resolved_ts_ms": now, "failure_ts_ms": None, "who": "crew-9", "ts_ms": now}
    producer.send_record(ALERTS_FEEDBACK, "pump-3", ghost)  # names an alert nobody raised
    producer.flush()

    sent = vigil("alerts", "resolve", "a1", "--outcome", "fault-found", "--fault", "outer_race", "--failure-at", iso(t0 + 50 * HOUR_MS),
                 "--who", "crew-3", "--json", env=env)
    assert sent.returncode == 0, sent.stderr
    record = json.loads(sent.stdout)
    assert {k: record[k] for k in ("alert_id", "asset_id", "outcome", "fault", "failure_ts_ms", "who", "note")} == {
        "alert_id": "a1", "asset_id": "pump-1", "outcome": "fault-found", "fault": "outer_race", "failure_ts_ms": t0 + 50 * HOUR_MS,
        "who": "crew-3", "note": None}
    assert now <= record["ts_ms"] == record["resolved_ts_ms"] <= int(time.time() * 1000)
    people = vigil("alerts", "resolve", "a2", "--outcome", "nothing-found", "--note", "bearing fine", env=env)
    assert people.returncode == 0, people.stderr
    assert f"a2 on pump-2: nothing-found (bearing fine), by {getpass.getuser()}; sent to {settings.topic(ALERTS_FEEDBACK)} [" in people.stdout
    assert vigil("alerts", "resolve", "old", "--outcome", "fault-found", "--who", "crew-3", env=env).returncode == 0

    refused = {
        "unknown id": vigil("alerts", "resolve", "nope", "--outcome", "fault-found", env=env),
        "fall alert": vigil("alerts", "resolve", "w-1/fall/0", "--outcome", "fault-found", env=env),
        "outcome": vigil("alerts", "resolve", "a3", "--outcome", "maybe", env=env),
        "failure with nothing found": vigil("alerts", "resolve", "a3", "--outcome", "nothing-found", "--failure-at", "0", env=env),
    }
    for why, result in refused.items():
        assert result.returncode == 2 and result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, (why, result.stderr)
    assert "no alert 'nope'" in refused["unknown id"].stderr and "nothing sent" in refused["unknown id"].stderr

    alerts_at = {codec.decode(r.value, SCHEMA_OF_TOPIC[ALERTS])["alert_id"]: r.partition for r in read_to_end(settings, ALERTS)}
    labels = [(r.key, r.partition, codec.decode(r.value, SCHEMA_OF_TOPIC[ALERTS_FEEDBACK])) for r in read_to_end(settings, ALERTS_FEEDBACK)]
    assert sorted((key, label["alert_id"]) for key, _, label in labels) == [
        (b"pump-1", "a1"), (b"pump-2", "a2"), (b"pump-2", "old"), (b"pump-3", "ghost")]
    # keyed by the asset, so each label lands on its alert's partition number: the stage joins them there
    assert all(partition == alerts_at[label["alert_id"]] for _, partition, label in labels if label["alert_id"] != "ghost")

    report = vigil("report", "models", "--since", "30d", "--json", env=env)
    assert report.returncode == 0, report.stderr
    got = json.loads(report.stdout)
    week = iso_week(t0)
    asset_years = 2 * 2 * DAY_MS / MS_PER_YEAR
    assert got["unmatched"] == 1 and got["invalid"] == 0 and got["assets_observed"] == 2
    assert now - 30 * DAY_MS - 60_000 < got["since_ms"] <= int(time.time() * 1000) - 30 * DAY_MS
    rows = {(r["model_version"], r["week"]): r for r in got["rows"]}
    assert set(rows) == {("e1/c1", week), ("e2/c1", week)}
    counted = ("episodes", "labelled", "unlabelled", "fault_found", "nothing_found", "precision", "false_alarms", "detections",
               "lead_times_h", "median_lead_time_h")
    assert {k: rows[("e1/c1", week)][k] for k in counted} == {
        "episodes": 3, "labelled": 2, "unlabelled": 1, "fault_found": 1, "nothing_found": 1, "precision": 0.5, "false_alarms": 1,
        "detections": 1, "lead_times_h": [50.0], "median_lead_time_h": 50.0}
    assert rows[("e1/c1", week)]["false_alarms_per_asset_year"] == pytest.approx(1 / asset_years)
    assert {k: rows[("e2/c1", week)][k] for k in ("episodes", "labelled", "unlabelled", "precision", "false_alarms_per_asset_year")} == {
        "episodes": 1, "labelled": 0, "unlabelled": 1, "precision": None, "false_alarms_per_asset_year": None}
    totals = {t["model_version"]: t for t in got["totals"]}
    assert [(v, t["week"], t["episodes"], t["labelled"], t["unlabelled"], t["precision"]) for v, t in sorted(totals.items())] == [
        ("e1/c1", "all", 3, 2, 1, 0.5), ("e2/c1", "all", 1, 0, 1, None)]
    assert totals["e1/c1"]["asset_years"] == pytest.approx(asset_years)

    table = vigil("report", "models", "--since", "30d", env={**env, "COLUMNS": "160"})
    assert table.returncode == 0, table.stderr
    assert "e1/c1" in table.stdout and week in table.stdout and "50%" in table.stdout and "Feedback naming no alert read: 1" in table.stdout


def model_change(tier: str, version: str, previous: str, at_ms: int) -> dict:
    return {"topology": "pumps", "tier": tier, "alias": "active", "action": "promote", "version": version,
            "previous_version": previous, "sha256": "0" * 64, "share": 1.0, "epoch": 1, "who": "crew-3", "why": "test", "at_ms": at_ms}


def test_reported_failures_are_judged_by_a_monitoring_worker_and_missed_ones_counted(broker_settings, start_worker, tmp_path):
    from dataclasses import replace

    from tests.integration.test_pump_cascade import metric, wait_for
    from vigil.streams.runtime.topics import MODELS_AUDIT

    # A monitoring worker needs no model: it judges failures against the alerts it reads.
    settings, codec = replace(broker_settings, worker_role="monitoring", models_dir=tmp_path / "no-models"), AvroCodec()
    env = settings.to_env()
    ensure_topics(settings)
    worker = start_worker(settings)
    t0 = (int(time.time()) - 10 * 86_400) * 1000  # whole seconds: the CLI takes ISO times
    producer = RecordProducer(settings, codec)
    producer.send_record(ALERTS, "pump-1", alert("a1", "pump-1", "OPEN", t0, t0))
    producer.flush()
    # Read before the reports: a report read ahead of its warning alert is judged MISSED first (tested below).
    wait_for(lambda: metric(worker, "vigil_records_in_total", "alerts.labelled") >= 1, 120, "the alert read", worker)

    def report(asset: str, at_ms: int, *extra: str):
        return vigil("failures", "report", asset, "--at", iso(at_ms), "--fault", "outer_race", "--who", "crew-3", *extra, "--json", env=env)

    detected = report("pump-1", t0 + 50 * HOUR_MS, "--model-version", "e1/c1")
    assert detected.returncode == 0, detected.stderr
    assert json.loads(detected.stdout)["failure_id"] == f"pump-1/{t0 + 50 * HOUR_MS}"
    unknown = report("pump-2", t0 + 10 * HOUR_MS)  # no audit, no registry: nobody can say which models served
    assert unknown.returncode == 0 and json.loads(unknown.stdout)["model_version"] is None
    assert "a missed failure is charged to ?/?" in unknown.stderr
    for tier, version, previous in (("edge", "e9", "e8"), ("cloud", "c9", "c8")):
        producer.send_record(MODELS_AUDIT, f"pumps|{tier}|active", model_change(tier, version, previous, t0 - DAY_MS))
    producer.flush()
    audited = report("pump-3", t0 + 20 * HOUR_MS)
    assert json.loads(audited.stdout)["model_version"] == "e9/c9"  # what models.audit had active then
    assert json.loads(report("pump-3", t0 - 2 * DAY_MS, "--id", "wo-17").stdout)["model_version"] == "e8/c8"  # before the change
    refused = vigil("failures", "report", "pump-1", "--at", "yesterday", "--fault", "x", env=env)
    assert refused.returncode == 2 and "--at 'yesterday' is neither" in refused.stderr and "nothing sent" in refused.stderr

    def verdicts() -> dict[str, dict]:
        listed = vigil("failures", "list", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        return {v["failure_id"]: v for v in json.loads(listed.stdout)}

    wait_for(lambda: len(verdicts()) == 4, 120, "four verdicts on ops.failures", worker)
    got = verdicts()
    assert {v["asset_id"]: (v["verdict"], v["model_version"]) for v in got.values() if v["failure_id"] != "wo-17"} == {
        "pump-1": ("DETECTED", "e1/c1"), "pump-2": ("MISSED", "?/?"), "pump-3": ("MISSED", "e9/c9")}
    assert got[f"pump-1/{t0 + 50 * HOUR_MS}"]["lead_time_h"] == 50.0 and got[f"pump-1/{t0 + 50 * HOUR_MS}"]["alert_ids"] == ["a1"]

    # The alert that warned of pump-2's failure is read late: the verdict turns DETECTED, a revision later.
    producer.send_record(ALERTS, "pump-2", alert("a2", "pump-2", "OPEN", t0 + 4 * HOUR_MS, t0 + 4 * HOUR_MS))
    producer.flush()
    pump2 = f"pump-2/{t0 + 10 * HOUR_MS}"
    wait_for(lambda: verdicts()[pump2]["verdict"] == "DETECTED", 60, "pump-2 judged again", worker)
    assert {k: verdicts()[pump2][k] for k in ("revision", "alert_ids", "lead_time_h", "model_version")} == {
        "revision": 1, "alert_ids": ["a2"], "lead_time_h": 6.0, "model_version": "e1/c1"}
    samples = worker.metrics()
    assert samples['vigil_failure_verdicts_total{verdict="MISSED"}'] == 3  # pump-2 once, pump-3 twice
    assert samples['vigil_failure_verdicts_total{verdict="DETECTED"}'] == 2  # pump-1, then pump-2

    # The report judges the same from the topics: the missed failures per serving pair.
    table = vigil("report", "models", "--since", "30d", "--json", env=env)
    assert table.returncode == 0, table.stderr
    got_report = json.loads(table.stdout)
    assert got_report["missed_failures"] == {"e9/c9": 1, "e8/c8": 1}
    assert [f["verdict"] for f in got_report["failures"]] == ["MISSED", "DETECTED", "MISSED", "DETECTED"]
    people = vigil("report", "models", "--since", "30d", env={**env, "COLUMNS": "200"})
    assert "failures reported in the last 30d: 2 missed of 4" in people.stdout and "wo-17" in people.stdout
