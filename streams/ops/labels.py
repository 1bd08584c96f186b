"""What maintenance crews send: labels for alert episodes (find the alert, build the AlertFeedback record, send it) and
reports of failures, alerted or not (FailureReport records, with the model versions serving when the asset failed).

Used by `vigil alerts resolve`, `vigil failures report` and the demo's simulated crew; the label stage (``feedback``) joins
them with the episodes.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from vigil.streams.runtime.codec import AvroCodec, DecodeError
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import ALERTS, ALERTS_FEEDBACK, MAINTENANCE_FAILURES, SCHEMA_OF_TOPIC


def find_alert(settings: Settings, codec: AvroCodec, alert_id: str, timeout_s: float = 60.0) -> dict[str, Any] | None:
    """A record of the alert episode ``alert_id`` on the alerts topic (its OPEN when kept), or None."""
    from vigil.streams.lifecycle.control import read_to_end

    found = None
    for record in read_to_end(settings, ALERTS, timeout_s=timeout_s):
        try:
            alert = codec.decode(record.value, SCHEMA_OF_TOPIC[ALERTS])
        except DecodeError:
            continue  # the workers dead-letter what is not an Alert; it names no episode
        if alert["alert_id"] == alert_id:
            if alert["state"] == "OPEN":
                return alert
            found = found or alert
    return found


def feedback_record(alert: dict[str, Any], outcome: str, *, who: str, now_ms: int, fault: str | None = None, note: str | None = None,
                    failure_ts_ms: int | None = None) -> dict[str, Any]:
    """The AlertFeedback record for ``alert``: resolved and sent now, keyed (by the caller) by the alert's asset.

    >>> feedback_record({"alert_id": "ab12", "asset_id": "pump-7"}, "fault-found", who="crew-3", now_ms=5, failure_ts_ms=2)
    {'alert_id': 'ab12', 'asset_id': 'pump-7', 'outcome': 'fault-found', 'fault': None, 'note': None, 'resolved_ts_ms': 5, 'failure_ts_ms': 2, 'who': 'crew-3', 'ts_ms': 5}
    """
    return {"alert_id": alert["alert_id"], "asset_id": alert["asset_id"], "outcome": outcome, "fault": fault, "note": note,
            "resolved_ts_ms": now_ms, "failure_ts_ms": failure_ts_ms, "who": who, "ts_ms": now_ms}


def send_feedback(settings: Settings, codec: AvroCodec, record: dict[str, Any], timeout_s: float = 30.0) -> tuple[int, int]:
    """Produce ``record`` to alerts.feedback keyed by its asset (idempotent, acks=all) and wait for the broker; (partition, offset)."""
    return send_feedback_records(settings, codec, [record], timeout_s)[0]


def send_feedback_records(settings: Settings, codec: AvroCodec, records: Sequence[dict[str, Any]],
                          timeout_s: float = 30.0) -> list[tuple[int, int]]:
    """Produce ``records`` to alerts.feedback, each keyed by its asset, in order; (partition, offset) of each once acknowledged."""
    return send_asset_records(settings, codec, ALERTS_FEEDBACK, records, timeout_s)


def failure_record(asset_id: str, failure_ts_ms: int, fault: str, *, who: str, now_ms: int, note: str | None = None,
                   model_version: str | None = None, failure_id: str | None = None) -> dict[str, Any]:
    """The FailureReport record; its id is ``asset/failure time`` unless the crew names one (a job number).

    >>> failure_record("pump-7", 2, "seal_leak", who="crew-3", now_ms=5, model_version="e1/c1")
    {'failure_id': 'pump-7/2', 'asset_id': 'pump-7', 'failure_ts_ms': 2, 'fault': 'seal_leak', 'note': None, 'model_version': 'e1/c1', 'who': 'crew-3', 'ts_ms': 5}
    """
    from vigil.models.feedback import failure_id_for

    return {"failure_id": failure_id or failure_id_for(asset_id, failure_ts_ms), "asset_id": asset_id, "failure_ts_ms": failure_ts_ms,
            "fault": fault, "note": note, "model_version": model_version, "who": who, "ts_ms": now_ms}


def serving_version_at(settings: Settings, codec: AvroCodec, at_ms: int, active: Mapping[str, str | None] | None = None) -> str | None:
    """The ``edge/cloud`` pair serving at ``at_ms`` by ``models.audit``; a tier the audit never changed is the registry's
    active one (``active``: tier -> version, what workers load at start). None when either tier is unknown."""
    from vigil.models.lifecycle import active_version_at
    from vigil.models.registry import CLOUD_TIER, EDGE_TIER
    from vigil.streams.lifecycle.control import read_changes
    from vigil.streams.runtime.topics import MODELS_AUDIT

    history = read_changes(settings, MODELS_AUDIT, codec)
    versions = []
    for tier in (EDGE_TIER, CLOUD_TIER):
        changed = any(c["tier"] == tier and c["alias"] == "active" for c in history)
        version = active_version_at(history, tier, at_ms) if changed else (active or {}).get(tier)
        if version is None:
            return None
        versions.append(version)
    return "/".join(versions)


def send_failure_reports(settings: Settings, codec: AvroCodec, records: Sequence[dict[str, Any]],
                         timeout_s: float = 30.0) -> list[tuple[int, int]]:
    """Produce FailureReport ``records`` to maintenance.failures, keyed by asset; (partition, offset) of each once acknowledged."""
    return send_asset_records(settings, codec, MAINTENANCE_FAILURES, records, timeout_s)


def send_asset_records(settings: Settings, codec: AvroCodec, topic_name: str, records: Sequence[dict[str, Any]],
                       timeout_s: float = 30.0) -> list[tuple[int, int]]:
    """Produce ``records`` to ``topic_name`` (logical), each keyed by its asset, in order (idempotent, acks=all); (partition,
    offset) of each once the broker has acknowledged it."""
    from confluent_kafka import Producer

    topic = settings.topic(topic_name)
    producer = Producer(settings.confluent_config(**{"enable.idempotence": True, "acks": "all", "log.connection.close": False,
                                                     "message.timeout.ms": int(timeout_s * 1000), "partitioner": "murmur2_random"}))
    delivered: list[Any] = []
    for record in records:
        producer.produce(topic, key=record["asset_id"].encode(), value=codec.encode(topic, SCHEMA_OF_TOPIC[topic_name], record),
                         on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(timeout_s + 5)
    if len(delivered) < len(records):
        raise RuntimeError(f"the broker did not acknowledge {len(records) - len(delivered)} record(s) for {topic} within "
                           f"{timeout_s:g} s; they may not have been sent")
    failed = [err for err, _ in delivered if err is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} record(s) were not sent to {topic}: {failed[0].str()}")
    return [(msg.partition(), msg.offset()) for _, msg in delivered]
