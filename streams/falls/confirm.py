"""Stage 3, fall.suspected + wearable.user_response -> fall.confirm_request, alerts, fall.outcomes.

A suspected fall asks the wearer's device "are you OK?" and waits
``window_s`` (10 s by default) of wall-clock time: a person, not the data,
sets the pace here. Then:

* "I'm OK" before the deadline: a DISMISSED outcome labelled ``false_alarm``
  (kept, with the window's features, for false-alarm monitoring and retraining;
  the window itself is the fall.suspected record it names); no alert.
* "HELP": a CRITICAL ``fall.emergency`` alert at once.
* no answer by the deadline: a CRITICAL ``fall.emergency`` alert, raised by
  ``expire`` (the worker's timer calls it).
* "I'm OK" after a no-answer alert: the alert is closed (state CLOSE).

Pending confirmations are the wearer's state in a changelog-backed table, so
a worker that restarts during the wait still raises the alert (or takes the
answer) after recovering them. The state holds no windows (12 KB each): a
wearer's pending confirmations must fit one changelog record. Request ids and alert ids are deterministic
(wearer, impact time): a replayed suspected fall asks nothing new.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Container, Iterable, Mapping, Sequence

from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.topics import ALERTS, FALL_CONFIRM_REQUEST, FALL_OUTCOMES
from vigil.streams.runtime.validation import Rejection, check_identity

SUSPECTED_SCHEMA = "vigil.falls.FallSuspected"
RESPONSE_SCHEMA = "vigil.falls.UserResponse"
ALERT_KIND = "fall.emergency"
# Settled requests remembered per wearer: enough to recognise re-sent or late answers to recent ones.
DECIDED_KEPT = 64
# The label each outcome gives the suspected fall, for monitoring and retraining.
LABEL_OF_OUTCOME = {"DISMISSED": "false_alarm", "EMERGENCY_HELP": "fall", "EMERGENCY_NO_RESPONSE": "unconfirmed"}
# Shown on emergency alerts: the features a responder can read at a glance.
ALERT_FEATURES = ("peak_g", "dip_pre1s_g", "angle_change_deg", "std_mag_post1p5_3")


def request_id(wearer_id: str, impact_ts_ms: int) -> str:
    return f"{wearer_id}/fall/{impact_ts_ms}"


@dataclass
class PendingConfirmation:
    request_id: str
    seq: int
    impact_ts_ms: int
    requested_ts_ms: int
    deadline_ts_ms: int
    probability: float
    threshold: float
    model_version: str
    window_start_ts_ms: int
    fs_hz: float
    features: dict[str, float]


@dataclass
class Decision:
    request_id: str
    seq: int
    outcome: str  # EMERGENCY_NO_RESPONSE, EMERGENCY_HELP or DISMISSED
    decided_ts_ms: int
    impact_ts_ms: int
    probability: float
    model_version: str
    closed: bool = False  # a late "I'm OK" closed the no-answer alert


@dataclass
class WearerConfirmState:
    last_seq: int = -1
    partition: int = 0  # where the wearer's records live: the timer writes the state back there
    pending: dict[str, PendingConfirmation] = field(default_factory=dict)
    decided: list[Decision] = field(default_factory=list)

    def decision(self, rid: str) -> Decision | None:
        return next((d for d in self.decided if d.request_id == rid), None)

    def settle(self, pending: PendingConfirmation, outcome: str, now_ms: int) -> Decision:
        del self.pending[pending.request_id]
        decision = Decision(pending.request_id, pending.seq, outcome, now_ms, pending.impact_ts_ms, pending.probability, pending.model_version)
        self.decided = (self.decided + [decision])[-DECIDED_KEPT:]
        return decision

    def to_bytes(self) -> bytes:
        header = {"last_seq": self.last_seq, "partition": self.partition, "pending": {rid: asdict(p) for rid, p in self.pending.items()},
                  "decided": [asdict(d) for d in self.decided]}
        return pack_state(header)

    @classmethod
    def from_bytes(cls, data: bytes) -> "WearerConfirmState":
        header, _ = unpack_state(data)
        pending = {rid: PendingConfirmation(**p) for rid, p in header["pending"].items()}
        return cls(last_seq=header["last_seq"], partition=header["partition"], pending=pending,
                   decided=[Decision(**d) for d in header["decided"]])


def overdue_partitions(states: Iterable[WearerConfirmState], now_ms: float) -> dict[int, int]:
    """Partition -> the earliest deadline already passed among its wearers' pending confirmations."""
    due: dict[int, int] = {}
    for state in states:
        for pending in state.pending.values():
            if pending.deadline_ts_ms <= now_ms:
                due[state.partition] = min(due.get(state.partition, pending.deadline_ts_ms), pending.deadline_ts_ms)
    return due


def hold_is_over(deadline_ts_ms: float, taken_ms: float, now_ms: float, max_hold_ms: float) -> bool:
    """Whether an expired confirmation may be alerted without proof that every answer was read.

    The hold counts from the later of the deadline and the moment this worker
    took the wearer's partition, so a worker that starts slowly after an outage
    still gets the whole hold to read the answers sent while it was down.

    >>> hold_is_over(deadline_ts_ms=10_000, taken_ms=0, now_ms=20_000, max_hold_ms=10_000)
    True
    >>> hold_is_over(deadline_ts_ms=10_000, taken_ms=15_000, now_ms=20_000, max_hold_ms=10_000)
    False
    """
    return now_ms - max(deadline_ts_ms, taken_ms) >= max_hold_ms


def emergency_alert(wearer_id: str, event: PendingConfirmation | Decision, state: str, ts_ms: int, detail: str,
                    features: Mapping[str, float] | None = None) -> dict[str, Any]:
    """An Alert record (schemas/common/Alert.v1.avsc) of kind fall.emergency.

    The pump-shaped fields carry the fall's evidence: ``edge_score`` is stage 2's
    probability, ``cloud_score`` is 0 (the fall cascade has no cloud tier), and
    ``top_features`` the window features a responder reads first.
    """
    return {
        "alert_id": event.request_id,
        "asset_id": wearer_id,
        "kind": ALERT_KIND,
        "state": state,
        "severity": "CRITICAL" if state != "CLOSE" else "LOW",
        "ts_ms": ts_ms,
        "opened_ts_ms": event.impact_ts_ms,
        "first_seq": event.seq,
        "first_stream": "imu",
        "last_seq": event.seq,
        "last_stream": "imu",
        "confirmations": 0,
        "edge_score": event.probability,
        "cloud_score": 0.0,
        "model_versions": {"falls": event.model_version},
        "top_features": {name: float(features[name]) for name in ALERT_FEATURES if features and name in features},
        "diagnosis": None,
        "detail": detail,
    }


def outcome_record(wearer_id: str, pending: PendingConfirmation, outcome: str, decided_ts_ms: int,
                   response_ts_ms: int | None) -> dict[str, Any]:
    """A FallOutcome record: the suspected fall, how it was settled, and its features for retraining."""
    return {
        "request_id": pending.request_id, "wearer_id": wearer_id, "seq": pending.seq, "impact_ts_ms": pending.impact_ts_ms,
        "outcome": outcome, "label": LABEL_OF_OUTCOME[outcome], "requested_ts_ms": pending.requested_ts_ms, "decided_ts_ms": decided_ts_ms,
        "response_ts_ms": response_ts_ms, "probability": pending.probability, "threshold": pending.threshold,
        "model_version": pending.model_version, "window_start_ts_ms": pending.window_start_ts_ms, "fs_hz": pending.fs_hz,
        "features": pending.features,
    }


class ConfirmStage:
    """Stage 3: asks the wearer, settles on the answer (``process``) or on the deadline (``expire``)."""

    def __init__(self, codec: AvroCodec, *, suspected_topic: str, response_topic: str, window_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.codec = codec
        self.suspected_topic, self.response_topic = suspected_topic, response_topic
        self.window_ms = int(round(window_s * 1000))
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, WearerConfirmState]) -> StageResult[WearerConfirmState]:
        result: StageResult[WearerConfirmState] = StageResult()
        for message in messages:
            if message.topic == self.response_topic:
                self.take_response(result, message, state)
            else:
                self.ask(result, message, state)
        return result

    def decoded(self, result: StageResult[WearerConfirmState], message: RawMessage, schema: str, ts_field: str) -> dict[str, Any] | None:
        """The record, or None once it is dead-lettered (undecodable, or a wearer id, key or time that is wrong)."""
        record = result.decode(self.codec, message, schema)
        if record is None:
            return None
        found = check_identity(record, message.key, "wearer_id", ts_field)
        if found:
            result.reject(message, found)
            return None
        return record

    def ask(self, result: StageResult[WearerConfirmState], message: RawMessage, state: Mapping[str, WearerConfirmState]) -> None:
        record = self.decoded(result, message, SUSPECTED_SCHEMA, "impact_ts_ms")
        if record is None:
            return
        wearer = record["wearer_id"]
        wearer_state = result.pending_state(wearer, state) or WearerConfirmState()
        if not result.admit(record["seq"], wearer_state.last_seq):
            return
        now = self.now_ms()
        pending = PendingConfirmation(
            request_id=request_id(wearer, record["impact_ts_ms"]), seq=record["seq"], impact_ts_ms=record["impact_ts_ms"],
            requested_ts_ms=now, deadline_ts_ms=now + self.window_ms, probability=record["probability"],
            threshold=record["threshold"], model_version=record["model_version"],
            window_start_ts_ms=record["window_start_ts_ms"], fs_hz=record["fs_hz"], features=dict(record["features"]),
        )
        wearer_state.last_seq, wearer_state.partition = record["seq"], message.partition
        wearer_state.pending[pending.request_id] = pending
        result.update_state(wearer, wearer_state, message.partition)
        result.emit({
            "request_id": pending.request_id, "wearer_id": wearer, "seq": pending.seq, "impact_ts_ms": pending.impact_ts_ms,
            "requested_ts_ms": now, "deadline_ts_ms": pending.deadline_ts_ms, "probability": pending.probability,
        }, float(record["impact_ts_ms"]), FALL_CONFIRM_REQUEST)

    def take_response(self, result: StageResult[WearerConfirmState], message: RawMessage, state: Mapping[str, WearerConfirmState]) -> None:
        record = self.decoded(result, message, RESPONSE_SCHEMA, "ts_ms")
        if record is None:
            return
        wearer, rid, answer = record["wearer_id"], record["request_id"], record["response"]
        wearer_state = result.pending_state(wearer, state)
        pending = wearer_state.pending.get(rid) if wearer_state else None
        now = self.now_ms()
        if pending is not None:
            assert wearer_state is not None
            if answer == "OK":
                self.settle(result, wearer, wearer_state, pending, "DISMISSED", now, record["ts_ms"], float(record["ts_ms"]))
            else:
                detail = f"wearer asked for help {(record['ts_ms'] - pending.requested_ts_ms) / 1000:.1f} s after the request"
                self.settle(result, wearer, wearer_state, pending, "EMERGENCY_HELP", now, record["ts_ms"], float(record["ts_ms"]), detail)
            result.update_state(wearer, wearer_state, wearer_state.partition)
            return
        decision = wearer_state.decision(rid) if wearer_state else None
        if decision is None:
            result.reject(message, Rejection("unknown_request", f"no confirmation request {rid!r} was sent to {wearer!r} (or it is older than the last {DECIDED_KEPT})", wearer))
            return
        assert wearer_state is not None
        if decision.outcome == "EMERGENCY_NO_RESPONSE" and answer == "OK" and not decision.closed:
            # The alert went out unanswered; a late "I'm OK" tells the responders to stand down.
            decision.closed = True
            detail = f"wearer answered OK {(now - decision.decided_ts_ms) / 1000:.1f} s after the alert"
            result.emit(emergency_alert(wearer, decision, "CLOSE", record["ts_ms"], detail), float(record["ts_ms"]), ALERTS)
            result.update_state(wearer, wearer_state, wearer_state.partition)
            return
        result.duplicates += 1  # a re-sent answer, or one to a request already settled the same way

    def expire(self, state: Mapping[str, WearerConfirmState], partitions: Container[int] | None = None) -> StageResult[WearerConfirmState]:
        """Emergency alerts for every pending confirmation past its deadline, on ``partitions`` (None: all)."""
        result: StageResult[WearerConfirmState] = StageResult()
        now = self.now_ms()
        for wearer in list(state):
            wearer_state = state[wearer]
            if partitions is not None and wearer_state.partition not in partitions:
                continue
            due = [p for p in wearer_state.pending.values() if p.deadline_ts_ms <= now]
            detail = f"no answer within {self.window_ms / 1000:g} s of the confirmation request"
            for pending in sorted(due, key=lambda p: p.seq):
                self.settle(result, wearer, wearer_state, pending, "EMERGENCY_NO_RESPONSE", now, None, float(pending.deadline_ts_ms), detail)
            if due:
                result.update_state(wearer, wearer_state, wearer_state.partition)
        return result

    @staticmethod
    def settle(result: StageResult[WearerConfirmState], wearer: str, wearer_state: WearerConfirmState, pending: PendingConfirmation,
               outcome: str, now_ms: int, response_ts_ms: int | None, event_end_ms: float, detail: str = "") -> None:
        """Settle a pending confirmation: its outcome record, and for an emergency the OPEN alert first."""
        wearer_state.settle(pending, outcome, now_ms)
        if outcome != "DISMISSED":
            result.emit(emergency_alert(wearer, pending, "OPEN", pending.impact_ts_ms, detail, pending.features), event_end_ms, ALERTS)
        result.emit(outcome_record(wearer, pending, outcome, now_ms, response_ts_ms), event_end_ms, FALL_OUTCOMES)
