"""alerts.labelled: pump alert episodes joined with the crews' feedback (list in, list out, no broker)."""
from __future__ import annotations

from typing import Any, Iterable

import pytest

from vigil.streams.ops.feedback import (
    INVALID_FAILURE,
    INVALID_FEEDBACK,
    UNKNOWN_ALERT,
    AlertFeedbackStage,
    AlertLabelState,
    label_changes,
    partition_key,
    verdict_changes,
)
from vigil.streams.runtime.stage import RawMessage
from vigil.streams.runtime.topics import ALERTS, ALERTS_FEEDBACK, MAINTENANCE_FAILURES, OPS_FAILURES, SCHEMA_OF_TOPIC

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
T0 = 1_764_547_200_000  # Monday 2025-12-01 00:00 UTC: ISO week 2025-W49
BROKER_T0 = 1_765_000_000_000
VERSIONS = {"edge": "e1", "cloud": "c1"}


def alert(alert_id: str, state: str, ts_ms: int, *, asset: str = "pump-1", opened: int = T0, severity: str = "HIGH",
          kind: str = "pump.anomaly", versions: dict[str, str] = VERSIONS) -> dict[str, Any]:
    return {"alert_id": alert_id, "asset_id": asset, "kind": kind, "state": state, "severity": severity, "ts_ms": ts_ms,
            "opened_ts_ms": opened, "first_seq": 0, "first_stream": "vibration/x", "last_seq": 1, "last_stream": "vibration/x",
            "confirmations": 1, "edge_score": 0.7, "cloud_score": 5.0, "model_versions": versions, "top_features": {},
            "diagnosis": None, "detail": ""}


def feedback(alert_id: str, outcome: str, ts_ms: int, *, asset: str = "pump-1", failure: int | None = None,
             fault: str | None = None, **override: Any) -> dict[str, Any]:
    return {"alert_id": alert_id, "asset_id": asset, "outcome": outcome, "fault": fault, "note": None, "resolved_ts_ms": ts_ms,
            "failure_ts_ms": failure, "who": "crew-3", "ts_ms": ts_ms, **override}


class Run:
    """Feeds the stage like the worker: encoded records with broker timestamps, state through its bytes between batches."""

    def __init__(self, codec, **options: Any) -> None:
        self.codec = codec
        self.stage = AlertFeedbackStage(codec, **options)
        self.state: dict[str, AlertLabelState] = {}
        self.offsets = {ALERTS: 0, ALERTS_FEEDBACK: 0, MAINTENANCE_FAILURES: 0}
        self.broker_ms = BROKER_T0

    def message(self, topic: str, record: dict[str, Any], *, key: str | None = None, partition: int = 0,
                broker_ms: int | None = None) -> RawMessage:
        """A record as the worker hands it over; broker time moves a second per record unless given."""
        self.broker_ms = self.broker_ms + 1000 if broker_ms is None else broker_ms
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        value = self.codec.encode(topic, SCHEMA_OF_TOPIC[topic], record)
        return RawMessage(topic, partition, offset, (key or record["asset_id"]).encode(), value, self.broker_ms)

    def alerts(self, *records: dict[str, Any], **where: Any) -> list[RawMessage]:
        return [self.message(ALERTS, r, **where) for r in records]

    def feedback(self, *records: dict[str, Any], **where: Any) -> list[RawMessage]:
        return [self.message(ALERTS_FEEDBACK, r, **where) for r in records]

    def failures(self, *records: dict[str, Any], **where: Any) -> list[RawMessage]:
        return [self.message(MAINTENANCE_FAILURES, r, **where) for r in records]

    def batch(self, messages: Iterable[RawMessage]):
        result = self.stage.process(list(messages), self.state)
        for key, value in result.state_updates.items():
            self.state[key] = AlertLabelState.from_bytes(value.to_bytes())
        return result


def summary(outputs: list[dict[str, Any]]) -> list[tuple]:
    return [(o["alert_id"], o["revision"], o["outcome"], o["closed_ts_ms"], o["lead_time_h"]) for o in outputs]


def test_episodes_are_published_when_they_open_close_and_are_labelled(codec):
    run = Run(codec)
    opened = run.batch(run.alerts(
        alert("a1", "OPEN", T0),
        alert("a1", "UPDATE", T0 + HOUR_MS, severity="CRITICAL"),  # a severity rise alone publishes nothing
        alert("a2", "OPEN", T0 + 2 * HOUR_MS, opened=T0 + 2 * HOUR_MS, versions={"edge": "e2", "cloud": "c1"}),
        alert("w-1/fall/0", "OPEN", T0, asset="w-1", kind="fall.emergency"),  # not a pump's
        alert("a1", "CLOSE", T0 + 3 * HOUR_MS, severity="CRITICAL"),
    ))
    assert summary(opened.outputs) == [("a1", 0, None, None, None), ("a2", 0, None, None, None), ("a1", 1, None, T0 + 3 * HOUR_MS, None)]
    assert opened.outputs[2] == {
        "alert_id": "a1", "asset_id": "pump-1", "kind": "pump.anomaly", "model_version": "e1/c1", "week": "2025-W49",
        "opened_ts_ms": T0, "closed_ts_ms": T0 + 3 * HOUR_MS, "severity": "CRITICAL", "outcome": None, "fault": None,
        "failure_ts_ms": None, "lead_time_h": None, "labelled_ts_ms": None, "revision": 1,
    }
    assert opened.event_end_ms == [T0, T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS]
    assert label_changes(opened) == [] and "w-1" not in run.state

    labelled = run.batch(run.feedback(
        feedback("a1", "fault-found", T0 + 9 * DAY_MS, failure=T0 + 50 * HOUR_MS, fault="outer_race"),
        feedback("a2", "nothing-found", T0 + 9 * DAY_MS),
    ))
    assert summary(labelled.outputs) == [("a1", 2, "fault-found", T0 + 3 * HOUR_MS, 50.0), ("a2", 1, "nothing-found", None, None)]
    assert labelled.outputs[0]["fault"] == "outer_race" and labelled.outputs[0]["labelled_ts_ms"] == T0 + 9 * DAY_MS
    assert labelled.outputs[1]["model_version"] == "e2/c1"
    assert label_changes(labelled) == [("e1/c1", "fault-found"), ("e2/c1", "nothing-found")]
    assert not labelled.dead_letters

    closed = run.batch(run.alerts(alert("a2", "CLOSE", T0 + 5 * HOUR_MS, opened=T0 + 2 * HOUR_MS)))
    assert summary(closed.outputs) == [("a2", 2, "nothing-found", T0 + 5 * HOUR_MS, None)]
    assert label_changes(closed) == []  # closing a labelled episode is not a new label


def test_the_later_feedback_wins_and_each_change_is_published_once(codec):
    run = Run(codec)
    run.batch(run.alerts(alert("a1", "OPEN", T0)))
    first, correction = feedback("a1", "nothing-found", T0 + 5), feedback("a1", "fault-found", T0 + 9, failure=T0 + 2 * HOUR_MS)
    result = run.batch(run.feedback(first, correction))
    assert summary(result.outputs) == [("a1", 1, "nothing-found", None, None), ("a1", 2, "fault-found", None, 2.0)]
    assert label_changes(result) == [("e1/c1", "nothing-found"), ("e1/c1", "fault-found")]
    # an older label arriving late changes nothing; the same label sent again counts once
    late = run.batch(run.feedback(feedback("a1", "nothing-found", T0 + 7), correction))
    assert late.outputs == [] and late.duplicates == 1 and label_changes(late) == []
    assert run.state["pump-1"].episodes["a1"].label["ts_ms"] == T0 + 9

    out_of_order = Run(codec)
    out_of_order.batch(out_of_order.alerts(alert("a1", "OPEN", T0)))
    result = out_of_order.batch(out_of_order.feedback(correction, first))
    assert summary(result.outputs) == [("a1", 1, "fault-found", None, 2.0)]


def test_invalid_feedback_is_dead_lettered_with_its_problem(codec):
    run = Run(codec)
    run.batch(run.alerts(alert("a1", "OPEN", T0)))
    messages = run.feedback(
        feedback("a1", "maybe", T0 + 5),
        feedback("a1", "nothing-found", T0 + 6, failure=T0),
        feedback("a1", "fault-found", T0 + 7, who=""),
    ) + run.feedback(feedback("a1", "fault-found", T0 + 8), key="pump-2")
    result = run.batch(messages)
    assert result.outputs == []
    assert [(d["reason"], d["detail"], d["offset"]) for d in result.dead_letters] == [
        (INVALID_FEEDBACK, "invalid feedback: unknown outcome 'maybe'", 0),
        (INVALID_FEEDBACK, "invalid feedback: failure_ts_ms given with outcome 'nothing-found'", 1),
        (INVALID_FEEDBACK, "invalid feedback: no reporter (who)", 2),
        ("key_mismatch", "Kafka key b'pump-2' is not the asset_id", 3),
    ]
    assert all(d["source_topic"] == ALERTS_FEEDBACK and d["asset_id"] == "pump-1" for d in result.dead_letters)
    assert result.dead_letters[0]["original"] == messages[0].value


def test_feedback_for_an_unknown_alert_is_held_then_dead_lettered_after_the_grace(codec):
    run = Run(codec, unknown_alert_grace_s=300)
    held = run.feedback(feedback("a9", "fault-found", T0 + 5), broker_ms=BROKER_T0)
    assert run.batch(held).dead_letters == []
    assert [p.record["alert_id"] for p in run.state["pump-1"].pending] == ["a9"]
    assert run.state[partition_key(0)].waiting == {"pump-1": BROKER_T0}
    # another pump's records on the same partition move the partition's clock; 300 s is not yet past the grace
    within = run.batch(run.alerts(alert("b1", "OPEN", T0, asset="pump-2"), broker_ms=BROKER_T0 + 300_000))
    assert within.dead_letters == [] and len(within.outputs) == 1
    elsewhere = run.batch(run.alerts(alert("c1", "OPEN", T0, asset="pump-3"), partition=1, broker_ms=BROKER_T0 + 900_000))
    assert elsewhere.dead_letters == []  # another partition's clock says nothing about this one
    past = run.batch(run.alerts(alert("b2", "OPEN", T0, asset="pump-2"), broker_ms=BROKER_T0 + 300_001))
    [letter] = past.dead_letters
    assert letter["reason"] == UNKNOWN_ALERT and letter["detail"].startswith("unknown alert id 'a9'")
    assert (letter["source_topic"], letter["offset"], letter["key"], letter["original"]) == (ALERTS_FEEDBACK, 0, b"pump-1", held[0].value)
    assert run.state["pump-1"].pending == [] and run.state[partition_key(0)].waiting == {}
    # the alert read after the feedback was given up on opens unlabelled
    late = run.batch(run.alerts(alert("a9", "OPEN", T0)))
    assert summary(late.outputs) == [("a9", 0, None, None, None)] and late.dead_letters == []


def test_feedback_read_before_its_alert_is_applied_when_the_alert_arrives_within_the_grace(codec):
    run = Run(codec, unknown_alert_grace_s=300)
    early = feedback("a9", "fault-found", T0 + DAY_MS, failure=T0 + 12 * HOUR_MS)
    run.batch(run.feedback(early, broker_ms=BROKER_T0) + run.feedback(early, broker_ms=BROKER_T0 + 10))  # sent twice
    assert len(run.state["pump-1"].pending) == 1
    result = run.batch(run.alerts(alert("a9", "OPEN", T0), broker_ms=BROKER_T0 + 200_000))
    assert summary(result.outputs) == [("a9", 0, "fault-found", None, 12.0)]
    assert label_changes(result) == [("e1/c1", "fault-found")]
    later = run.batch(run.alerts(alert("b1", "OPEN", T0, asset="pump-2"), broker_ms=BROKER_T0 + 3_600_000))
    assert later.dead_letters == [] and run.state["pump-1"].pending == [] and run.state[partition_key(0)].waiting == {}


def test_without_broker_timestamps_pending_feedback_is_held(codec):
    run = Run(codec, unknown_alert_grace_s=0)
    messages = [RawMessage(m.topic, m.partition, m.offset, m.key, m.value, None)
                for m in run.feedback(feedback("a9", "fault-found", T0)) + run.alerts(alert("b1", "OPEN", T0, asset="pump-2"))]
    result = run.batch(messages)
    assert result.dead_letters == [] and len(run.state["pump-1"].pending) == 1


def sequence(run: Run) -> list[RawMessage]:
    return (run.alerts(alert("a1", "OPEN", T0), alert("a2", "OPEN", T0 + HOUR_MS, opened=T0 + HOUR_MS))
            + run.feedback(feedback("a1", "nothing-found", T0 + DAY_MS), feedback("a3", "fault-found", T0 + DAY_MS))
            + run.alerts(alert("a1", "UPDATE", T0 + 2 * HOUR_MS, severity="CRITICAL"), alert("a1", "CLOSE", T0 + 3 * HOUR_MS),
                         alert("a3", "OPEN", T0 + 4 * HOUR_MS, opened=T0 + 4 * HOUR_MS))
            + run.feedback(feedback("a1", "fault-found", T0 + 2 * DAY_MS, failure=T0 + 30 * HOUR_MS)))


def test_replaying_a_batch_publishes_nothing_new(codec):
    run = Run(codec)
    messages = sequence(run)
    first = run.batch(messages)
    assert summary(first.outputs) == [("a1", 0, None, None, None), ("a2", 0, None, None, None), ("a1", 1, "nothing-found", None, None),
                                      ("a1", 2, "nothing-found", T0 + 3 * HOUR_MS, None), ("a3", 0, "fault-found", None, None),
                                      ("a1", 3, "fault-found", T0 + 3 * HOUR_MS, 30.0)]
    replayed = run.batch(messages)
    assert replayed.outputs == [] and replayed.dead_letters == [] and label_changes(replayed) == []


@pytest.mark.parametrize("batch", [1, 2, 3, 100])
def test_outputs_do_not_depend_on_where_batches_are_cut_and_state_survives_its_bytes(codec, batch):
    whole = Run(codec)
    expected = whole.batch(sequence(whole)).outputs
    run = Run(codec)
    messages, outputs = sequence(run), []
    for i in range(0, len(messages), batch):
        outputs += run.batch(messages[i:i + batch]).outputs  # Run.batch decodes the state from its bytes every time
    assert outputs == expected
    for key, value in run.state.items():
        assert AlertLabelState.from_bytes(value.to_bytes()) == value
        assert whole.state[key] == value


def test_the_stored_state_is_not_changed_by_a_batch(codec):
    run = Run(codec)
    run.batch(run.alerts(alert("a1", "OPEN", T0)))
    before = run.state["pump-1"].to_bytes()
    result = run.stage.process(run.feedback(feedback("a1", "fault-found", T0 + 5)), run.state)
    assert len(result.outputs) == 1 and run.state["pump-1"].to_bytes() == before


def test_episodes_older_than_the_retention_are_forgotten(codec):
    run = Run(codec, retention_days=400, unknown_alert_grace_s=60)
    run.batch(run.alerts(alert("old", "OPEN", T0), alert("old", "CLOSE", T0 + HOUR_MS),
                         alert("open", "OPEN", T0 + 10 * DAY_MS, opened=T0 + 10 * DAY_MS)))
    later = T0 + HOUR_MS + 400 * DAY_MS + 1
    run.batch(run.alerts(alert("new", "OPEN", later, opened=later)))
    assert sorted(run.state["pump-1"].episodes) == ["new", "open"]
    replayed = run.batch(run.alerts(alert("old", "CLOSE", T0 + HOUR_MS)))  # a forgotten episode is not published again
    assert replayed.outputs == [] and sorted(run.state["pump-1"].episodes) == ["new", "open"]
    result = run.batch(run.feedback(feedback("old", "fault-found", later)) + run.alerts(alert("new", "CLOSE", later + 1, opened=later),
                                                                                         broker_ms=run.broker_ms + 61_000))
    assert [d["reason"] for d in result.dead_letters] == [UNKNOWN_ALERT]


def test_options_are_checked(codec):
    with pytest.raises(ValueError, match="unknown_alert_grace_s"):
        AlertFeedbackStage(codec, unknown_alert_grace_s=-1)
    with pytest.raises(ValueError, match="retention_days"):
        AlertFeedbackStage(codec, retention_days=0)


def failure(at_ms: int, *, asset: str = "pump-1", fault: str = "outer_race", ts_ms: int | None = None, **override: Any) -> dict[str, Any]:
    return {"failure_id": f"{asset}/{at_ms}", "asset_id": asset, "failure_ts_ms": at_ms, "fault": fault, "note": None,
            "model_version": "e0/c0", "who": "crew-3", "ts_ms": at_ms + DAY_MS if ts_ms is None else ts_ms, **override}


def verdicts(result) -> list[tuple]:
    return [(o["failure_id"], o["revision"], o["verdict"], o["alert_ids"], o["lead_time_h"], o["model_version"])
            for o, topic in zip(result.outputs, result.output_topics) if topic == OPS_FAILURES]


def test_a_failure_with_a_warning_episode_in_the_lookback_is_detected_with_its_lead_time(codec):
    run = Run(codec)
    run.batch(run.alerts(alert("a0", "OPEN", T0 - 40 * DAY_MS, opened=T0 - 40 * DAY_MS),  # before the 30-day lookback
                         alert("a1", "OPEN", T0, opened=T0), alert("a2", "OPEN", T0 + 3 * DAY_MS, opened=T0 + 3 * DAY_MS)))
    result = run.batch(run.failures(failure(T0 + 2 * DAY_MS)))  # a2 opened after the failure: no warning of it
    assert verdicts(result) == [(f"pump-1/{T0 + 2 * DAY_MS}", 0, "DETECTED", ["a1"], 48.0, "e1/c1")]
    assert verdict_changes(result) == [("e1/c1", "DETECTED")]


def test_a_failure_without_an_alert_is_missed_and_judged_again_when_a_late_alert_arrives(codec):
    # The failures partition can be read ahead of the alerts one: the verdict follows what has been read.
    run = Run(codec)
    missed = run.batch(run.failures(failure(T0 + 2 * DAY_MS)))
    assert verdicts(missed) == [(f"pump-1/{T0 + 2 * DAY_MS}", 0, "MISSED", [], None, "e0/c0")]  # charged to the reported version
    assert verdict_changes(missed) == [("e0/c0", "MISSED")]
    late = run.batch(run.alerts(alert("a1", "OPEN", T0, opened=T0)))
    assert verdicts(late) == [(f"pump-1/{T0 + 2 * DAY_MS}", 1, "DETECTED", ["a1"], 48.0, "e1/c1")]
    assert verdict_changes(late) == [("e1/c1", "DETECTED")]
    # The episode closing changes no verdict; a replay of everything publishes nothing.
    assert verdicts(run.batch(run.alerts(alert("a1", "CLOSE", T0 + DAY_MS, opened=T0)))) == []
    replay = run.batch(run.failures(failure(T0 + 2 * DAY_MS)) + run.alerts(alert("a1", "OPEN", T0, opened=T0)))
    assert replay.outputs == [] and replay.duplicates == 1


def test_a_corrected_report_is_judged_again_and_an_older_one_changes_nothing(codec):
    run = Run(codec)
    run.batch(run.alerts(alert("a1", "OPEN", T0, opened=T0)))
    first = failure(T0 + 2 * DAY_MS, failure_id="job-17")
    assert [v[2] for v in verdicts(run.batch(run.failures(first)))] == ["DETECTED"]
    # The crew corrects the date: 40 days later, beyond the lookback of a1.
    corrected = {**first, "failure_ts_ms": T0 + 40 * DAY_MS, "ts_ms": first["ts_ms"] + HOUR_MS}
    again = run.batch(run.failures(corrected))
    assert verdicts(again) == [("job-17", 1, "MISSED", [], None, "e0/c0")]
    assert verdicts(run.batch(run.failures({**first, "ts_ms": first["ts_ms"] - HOUR_MS}))) == []  # older than the one that counts


def test_invalid_or_misrouted_failure_reports_are_dead_lettered_with_the_reason(codec):
    run = Run(codec)
    result = run.batch(run.failures(failure(T0, fault="")) + run.failures(failure(T0, asset="pump-2"), key="pump-9"))
    assert [d["reason"] for d in result.dead_letters] == [INVALID_FAILURE, "key_mismatch"]
    assert "no fault named" in result.dead_letters[0]["detail"]
    assert result.outputs == [] and not any(s.failures for s in run.state.values())


def test_failures_survive_the_state_bytes_and_a_lookback_is_configurable(codec):
    run = Run(codec, failure_lookback_h=24.0)
    run.batch(run.alerts(alert("a1", "OPEN", T0, opened=T0)))
    result = run.batch(run.failures(failure(T0 + 2 * DAY_MS)))  # 48 h after the alert: beyond a 24 h lookback
    assert [(v[2], o["lookback_h"]) for v, o in zip(verdicts(result), result.outputs)] == [("MISSED", 24.0)]
    stored = AlertLabelState.from_bytes(run.state["pump-1"].to_bytes())
    assert stored.failures[f"pump-1/{T0 + 2 * DAY_MS}"].published[0] == "MISSED"
    with pytest.raises(ValueError, match="failure_lookback_h must be > 0"):
        AlertFeedbackStage(codec, failure_lookback_h=0)
