"""Stage alerts + alerts.feedback + maintenance.failures -> alerts.labelled, ops.failures: each pump alert episode joined
with the crews' latest label, and each reported failure judged DETECTED or MISSED against the pump's episodes.

Both inputs are keyed by asset id, so one pump's alerts and its feedback meet
on one partition, and one worker. Per pump the state keeps its alert episodes
(each folded from its OPEN/UPDATE/CLOSE records by
``vigil.models.feedback.episodes_from_alerts``), the label that counts for each
(``latest_feedback``: the latest by ``ts_ms``), and how many records each has
published. A LabelledEpisode record (schemas/ops/LabelledEpisode.v1.avsc) goes
out when an episode opens, when it closes, and when its label arrives or
changes (a severity rise alone publishes nothing; the next record carries it).
Records hold nothing but what the inputs say, no wall clock, so a replayed
input changes nothing and publishes nothing, and the worker's replay fence
recognises the bytes of a record published before a crash.

Feedback:

- invalid (``feedback_problem``), or keyed by another asset than it names:
  dead-lettered with the problem as the detail.
- for an alert id the pump's state does not know: held as pending (after a
  restart the feedback partition may be read ahead of the alerts one), applied
  when the alert arrives, and dead-lettered as an unknown alert id once the
  stage has seen records of that partition (either topic) with broker
  timestamps more than ``unknown_alert_grace_s`` past the feedback's own. A
  partition's clock and the pumps that hold pending feedback live under the
  state key ``partition_key(n)``, so the worker that owns the partition
  recovers them with it. Without broker timestamps (offline replay) pending
  feedback is held.
- the same record twice (a re-send, a replay) counts once; of two that differ
  the later by ``ts_ms`` wins.

Failures (``maintenance.failures``, FailureReport records):

- invalid (``failure_problem``), or keyed by another asset than it names:
  dead-lettered with the problem as the detail.
- kept per pump by failure id (the latest by ``ts_ms`` wins; the same record
  twice counts once) and judged with ``judge_failure`` when it arrives and
  again after each of the pump's alert records, so an alert read late (a
  partition behind the other) turns MISSED into DETECTED. A FailureVerdict
  goes to ``ops.failures`` whenever what it says changes, with the next
  revision; a replay changes nothing and publishes nothing.
- a failure whose time is more than ``retention_days`` before the pump's
  newest alert record is forgotten with the episodes of that age.

State stays bounded: an episode whose newest alert record is more than
``retention_days`` (default 400: a year of labels, with room for a slow crew)
older than its pump's newest alert record is forgotten, open or closed (an
open one that old lost its CLOSE). Feedback for a forgotten episode is then an
unknown alert id. Per kept episode the state holds its distinct alert records
(an OPEN, at most three UPDATEs as severity only rises, a CLOSE; replays are
identical, so stored once), the label and the digests of the feedback applied.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
from typing import Any, Callable, Mapping, Sequence

from vigil.models.feedback import (
    DEFAULT_FAILURE_LOOKBACK_H,
    MS_PER_HOUR,
    Episode,
    episodes_from_alerts,
    failure_problem,
    feedback_problem,
    iso_week,
    judge_failure,
    latest_feedback,
)
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.stage import RawMessage, StageResult
from vigil.streams.runtime.state import pack_state, unpack_state
from vigil.streams.runtime.topics import ALERTS, ALERTS_FEEDBACK, MAINTENANCE_FAILURES, OPS_FAILURES, SCHEMA_OF_TOPIC
from vigil.streams.runtime.validation import Rejection, check_identity

logger = logging.getLogger(__name__)

ALERT_SCHEMA = SCHEMA_OF_TOPIC[ALERTS]
FEEDBACK_SCHEMA = SCHEMA_OF_TOPIC[ALERTS_FEEDBACK]
FAILURE_SCHEMA = SCHEMA_OF_TOPIC[MAINTENANCE_FAILURES]
PUMP_ALERT_KIND = "pump."  # the fall topology shares the alerts topic
DEFAULT_UNKNOWN_ALERT_GRACE_S = 300.0
DEFAULT_RETENTION_DAYS = 400.0
MS_PER_DAY = 86_400_000

# The dead-letter reasons of this stage (listed in validation.REASONS).
INVALID_FEEDBACK = "invalid_feedback"
UNKNOWN_ALERT = "unknown_alert"
INVALID_FAILURE = "invalid_failure"


def partition_key(partition: int) -> str:
    """The state key of a partition's clock and pending index (no asset id starts with ``~``)."""
    return f"~partition/{partition}"


def feedback_digest(record: Mapping[str, Any]) -> str:
    """Identity of a feedback record's content: a record sent (or replayed) twice counts once."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@dataclasses.dataclass
class EpisodeLabel:
    """One pump alert episode as the stage keeps it."""

    kind: str
    # Distinct alert records, cut to what the fold reads: [state, ts_ms, opened_ts_ms, severity, model_versions].
    records: list[list[Any]] = dataclasses.field(default_factory=list)
    label: dict[str, Any] | None = None  # the AlertFeedback record that counts (latest_feedback)
    seen: list[str] = dataclasses.field(default_factory=list)  # digests of the feedback records applied
    revision: int = 0  # LabelledEpisode records published so far
    # [model_version, opened_ts_ms, closed_ts_ms, outcome, fault, failure_ts_ms] of the last one published
    published: list[Any] | None = None
    label_revisions: list[int] = dataclasses.field(default_factory=list)  # revisions that applied or changed the label

    def alert_records(self, alert_id: str, asset_id: str) -> list[dict[str, Any]]:
        return [{"alert_id": alert_id, "asset_id": asset_id, "kind": self.kind, "state": state, "ts_ms": ts_ms,
                 "opened_ts_ms": opened_ts_ms, "severity": severity, "model_versions": versions}
                for state, ts_ms, opened_ts_ms, severity, versions in self.records]

    def newest_ts_ms(self) -> int:
        return max(r[1] for r in self.records)


@dataclasses.dataclass
class PendingFeedback:
    """Feedback for an alert id not read yet, with what a dead letter needs of its message."""

    record: dict[str, Any]
    digest: str
    broker_ts_ms: int | None
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def message(self) -> RawMessage:
        return RawMessage(self.topic, self.partition, self.offset, self.key, self.value, self.broker_ts_ms)

    def to_json(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("key", "value")},
                "key": _b64(self.key), "value": _b64(self.value)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PendingFeedback":
        return cls(**{**data, "key": _unb64(data["key"]), "value": _unb64(data["value"])})


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


@dataclasses.dataclass
class ReportedFailure:
    """One failure as the stage keeps it: the report that counts and what was last published about it."""

    record: dict[str, Any]
    revision: int = 0  # FailureVerdict records published so far
    published: list[Any] | None = None  # [verdict, alert_ids, lead_time_h, model_version, failure_ts_ms, fault]
    verdict_revisions: list[int] = dataclasses.field(default_factory=list)  # revisions that reached a new verdict


@dataclasses.dataclass
class AlertLabelState:
    """A pump's episodes and pending feedback; under ``partition_key(n)``, the partition's clock and pending index."""

    episodes: dict[str, EpisodeLabel] = dataclasses.field(default_factory=dict)
    pending: list[PendingFeedback] = dataclasses.field(default_factory=list)
    newest_alert_ms: int | None = None  # event time of the pump's newest alert record: the retention's clock
    # Only in a partition's entry: its newest broker timestamp, and each pump's oldest pending feedback's.
    clock_ms: int | None = None
    waiting: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: dict[str, ReportedFailure] = dataclasses.field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return pack_state({
            "episodes": {i: dataclasses.asdict(e) for i, e in self.episodes.items()},
            "failures": {i: dataclasses.asdict(f) for i, f in self.failures.items()},
            "pending": [p.to_json() for p in self.pending],
            "newest_alert_ms": self.newest_alert_ms,
            "clock_ms": self.clock_ms,
            "waiting": self.waiting,
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> "AlertLabelState":
        header, _ = unpack_state(data)
        return cls(
            episodes={i: EpisodeLabel(**e) for i, e in header["episodes"].items()},
            pending=[PendingFeedback.from_json(p) for p in header["pending"]],
            newest_alert_ms=header["newest_alert_ms"],
            clock_ms=header["clock_ms"],
            waiting=header["waiting"],
            # absent from state written before failures were judged
            failures={i: ReportedFailure(**f) for i, f in header.get("failures", {}).items()},
        )


def labelled_record(episode: Episode, label: Mapping[str, Any] | None, revision: int) -> dict[str, Any]:
    """A LabelledEpisode record: the episode, its label (all None while unlabelled) and the lead time when known."""
    failure = label.get("failure_ts_ms") if label else None
    lead_time_h = None
    if label is not None and label["outcome"] == "fault-found" and failure is not None:
        lead_time_h = (failure - episode.opened_ts_ms) / MS_PER_HOUR
    return {
        "alert_id": episode.alert_id,
        "asset_id": episode.asset_id,
        "kind": episode.kind,
        "model_version": episode.model_version,
        "week": iso_week(episode.opened_ts_ms),
        "opened_ts_ms": episode.opened_ts_ms,
        "closed_ts_ms": episode.closed_ts_ms,
        "severity": episode.severity,
        "outcome": label["outcome"] if label else None,
        "fault": label.get("fault") if label else None,
        "failure_ts_ms": failure,
        "lead_time_h": lead_time_h,
        "labelled_ts_ms": label["ts_ms"] if label else None,
        "revision": revision,
    }


def _label_part(label: Mapping[str, Any] | None) -> list[Any]:
    return [None, None, None] if label is None else [label["outcome"], label.get("fault"), label.get("failure_ts_ms")]


class AlertFeedbackStage:
    source_topics = (ALERTS, ALERTS_FEEDBACK, MAINTENANCE_FAILURES)

    def __init__(self, codec: AvroCodec, *, alerts_topic: str = ALERTS, feedback_topic: str = ALERTS_FEEDBACK,
                 failures_topic: str = MAINTENANCE_FAILURES, unknown_alert_grace_s: float = DEFAULT_UNKNOWN_ALERT_GRACE_S,
                 retention_days: float = DEFAULT_RETENTION_DAYS, failure_lookback_h: float = DEFAULT_FAILURE_LOOKBACK_H) -> None:
        if unknown_alert_grace_s < 0:
            raise ValueError(f"unknown_alert_grace_s must be >= 0, got {unknown_alert_grace_s}")
        if retention_days <= 0:
            raise ValueError(f"retention_days must be > 0, got {retention_days}")
        if failure_lookback_h <= 0:
            raise ValueError(f"failure_lookback_h must be > 0, got {failure_lookback_h}")
        self.codec = codec
        self.failures_topic = failures_topic
        self.failure_lookback_h = failure_lookback_h
        self.alerts_topic = alerts_topic
        self.feedback_topic = feedback_topic
        self.unknown_alert_grace_s = unknown_alert_grace_s
        self.retention_days = retention_days

    def process(self, messages: Sequence[RawMessage], state: Mapping[str, AlertLabelState]) -> StageResult[AlertLabelState]:
        result: StageResult[AlertLabelState] = StageResult()
        for message in messages:
            if message.topic == self.alerts_topic:
                self._alert(result, state, message)
            elif message.topic == self.feedback_topic:
                self._feedback(result, state, message)
            elif message.topic == self.failures_topic:
                self._failure(result, state, message)
            else:
                raise ValueError(f"{message.topic} is none of {self.alerts_topic}, {self.feedback_topic}, {self.failures_topic}")
            # Per record, not per batch: what goes out must not depend on where batches were cut.
            self._advance_clock(result, state, message)
        return result

    @staticmethod
    def _entry(result: StageResult[AlertLabelState], state: Mapping[str, AlertLabelState], key: str, partition: int) -> AlertLabelState:
        """The batch's working copy of ``key``'s state (a copy: the stored one stays as it was if the batch fails)."""
        entry = result.state_updates.get(key)
        if entry is None:
            stored = state.get(key)
            entry = AlertLabelState.from_bytes(stored.to_bytes()) if stored is not None else AlertLabelState()
        result.update_state(key, entry, partition)
        return entry

    def _alert(self, result: StageResult[AlertLabelState], state: Mapping[str, AlertLabelState], message: RawMessage) -> None:
        record = result.decode(self.codec, message, ALERT_SCHEMA)
        if record is None or not record["kind"].startswith(PUMP_ALERT_KIND):
            return
        asset_id, alert_id = record["asset_id"], record["alert_id"]
        asset = self._entry(result, state, asset_id, message.partition)
        episode = asset.episodes.get(alert_id)
        if episode is None:
            if asset.newest_alert_ms is not None and record["ts_ms"] < asset.newest_alert_ms - self.retention_days * MS_PER_DAY:
                return  # an episode forgotten (or to be): publishing it again would restart its revisions
            episode = asset.episodes[alert_id] = EpisodeLabel(kind=record["kind"])
        cut = [record["state"], record["ts_ms"], record["opened_ts_ms"], record["severity"], dict(record["model_versions"])]
        if cut not in episode.records:
            episode.records.append(cut)
        asset.newest_alert_ms = max(record["ts_ms"], asset.newest_alert_ms if asset.newest_alert_ms is not None else record["ts_ms"])
        waiting = [p for p in asset.pending if p.record["alert_id"] == alert_id]
        if waiting:
            asset.pending = [p for p in asset.pending if p.record["alert_id"] != alert_id]
            for pending in waiting:
                self._apply(episode, alert_id, pending.record, pending.digest)
            self._index_pending(result, state, asset_id, asset, message.partition)
        self._publish(result, asset_id, alert_id, episode, record["ts_ms"])
        self._forget_old(asset)
        self._judge(result, asset_id, asset, sorted(asset.failures), record["ts_ms"])

    def _failure(self, result: StageResult[AlertLabelState], state: Mapping[str, AlertLabelState], message: RawMessage) -> None:
        record = self._checked(result, message, FAILURE_SCHEMA, failure_problem, INVALID_FAILURE, "invalid failure report")
        if record is None:
            return
        asset_id, failure_id = record["asset_id"], record["failure_id"]
        asset = self._entry(result, state, asset_id, message.partition)
        known = asset.failures.get(failure_id)
        if known is not None and (known.record == record or record["ts_ms"] < known.record["ts_ms"]):
            result.duplicates += known.record == record
            return  # the same report again, or one older than the report that counts
        if known is None:
            asset.failures[failure_id] = ReportedFailure(record)
        else:
            known.record = record
        self._judge(result, asset_id, asset, [failure_id], record["ts_ms"])

    def _judge(self, result: StageResult[AlertLabelState], asset_id: str, asset: AlertLabelState, failure_ids: Sequence[str],
               event_ms: int) -> None:
        """Publish each failure's verdict against the pump's episodes (folded once) if it changed since the last one."""
        if not failure_ids:
            return
        records = [r for alert_id, e in asset.episodes.items() for r in e.alert_records(alert_id, asset_id)]
        episodes = list(episodes_from_alerts(records).values())
        for failure_id in failure_ids:
            self._publish_verdict(result, asset_id, failure_id, asset.failures[failure_id], episodes, event_ms)

    def _publish_verdict(self, result: StageResult[AlertLabelState], asset_id: str, failure_id: str, failure: ReportedFailure,
                         episodes: Sequence[Episode], event_ms: int) -> None:
        report = failure.record
        judged = judge_failure(asset_id, report["failure_ts_ms"], episodes,
                               lookback_h=self.failure_lookback_h, reported_version=report.get("model_version"))
        signature = [judged.verdict, list(judged.alert_ids), judged.lead_time_h, judged.model_version,
                     report["failure_ts_ms"], report["fault"]]
        if signature == failure.published:
            return
        if failure.published is None or failure.published[0] != judged.verdict:
            failure.verdict_revisions.append(failure.revision)
        result.emit({"failure_id": failure_id, "asset_id": asset_id, "failure_ts_ms": report["failure_ts_ms"],
                     "fault": report["fault"], "verdict": judged.verdict, "alert_ids": list(judged.alert_ids),
                     "lead_time_h": judged.lead_time_h, "model_version": judged.model_version,
                     "lookback_h": self.failure_lookback_h, "revision": failure.revision},
                    float(event_ms), topic=OPS_FAILURES)
        failure.revision += 1
        failure.published = signature

    def _checked(self, result: StageResult[AlertLabelState], message: RawMessage, schema: str,
                 problem_of: Callable[[Mapping[str, Any]], str | None], reason: str, what: str) -> dict[str, Any] | None:
        """The decoded record, or None after dead-lettering it: undecodable, refused by ``problem_of``, or keyed by
        another asset than it names (it would never meet that asset's alerts)."""
        record = result.decode(self.codec, message, schema)
        if record is None:
            return None
        problem = problem_of(record)
        if problem is not None:
            asset = record.get("asset_id")
            result.reject(message, Rejection(reason, f"{what}: {problem}", asset if isinstance(asset, str) and asset else None))
            return None
        found = check_identity(record, message.key)
        if found is not None:
            result.reject(message, found)
            return None
        return record

    def _feedback(self, result: StageResult[AlertLabelState], state: Mapping[str, AlertLabelState], message: RawMessage) -> None:
        record = self._checked(result, message, FEEDBACK_SCHEMA, feedback_problem, INVALID_FEEDBACK, "invalid feedback")
        if record is None:
            return
        asset_id, alert_id = record["asset_id"], record["alert_id"]
        asset = self._entry(result, state, asset_id, message.partition)
        digest = feedback_digest(record)
        episode = asset.episodes.get(alert_id)
        if episode is not None:
            if self._apply(episode, alert_id, record, digest):
                self._publish(result, asset_id, alert_id, episode, record["ts_ms"])
            else:
                result.duplicates += 1
            return
        if any(p.digest == digest for p in asset.pending):
            result.duplicates += 1
            return
        asset.pending.append(PendingFeedback(record, digest, message.timestamp_ms, message.topic, message.partition,
                                             message.offset, message.key, message.value))
        self._index_pending(result, state, asset_id, asset, message.partition)

    @staticmethod
    def _apply(episode: EpisodeLabel, alert_id: str, record: Mapping[str, Any], digest: str) -> bool:
        """Take ``record`` into the episode's label; False when the same record was taken before."""
        if digest in episode.seen:
            return False
        episode.seen.append(digest)
        known = [episode.label] if episode.label is not None else []
        episode.label = dataclasses.asdict(latest_feedback([*known, record])[alert_id])
        return True

    @staticmethod
    def _publish(result: StageResult[AlertLabelState], asset_id: str, alert_id: str, episode: EpisodeLabel, event_ms: int) -> None:
        """Emit the episode's record if what it says changed since the last one (a replay changes nothing)."""
        folded = episodes_from_alerts(episode.alert_records(alert_id, asset_id), kind_prefix=None)[alert_id]
        label_part = _label_part(episode.label)
        signature = [folded.model_version, folded.opened_ts_ms, folded.closed_ts_ms, *label_part]
        if signature == episode.published:
            return
        if episode.label is not None and (episode.published is None or episode.published[3:] != label_part):
            episode.label_revisions.append(episode.revision)
        result.emit(labelled_record(folded, episode.label, episode.revision), float(event_ms))
        episode.revision += 1
        episode.published = signature

    def _forget_old(self, asset: AlertLabelState) -> None:
        assert asset.newest_alert_ms is not None
        cutoff = asset.newest_alert_ms - self.retention_days * MS_PER_DAY
        asset.episodes = {i: e for i, e in asset.episodes.items() if e.newest_ts_ms() >= cutoff}
        asset.failures = {i: f for i, f in asset.failures.items() if f.record["failure_ts_ms"] >= cutoff}

    def _index_pending(self, result: StageResult[AlertLabelState], state: Mapping[str, AlertLabelState], asset_id: str,
                       asset: AlertLabelState, partition: int) -> None:
        """Keep the partition's index of which pumps hold pending feedback (with a broker time) up to date."""
        stamps = [p.broker_ts_ms for p in asset.pending if p.broker_ts_ms is not None]
        index = self._entry(result, state, partition_key(partition), partition)
        if stamps:
            index.waiting[asset_id] = min(stamps)
        else:
            index.waiting.pop(asset_id, None)

    def _advance_clock(self, result: StageResult[AlertLabelState], state: Mapping[str, AlertLabelState], message: RawMessage) -> None:
        """Move the partition's clock to the message's broker time; dead-letter the pending feedback it has outwaited."""
        if message.timestamp_ms is None:
            return
        clock = self._entry(result, state, partition_key(message.partition), message.partition)
        clock.clock_ms = message.timestamp_ms if clock.clock_ms is None else max(clock.clock_ms, message.timestamp_ms)
        grace_ms = self.unknown_alert_grace_s * 1000
        for asset_id in sorted(a for a, since in clock.waiting.items() if clock.clock_ms - since > grace_ms):
            asset = self._entry(result, state, asset_id, message.partition)
            expired = [p for p in asset.pending if p.broker_ts_ms is not None and clock.clock_ms - p.broker_ts_ms > grace_ms]
            asset.pending = [p for p in asset.pending if p not in expired]
            for pending in expired:
                alert_id = pending.record["alert_id"]
                result.reject(pending.message(), Rejection(
                    UNKNOWN_ALERT,
                    f"unknown alert id {alert_id!r}: no pump alert of {asset_id!r} with that id was read within "
                    f"{self.unknown_alert_grace_s:g} s (broker time) after the feedback, nor kept from the last "
                    f"{self.retention_days:g} days of its alerts",
                    asset_id,
                ))
            self._index_pending(result, state, asset_id, asset, message.partition)


def label_changes(result: StageResult[AlertLabelState]) -> list[tuple[str, str]]:
    """(model_version, outcome) of each label a batch newly applied or changed, for ``vigil_alert_feedback_total``.

    Read from the batch's outputs and the state it leaves: an output whose revision the episode's state
    lists as a label change. A re-sent label, or a record published because the episode opened or
    closed with its label unchanged, is not a change.
    """
    return _reached(result, None, lambda asset, r: asset.episodes.get(r["alert_id"]), lambda e: e.label_revisions, "outcome")


def verdict_changes(result: StageResult[AlertLabelState]) -> list[tuple[str, str]]:
    """(model_version, verdict) of each failure verdict a batch reached anew, for ``vigil_failure_verdicts_total``:
    a first verdict, or one that changed (MISSED -> DETECTED after a late alert); not a re-published one."""
    return _reached(result, OPS_FAILURES, lambda asset, r: asset.failures.get(r["failure_id"]), lambda f: f.verdict_revisions,
                    "verdict")


def _reached(result: StageResult[AlertLabelState], topic: str | None, entry_of: Callable[[AlertLabelState, dict[str, Any]], Any],
             revisions_of: Callable[[Any], list[int]], value: str) -> list[tuple[str, str]]:
    """(model_version, ``value``) of the outputs to ``topic`` (None: alerts.labelled) whose revision their state entry
    lists as reaching a new ``value``."""
    changes = []
    for record, output_topic in zip(result.outputs, result.output_topics):
        if output_topic != topic or record.get(value) is None:  # an unlabelled episode has no outcome
            continue
        asset = result.state_updates.get(record["asset_id"])
        entry = entry_of(asset, record) if asset is not None else None
        if entry is not None and record["revision"] in revisions_of(entry):
            changes.append((record["model_version"], record[value]))
    return changes
