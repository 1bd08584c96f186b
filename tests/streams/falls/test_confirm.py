"""Stage 3: ask the wearer, settle on the answer or the deadline."""
import numpy as np
import pytest

from tests.streams.falls.conftest import T0_MS
from vigil.streams.falls.confirm import ALERT_KIND, ConfirmStage, WearerConfirmState, hold_is_over, overdue_partitions

SUSPECTED, RESPONSES = "fall.suspected", "wearable.user_response"
WINDOW_XYZ = np.arange(3000, dtype="<f4").tobytes()


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def stage(codec, clock):
    return ConfirmStage(codec, suspected_topic=SUSPECTED, response_topic=RESPONSES, window_s=10.0, clock=clock)


def suspected(seq=0, wearer="w-1", impact_ts_ms=T0_MS + 5450):
    return {"wearer_id": wearer, "seq": seq, "impact_ts_ms": impact_ts_ms, "window_start_ts_ms": impact_ts_ms - 2000, "fs_hz": 200.0,
            "probability": 0.93, "threshold": 0.4, "model_version": "falls-1", "features": {"peak_g": 4.1, "angle_change_deg": 88.0},
            "xyz": WINDOW_XYZ}


def answer(request_id, response="OK", wearer="w-1", ts_ms=1_800_000_003_000):
    return {"request_id": request_id, "wearer_id": wearer, "ts_ms": ts_ms, "response": response}


class Run:
    """Feeds the stage like the worker: state through its bytes after every call."""

    def __init__(self, stage, to_messages):
        self.stage, self.to_messages, self.state, self.offset = stage, to_messages, {}, 0

    def keep(self, result):
        self.state.update({k: WearerConfirmState.from_bytes(v.to_bytes()) for k, v in result.state_updates.items()})
        return result

    def feed(self, records, topic, partition=0):
        messages = self.to_messages(records, topic, partition=partition, start=self.offset)
        self.offset += len(messages)
        return self.keep(self.stage.process(messages, self.state))

    def expire(self, partitions=None):
        return self.keep(self.stage.expire(self.state, partitions))


@pytest.fixture
def run(stage, to_messages):
    return Run(stage, to_messages)


def by_topic(result):
    return [(t, r) for r, t in zip(result.outputs, result.output_topics)]


def test_a_suspected_fall_asks_the_wearer_and_alerts_when_nobody_answers_by_the_deadline(run, clock):
    asked = by_topic(run.feed([suspected()], SUSPECTED))
    assert [t for t, _ in asked] == ["fall.confirm_request"]
    request = asked[0][1]
    assert request["request_id"] == f"w-1/fall/{T0_MS + 5450}"
    assert request["deadline_ts_ms"] - request["requested_ts_ms"] == 10_000 and request["requested_ts_ms"] == clock.t * 1000
    clock.t += 9.9
    assert run.expire().outputs == []
    clock.t += 0.1
    settled = by_topic(run.expire())
    assert [t for t, _ in settled] == ["alerts", "fall.outcomes"]
    alert, outcome = settled[0][1], settled[1][1]
    assert (alert["kind"], alert["state"], alert["severity"], alert["asset_id"]) == (ALERT_KIND, "OPEN", "CRITICAL", "w-1")
    assert alert["alert_id"] == request["request_id"] and alert["opened_ts_ms"] == T0_MS + 5450
    assert alert["edge_score"] == 0.93 and alert["top_features"] == {"peak_g": 4.1, "angle_change_deg": 88.0}
    assert (outcome["outcome"], outcome["label"], outcome["response_ts_ms"], outcome["seq"]) == ("EMERGENCY_NO_RESPONSE", "unconfirmed", None, 0)
    assert run.state["w-1"].pending == {} and run.expire().outputs == []  # raised once


def test_im_ok_before_the_deadline_dismisses_it_as_a_labelled_false_alarm_and_nothing_alerts(run, clock):
    request = run.feed([suspected()], SUSPECTED).outputs[0]
    clock.t += 3.0
    result = by_topic(run.feed([answer(request["request_id"])], RESPONSES))
    assert [t for t, _ in result] == ["fall.outcomes"]
    outcome = result[0][1]
    assert (outcome["outcome"], outcome["label"], outcome["response_ts_ms"]) == ("DISMISSED", "false_alarm", 1_800_000_003_000)
    assert outcome["features"] == {"peak_g": 4.1, "angle_change_deg": 88.0} and outcome["model_version"] == "falls-1"
    clock.t += 60.0
    assert run.expire().outputs == []
    again = run.feed([answer(request["request_id"])], RESPONSES)  # the device sent it twice
    assert again.outputs == [] and again.duplicates == 1


def test_help_alerts_at_once(run, clock):
    request = run.feed([suspected()], SUSPECTED).outputs[0]
    result = by_topic(run.feed([answer(request["request_id"], "HELP")], RESPONSES))
    assert [(t, r.get("state") or r["outcome"]) for t, r in result] == [("alerts", "OPEN"), ("fall.outcomes", "EMERGENCY_HELP")]
    clock.t += 60.0
    assert run.expire().outputs == []


def test_a_late_ok_closes_the_alert_once(run, clock):
    request = run.feed([suspected()], SUSPECTED).outputs[0]
    clock.t += 11.0
    run.expire()
    clock.t += 5.0
    closed = by_topic(run.feed([answer(request["request_id"])], RESPONSES))
    assert [(t, r["state"], r["alert_id"]) for t, r in closed] == [("alerts", "CLOSE", request["request_id"])]
    assert "answered OK 5.0 s after the alert" in closed[0][1]["detail"]
    assert run.feed([answer(request["request_id"])], RESPONSES).outputs == []


def test_a_replayed_suspected_fall_asks_nothing_new_and_pending_survive_the_state_bytes(run, clock):
    run.feed([suspected(0), suspected(1, impact_ts_ms=T0_MS + 60_000)], SUSPECTED)
    replay = run.feed([suspected(0), suspected(1, impact_ts_ms=T0_MS + 60_000)], SUSPECTED)
    assert replay.outputs == [] and replay.duplicates == 2
    pending = run.state["w-1"].pending
    assert sorted(p.seq for p in pending.values()) == [0, 1] and all(p.features["peak_g"] == 4.1 for p in pending.values())
    clock.t += 10.0
    assert len([t for t in run.expire().output_topics if t == "alerts"]) == 2


def test_answers_nobody_asked_for_are_dead_lettered(run):
    result = run.feed([answer("w-1/fall/123")], RESPONSES)
    assert [d["reason"] for d in result.dead_letters] == ["unknown_request"] and result.outputs == []


def test_expire_only_settles_the_partitions_it_is_given(run, clock):
    run.feed([suspected(wearer="w-1")], SUSPECTED, partition=0)
    run.feed([suspected(wearer="w-2")], SUSPECTED, partition=3)
    clock.t += 10.0
    first = run.expire(partitions={3})
    assert [r["asset_id"] for r, t in zip(first.outputs, first.output_topics) if t == "alerts"] == ["w-2"]
    assert set(first.state_partitions.values()) == {3}
    second = run.expire()
    assert [r["asset_id"] for r, t in zip(second.outputs, second.output_topics) if t == "alerts"] == ["w-1"]


def test_a_wearers_state_stays_small_with_many_pending_confirmations(run):
    """Windows stay out of the state: 100 pending confirmations fit one changelog record with room to spare."""
    run.feed([suspected(i, impact_ts_ms=T0_MS + 60_000 * i) for i in range(100)], SUSPECTED)
    assert len(run.state["w-1"].pending) == 100
    assert len(run.state["w-1"].to_bytes()) < 100_000


def test_a_partition_is_overdue_from_its_earliest_passed_deadline_whatever_its_other_wearers_wait_for(run, clock):
    """Regression: with two wearers on one partition, the later deadline hid the earlier one (an alert 7 s late)."""
    run.feed([suspected(wearer="w-early")], SUSPECTED, partition=1)
    clock.t += 6.0
    run.feed([suspected(wearer="w-late")], SUSPECTED, partition=1)
    run.feed([suspected(wearer="w-other")], SUSPECTED, partition=2)
    now_ms = (clock.t + 4.0) * 1000  # past w-early's deadline, before the others'
    due = overdue_partitions(run.state.values(), now_ms)
    assert due == {1: int((clock.t - 6.0) * 1000) + 10_000}
    assert overdue_partitions(run.state.values(), now_ms - 100) == {}


def test_the_hold_on_an_expired_confirmation_counts_from_when_the_worker_took_the_partition():
    """Regression: a worker that needed 29 s to start after an outage alerted on a wearer who had answered OK."""
    deadline_ms, max_hold_ms = 100_000, 30_000
    assert hold_is_over(deadline_ms, taken_ms=0, now_ms=deadline_ms + 30_000, max_hold_ms=max_hold_ms)
    assert not hold_is_over(deadline_ms, taken_ms=0, now_ms=deadline_ms + 29_999, max_hold_ms=max_hold_ms)
    taken_late_ms = deadline_ms + 29_000
    assert not hold_is_over(deadline_ms, taken_late_ms, now_ms=deadline_ms + 31_000, max_hold_ms=max_hold_ms)
    assert hold_is_over(deadline_ms, taken_late_ms, now_ms=taken_late_ms + 30_000, max_hold_ms=max_hold_ms)
