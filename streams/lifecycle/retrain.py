"""`vigil retrain pumps|falls`: a candidate trained from the stream, judged against the model in force, promoted or shadowed.

Falls (``retrain_falls``): stage 2 refitted on the active model's training subjects plus every
confirmation a wearer dismissed (``fall.outcomes``, labelled false alarms), judged on the pack's
held-out subjects with the same gate.

Pumps:

1. Read ``pump.features`` (whole topic, cut to an event-time range and, if
   given, to offset ranges per partition), ``alerts`` and ``pump.deadletter``;
   lineage (topic, partitions, offset ranges) goes into the candidate's
   metadata.
2. Keep healthy windows (``vigil.models.retraining.select_training_windows``):
   none inside an alert episode, no asset with too many dead letters, enough
   windows per stream; refuse to train otherwise.
3. Train with the one training path (``fit_pump_models``), save both tiers.
4. Judge both pairs on held-back failures and apply the gate to each
   judgement: on a run-to-failure pack (``--judge``), and on what maintenance
   said about the stream (``alerts.feedback`` labels and
   ``maintenance.failures`` reports): both pairs replay the pumps' windows of
   ``pump.features`` from their first, and are scored on the reported
   failures (recall) and the episodes labelled nothing-found (false alarms).
   Promote the pair in one transaction when every gate passes, or make it the
   shadow and say why. With no failure to judge recall on (no pack, no
   failure reported), the candidate goes to shadow.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from vigil.models.alerts import AlertPolicy
from vigil.models.registry import CLOUD_TIER, EDGE_TIER, ModelRegistry
from vigil.models.retraining import (
    LabelledCases,
    RetrainBounds,
    alert_spans,
    drift_spans,
    judge_on_labelled,
    labelled_cases,
    promotion_gate,
    select_training_windows,
)
from vigil.streams.lifecycle.control import ModelChanges, read_records, read_to_end
from vigil.streams.pumps.cloud import tuned_thresholds
from vigil.streams.pumps.training import PumpTrainingConfig, fit_pump_models, save_pump_models
from vigil.streams.runtime.codec import AvroCodec, DecodeError
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import (
    ALERTS,
    ALERTS_FEEDBACK,
    FALL_OUTCOMES,
    MAINTENANCE_FAILURES,
    OPS_DRIFT,
    OPS_FAILURES,
    PUMP_DEADLETTER,
    PUMP_FEATURES,
    SCHEMA_OF_TOPIC,
)

logger = logging.getLogger(__name__)


def read_feature_windows(settings: Settings, since_ms: int | None, until_ms: int | None, codec: AvroCodec,
                         offsets: Mapping[int, tuple[int, int]] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """pump.features windows with event time in [since, until) and, with ``offsets`` (partition -> first, last offset,
    inclusive; other partitions left out), within those ranges; their lineage; and every window of the topic."""
    schema = SCHEMA_OF_TOPIC[PUMP_FEATURES]
    windows, every, read = [], [], defaultdict(list)
    for record in read_to_end(settings, PUMP_FEATURES, timeout_s=300.0):
        window = codec.decode(record.value, schema)
        every.append(window)
        in_offsets = offsets is None or (record.partition in offsets and
                                         offsets[record.partition][0] <= record.offset <= offsets[record.partition][1])
        if in_offsets and (since_ms is None or window["ts_ms"] >= since_ms) and (until_ms is None or window["ts_ms"] < until_ms):
            windows.append(window)
            read[record.partition].append(record.offset)
    lineage = {"topic": settings.topic(PUMP_FEATURES), "since_ms": since_ms, "until_ms": until_ms,
               "offsets": {str(p): [min(o), max(o)] for p, o in sorted(read.items())}, "windows": len(windows),
               "offsets_requested": None if offsets is None else {str(p): list(r) for p, r in sorted(offsets.items())}}
    return windows, lineage, every


def replayed_windows(windows: list[dict[str, Any]], cases: LabelledCases) -> list[dict[str, Any]]:
    """Every window of the pumps the cases concern, from their first (the edge tier's commissioning baseline
    included), in event order: what each pair replays."""
    assets = set(cases.assets)
    return sorted((w for w in windows if w["asset_id"] in assets), key=lambda w: (w["ts_ms"], w["asset_id"], w["stream"]))


def judge_on_stream(replayed: list[dict[str, Any]], cases: LabelledCases, pair: dict[str, tuple[Any, str, dict[str, Any]]],
                    settings: Settings) -> dict[str, Any]:
    """Recall and false alarms of an (edge, cloud) pair on what maintenance said about the stream, from its alerts on
    ``replayed`` (``replayed_windows``) through the offline stages."""
    from vigil.streams.pumps.offline import OfflinePumpPipeline

    (edge, edge_version, _), (cloud, cloud_version, cloud_meta) = pair[EDGE_TIER], pair[CLOUD_TIER]
    pipeline = OfflinePumpPipeline(edge=(edge, edge_version), cloud=(cloud, cloud_version),
                                   cloud_thresholds=tuned_thresholds(cloud, cloud_meta), policy=AlertPolicy(settings.alert_policy()))
    alerts: list[dict[str, Any]] = []
    for start in range(0, len(replayed), 256):
        alerts += pipeline.feed_features(replayed[start:start + 256]).alerts
    return {**judge_on_labelled(alerts, cases), "windows_replayed": len(replayed),
            "models": {"edge": edge_version, "cloud": cloud_version}}


def _alerts_and_deadletters(settings: Settings, codec: AvroCodec) -> tuple[list[dict[str, Any]], Counter[str]]:
    alerts = [codec.decode(r.value, SCHEMA_OF_TOPIC[ALERTS]) for r in read_to_end(settings, ALERTS, timeout_s=120.0)]
    letters = Counter(codec.decode(r.value, SCHEMA_OF_TOPIC[PUMP_DEADLETTER]).get("asset_id") or "?"
                      for r in read_to_end(settings, PUMP_DEADLETTER, timeout_s=120.0))
    return alerts, letters


def wait_for_drift(settings: Settings, should_stop: Callable[[], bool], *, scopes: tuple[str, ...] = ("fleet",),
                   codec: AvroCodec | None = None) -> dict[str, Any] | None:
    """The next feature-drift finding that opens on ``ops.drift`` (from now on) in one of ``scopes``; None once
    ``should_stop()``."""
    found = wait_for_trigger(settings, should_stop, drift_scopes=scopes, codec=codec)
    return found[1] if found is not None else None


def wait_for_trigger(settings: Settings, should_stop: Callable[[], bool], *, drift_scopes: tuple[str, ...] | None = ("fleet",),
                     missed_failures: bool = False, codec: AvroCodec | None = None) -> tuple[str, dict[str, Any]] | None:
    """("drift", finding) for the next feature-drift finding that opens on ``ops.drift`` in one of ``drift_scopes``, or
    ("missed_failure", verdict) for the next MISSED verdict on ``ops.failures`` (the brief's "any missed failure: retrain
    at once"), whichever comes first from now on; None once ``should_stop()``. Its own consumer, every partition
    assigned at the end: no group, nothing committed."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    codec = codec or AvroCodec()
    followed = {settings.topic(topic): topic for topic, wanted in ((OPS_DRIFT, drift_scopes is not None), (OPS_FAILURES, missed_failures))
                if wanted}
    if not followed:
        raise ValueError("follow drift findings, missed failures or both")
    consumer = Consumer(settings.reader_config(f"{settings.group_id}.retrain-trigger-{uuid.uuid4().hex[:8]}"))
    try:
        assigned = []
        for name in followed:
            metadata = consumer.list_topics(name, timeout=30.0).topics.get(name)
            if metadata is None or metadata.error is not None:
                raise RuntimeError(f"no topic {name} to follow: start a worker (or run `vigil topics`) first")
            assigned += [TopicPartition(name, p, OFFSET_END) for p in metadata.partitions]
        consumer.assign(assigned)
        while not should_stop():
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is not None:
                    continue
                topic = followed[msg.topic()]
                try:
                    record = codec.decode(msg.value(), SCHEMA_OF_TOPIC[topic])
                except DecodeError:
                    continue
                if topic == OPS_FAILURES and record["verdict"] == "MISSED":
                    return "missed_failure", record
                if topic == OPS_DRIFT and record["state"] == "OPEN" and record["kind"] == "feature" \
                        and record["scope"] in (drift_scopes or ()):
                    return "drift", record
        return None
    finally:
        consumer.close()


def judge(pack: str | Path, pair: dict[str, tuple[Any, str, dict[str, Any]]], settings: Settings) -> dict[str, Any]:
    """Recall and false alarms of an (edge, cloud) pair on a run-to-failure pack, with the protocol's report."""
    from vigil.streams.evaluation.pumps import evaluate_run_to_failure

    (edge, edge_version, _), (cloud, cloud_version, cloud_meta) = pair[EDGE_TIER], pair[CLOUD_TIER]
    report = evaluate_run_to_failure(pack, (edge, edge_version), (cloud, cloud_version),
                                     cloud_thresholds=tuned_thresholds(cloud, cloud_meta), policy=settings.alert_policy())
    return {"recall": report["detected"] / report["assets"] if report["assets"] else 0.0,
            "false_alarms": report["false_alarm_assets"], "detected": report["detected"], "assets": report["assets"],
            "median_lead_hours": report["median_lead_hours"], "models": report["models"]}


def serving_pair(changes: ModelChanges) -> dict[str, tuple[Any, str, dict[str, Any]]]:
    """The (model, version, metadata) per pump tier that workers serve: models.control's, else the registry's active."""
    pair = {}
    for tier in (EDGE_TIER, CLOUD_TIER):
        in_force = changes.in_force(tier)
        version = in_force["version"] if in_force else changes.registry.active_version(tier)
        model, meta = changes.registry.load(tier, version)
        pair[tier] = (model, version, meta)
    return pair


def retrain_pumps(settings: Settings, *, since_ms: int | None = None, until_ms: int | None = None, judge_pack: str | Path | None = None,
                  bounds: RetrainBounds = RetrainBounds(), config: PumpTrainingConfig = PumpTrainingConfig(),
                  who: str | None = None, progress: Callable[[str], None] = lambda step: None,
                  offsets: Mapping[int, tuple[int, int]] | None = None) -> dict[str, Any]:
    """One retraining: returns the report (lineage, checks, judgement, decision). Raises ValueError when the
    stream does not hold enough healthy data to train on; nothing is saved then."""
    codec = AvroCodec()
    changes = ModelChanges(settings, ModelRegistry(settings.models_dir), codec)
    started = time.monotonic()
    progress("reading pump.features, alerts, dead letters, drift findings and maintenance's labels")
    windows, lineage, every_window = read_feature_windows(settings, since_ms, until_ms, codec, offsets)
    alerts, letters = _alerts_and_deadletters(settings, codec)
    cases = labelled_cases(alerts, read_records(settings, codec, ALERTS_FEEDBACK)[0], read_records(settings, codec, MAINTENANCE_FAILURES)[0])
    findings = [codec.decode(r.value, SCHEMA_OF_TOPIC[OPS_DRIFT]) for r in read_to_end(settings, OPS_DRIFT, timeout_s=120.0)]
    kept, checks, problems = select_training_windows(windows, alert_spans(alerts), letters, bounds, drifting=drift_spans(findings))
    if problems:
        raise ValueError(f"not retraining: {'; '.join(problems)} (read {len(windows)} windows from {lineage['topic']})")
    progress(f"training on {len(kept)} windows of {len(checks['assets_kept'])} assets")
    fitted = fit_pump_models(kept, config=config, source={"stream": lineage, "checks": checks})
    edge_version, cloud_version = save_pump_models(changes.registry, fitted, activate=False)
    candidate = {EDGE_TIER: (fitted.edge, edge_version, fitted.edge_metadata),
                 CLOUD_TIER: (fitted.cloud, cloud_version, {**fitted.cloud_metadata, "edge_version": edge_version})}
    active = serving_pair(changes)
    report: dict[str, Any] = {"lineage": lineage, "checks": checks, "bounds": asdict(bounds),
                              "candidate": {EDGE_TIER: edge_version, CLOUD_TIER: cloud_version},
                              "active": {tier: v for tier, (_, v, _) in active.items()}}
    gates: list[tuple[bool, list[str]]] = []
    if judge_pack is not None:
        progress(f"judging both pairs on {judge_pack}")
        report["judged_on"] = str(judge_pack)
        report["active_judgement"] = judge(judge_pack, active, settings)
        report["candidate_judgement"] = judge(judge_pack, candidate, settings)
        passed, why = promotion_gate(report["active_judgement"], report["candidate_judgement"], bounds)
        gates.append((passed, [f"pack: {r}" for r in why]))
    if cases.failures or cases.quiet:
        progress(f"judging both pairs on {len(cases.failures)} reported failures and {len(cases.quiet)} nothing-found episodes")
        replayed = replayed_windows(every_window, cases)
        report["stream_judgement"] = {"active": judge_on_stream(replayed, cases, active, settings),
                                      "candidate": judge_on_stream(replayed, cases, candidate, settings)}
        if cases.failures:
            passed, why = promotion_gate(report["stream_judgement"]["active"], report["stream_judgement"]["candidate"], bounds)
            gates.append((passed, [f"stream: {r}" for r in why]))
    if gates:
        promote, reasons = all(passed for passed, _ in gates), [r for _, why in gates for r in why]
    else:
        promote, reasons = False, [("no held-back failures to judge on (--judge PACK, or failures reported on "
                                    f"{settings.topic(MAINTENANCE_FAILURES)}): kept as shadow")]
    alias = "active" if promote else "shadow"
    why = f"retrained on {len(kept)} windows of {lineage['topic']} ({'; '.join(reasons)})"
    progress(f"{'promoting' if promote else 'registering as shadow'}: {'; '.join(reasons)}")
    written = changes.promote_together([(EDGE_TIER, edge_version), (CLOUD_TIER, cloud_version)], why=why, who=who or "vigil retrain",
                                       alias=alias)
    report.update({"decision": "promoted" if promote else "shadow", "reasons": reasons, "changes": written,
                   "wall_s": round(time.monotonic() - started, 2)})
    logger.info("retrained", extra={"decision": report["decision"], "edge": edge_version, "cloud": cloud_version})
    return report


FIELD_SUBJECT = "field-dismissed"


def with_dismissed(data: Any, features: np.ndarray) -> Any:
    """The candidates plus one ADL trial per dismissed confirmation (the wearer said OK): labelled negatives for
    stage 2, under a pseudo-subject of their own so they are trained on and never judged."""
    from dataclasses import replace

    m = len(features)
    if m == 0:
        return data
    n = data.is_fall.size
    return replace(
        data,
        features=np.vstack([data.features, features]),
        trial=np.concatenate([data.trial, np.arange(n, n + m)]),
        passed=np.concatenate([data.passed, np.ones(m, bool)]),
        peak_g=np.concatenate([data.peak_g, np.zeros(m)]),
        is_fall=np.concatenate([data.is_fall, np.zeros(m, bool)]),
        subject=np.concatenate([data.subject.astype(object), np.full(m, FIELD_SUBJECT, dtype=object)]),
        activity=np.concatenate([data.activity.astype(object), np.full(m, "dismissed", dtype=object)]),
        trial_seconds=np.concatenate([data.trial_seconds, np.zeros(m)]),
    )


def read_dismissed(settings: Settings, codec: AvroCodec) -> tuple[np.ndarray, dict[str, Any]]:
    """The stage-2 features of every confirmation a wearer dismissed (fall.outcomes, label false_alarm), and lineage."""
    from vigil.models.falls import FEATURE_NAMES

    rows, offsets = [], defaultdict(list)
    for record in read_to_end(settings, FALL_OUTCOMES, timeout_s=120.0):
        outcome = codec.decode(record.value, SCHEMA_OF_TOPIC[FALL_OUTCOMES])
        if outcome["outcome"] == "DISMISSED" and all(name in outcome["features"] for name in FEATURE_NAMES):
            rows.append([outcome["features"][name] for name in FEATURE_NAMES])
            offsets[record.partition].append(record.offset)
    lineage = {"topic": settings.topic(FALL_OUTCOMES), "dismissed": len(rows),
               "offsets": {str(p): [min(o), max(o)] for p, o in sorted(offsets.items())}}
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURE_NAMES)), lineage


def retrain_falls(settings: Settings, pack: str | Path, *, bounds: RetrainBounds = RetrainBounds(), who: str | None = None,
                  progress: Callable[[str], None] = lambda step: None) -> dict[str, Any]:
    """Stage 2 refitted on the active model's training subjects of a SisFall-layout ``pack`` plus the dismissed
    confirmations of fall.outcomes, judged against the active model on the pack's other subjects, then promoted or
    shadowed by the gate (recall = sensitivity on held-out falls, false alarms = held-out ADL trials it fires on)."""
    from vigil.models.registry import FALL_TIER
    from vigil.models.training import fingerprint
    from vigil.streams.evaluation.falls import evaluate_falls
    from vigil.streams.falls.offline import load_candidates
    from vigil.streams.falls.training import fall_model_metadata, fit_fall_classifier

    codec = AvroCodec()
    changes = ModelChanges(settings, ModelRegistry(settings.models_dir), codec)
    started = time.monotonic()
    in_force = changes.in_force(FALL_TIER)
    active_version = in_force["version"] if in_force else changes.registry.active_version(FALL_TIER)
    if active_version is None:
        raise ValueError("no active falls model to retrain against: `vigil train falls --pack PATH` first")
    active, active_meta = changes.registry.load(FALL_TIER, active_version)
    trained = list(active_meta.get("trained_subjects") or [])
    progress(f"screening {pack}")
    data = load_candidates(pack)
    held_out = sorted(set(data.subject.tolist()) - set(trained))
    if not trained or not held_out:
        raise ValueError(f"the active falls model {active_version} names no training subjects of {pack} with others left to judge on")
    progress("reading fall.outcomes")
    dismissed, lineage = read_dismissed(settings, codec)
    augmented = with_dismissed(data, dismissed)
    progress(f"training on {len(trained)} subjects and {len(dismissed)} dismissed confirmations")
    candidate = fit_fall_classifier(augmented, trained + ([FIELD_SUBJECT] if len(dismissed) else []))
    chosen = np.isin(augmented.subject, trained + [FIELD_SUBJECT])[augmented.trial]
    metadata = {**fall_model_metadata(data, candidate, trained, pack), "source": {"pack": str(pack), "subjects": trained,
                                                                                  "stream": lineage},
                "training_data_fingerprint": fingerprint([augmented.features[chosen]])}
    version = changes.registry.save(FALL_TIER, candidate, metadata)
    progress(f"judging both on {len(held_out)} held-out subjects")
    judged = {}
    for name, model in (("active", active), ("candidate", candidate)):
        report = evaluate_falls(data, model, trained)
        judged[name] = {"recall": report["sensitivity"], "false_alarms": sum(s["false_alarm_trials"] for s in report["per_subject"]),
                        "sensitivity": report["sensitivity"], "specificity": report["specificity"],
                        "false_alarms_per_hour_adl": report["false_alarms_per_hour_adl"]["stage2"]}
    promote, reasons = promotion_gate(judged["active"], judged["candidate"], bounds)
    why = f"retrained with {len(dismissed)} dismissed confirmations of {lineage['topic']} ({'; '.join(reasons)})"
    written = changes.promote(FALL_TIER, version, why=why, who=who or "vigil retrain", alias="active" if promote else "shadow")
    return {"lineage": lineage, "candidate": version, "active": active_version, "held_out_subjects": held_out,
            "active_judgement": judged["active"], "candidate_judgement": judged["candidate"],
            "decision": "promoted" if promote else "shadow", "reasons": reasons, "changes": [written],
            "wall_s": round(time.monotonic() - started, 2)}
