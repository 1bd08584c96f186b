"""ControlApplier: what a worker does with each models.control record, without Kafka."""
from __future__ import annotations

import pytest

from vigil.models.registry import CLOUD_TIER, EDGE_TIER
from vigil.streams.lifecycle.watcher import ControlApplier
from vigil.streams.pumps.cloud import CloudStage
from vigil.streams.pumps.edge import EdgeStage
from vigil.streams.pumps.offline import OfflinePumpPipeline
from vigil.streams.pumps.training import pump_pair_problem
from vigil.streams.runtime import metrics

FEATURES, FEATURE_SCHEMA = "pump.features", "vigil.pumps.FeatureWindow"


@pytest.fixture
def applier(two_edge_versions, codec):
    registry, v1, _ = two_edge_versions
    edge_model, _ = registry.load(EDGE_TIER, v1)
    cloud_model, cloud_meta = registry.load(CLOUD_TIER)
    stages = {EDGE_TIER: EdgeStage(codec, edge_model, v1), CLOUD_TIER: CloudStage(codec, cloud_model, cloud_meta["version"], cloud_meta["thresholds"])}
    return ControlApplier(stages, registry, codec, lambda serving: pump_pair_problem(serving[EDGE_TIER], serving[CLOUD_TIER]),
                          worker="test-worker")


@pytest.fixture
def feature_messages(simulated_fleet, as_messages):
    windows = OfflinePumpPipeline().feed((r.kind, r.key, r.value) for r in simulated_fleet(pumps=3, steps=40, seed=5)).features
    return as_messages(windows, topic=FEATURES, schema=FEATURE_SCHEMA)


def test_a_promotion_swaps_the_edge_model_and_reports_it(applier, two_edge_versions, control_message):
    registry, v1, v2 = two_edge_versions
    before = metrics.MODEL_SWITCHES.labels(EDGE_TIER, "active")._value.get()
    outcome = applier.apply(control_message(registry, v2, epoch=3, at_ms=1234))
    assert applier.stages[EDGE_TIER].model_version == v2
    assert outcome.dead_letter is None
    assert (outcome.event["kind"], outcome.event["version"], outcome.event["serving_version"]) == ("model_switched", v2, v2)
    assert outcome.event["detail"] == f"active {v1} -> {v2}" and outcome.event["requested_at_ms"] == 1234
    assert metrics.MODEL_SWITCHES.labels(EDGE_TIER, "active")._value.get() == before + 1
    assert metrics.MODEL_SERVING.labels(EDGE_TIER, "active", v2)._value.get() == 1
    assert metrics.MODEL_SERVING.labels(EDGE_TIER, "active", v1)._value.get() == 0


def test_scores_after_a_swap_are_the_new_versions_own(applier, two_edge_versions, control_message, codec, feature_messages):
    registry, v1, v2 = two_edge_versions
    alone = EdgeStage(codec, registry.load(EDGE_TIER, v2)[0], v2).process(feature_messages, {}).outputs
    applier.apply(control_message(registry, v2))
    swapped = applier.stages[EDGE_TIER].process(feature_messages, {}).outputs
    assert swapped == alone
    before = EdgeStage(codec, registry.load(EDGE_TIER, v1)[0], v1).process(feature_messages, {}).outputs
    assert [o["score"] for o in before] != [o["score"] for o in alone]  # the two versions do score differently


def test_an_unknown_version_is_dead_lettered_and_the_old_model_keeps_scoring(applier, two_edge_versions, control_message):
    registry, v1, _ = two_edge_versions
    message = control_message(registry, "edge-20990101T000000000000-deadbeef")
    outcome = applier.apply(message)
    assert applier.stages[EDGE_TIER].model_version == v1
    assert outcome.dead_letter["reason"] == "unknown_version" and outcome.dead_letter["offset"] == message.offset
    assert outcome.dead_letter["original"] == message.value
    assert (outcome.event["kind"], outcome.event["reason"], outcome.event["serving_version"]) == ("control_rejected", "unknown_version", v1)


def test_a_tampered_artifact_is_refused_before_unpickling(applier, two_edge_versions, control_message):
    registry, v1, v2 = two_edge_versions
    message = control_message(registry, v2)  # names the sha256 the trainer saved
    artifact = registry.root / EDGE_TIER / v2 / "model.pkl"
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\x00")
    before = metrics.MODEL_REFUSALS.labels(EDGE_TIER, "integrity")._value.get()
    outcome = applier.apply(message)
    assert applier.stages[EDGE_TIER].model_version == v1
    assert (outcome.event["kind"], outcome.event["reason"]) == ("model_refused", "integrity") and outcome.dead_letter is None
    assert metrics.MODEL_REFUSALS.labels(EDGE_TIER, "integrity")._value.get() == before + 1


def test_a_record_whose_sha256_differs_from_the_workers_artifact_is_refused(applier, two_edge_versions, control_message):
    registry, v1, v2 = two_edge_versions
    outcome = applier.apply(control_message(registry, v2, sha256="a" * 64))
    assert applier.stages[EDGE_TIER].model_version == v1
    assert outcome.event["reason"] == "sha256_mismatch" and "a" * 64 in outcome.event["detail"]


@pytest.mark.parametrize(("fields", "reason"), [
    ({"share": 1.5}, "share_out_of_range"),
    ({"share": -0.1}, "share_out_of_range"),
    ({"alias": "champion"}, "unknown_alias"),
    ({"alias": "active", "action": "retire"}, "unknown_action"),
    ({"tier": "turbine"}, "unknown_tier"),
    ({"topology": "falls"}, "unknown_tier"),
    ({"action": "delete"}, "unknown_action"),
    ({"sha256": "XYZ"}, "bad_sha256"),
])
def test_a_record_that_cannot_apply_is_dead_lettered_with_its_reason_and_changes_nothing(
        applier, two_edge_versions, control_message, fields, reason):
    registry, v1, v2 = two_edge_versions
    outcome = applier.apply(control_message(registry, v2, **fields))
    assert applier.stages[EDGE_TIER].model_version == v1
    assert outcome.dead_letter["reason"] == reason and outcome.event["reason"] == reason


def test_bytes_that_do_not_decode_are_dead_lettered(applier, two_edge_versions):
    from vigil.streams.runtime.stage import RawMessage

    outcome = applier.apply(RawMessage("models.control", 0, 7, b"pumps|edge|active", b"not avro at all"))
    assert outcome.dead_letter["reason"] == "undecodable"
    assert outcome.event["kind"] == "control_rejected" and outcome.event["control_offset"] == 7
    assert applier.stages[EDGE_TIER].model_version == two_edge_versions[1]


def test_an_older_epoch_than_one_applied_changes_nothing(applier, two_edge_versions, control_message):
    registry, v1, v2 = two_edge_versions
    applier.apply(control_message(registry, v2, epoch=5))
    outcome = applier.apply(control_message(registry, v1, epoch=4))  # a late duplicate of an earlier change
    assert applier.stages[EDGE_TIER].model_version == v2 and outcome.event is None and outcome.dead_letter is None
    applier.apply(control_message(registry, v1, epoch=6, action="rollback"))
    assert applier.stages[EDGE_TIER].model_version == v1


def test_an_edge_version_the_cloud_model_cannot_read_is_refused(applier, two_edge_versions, control_message, pump_models):
    from vigil.streams.pumps.training import PumpTrainingConfig, fit_pump_models, simulated_healthy_features

    registry, v1, _ = two_edge_versions
    other = fit_pump_models(simulated_healthy_features(pumps=4, windows=40, seed=3, capture_interval_s=20.0),
                            config=PumpTrainingConfig(vibration_features=None, baseline_windows=10, cloud_window=8, cloud_epochs=1))
    odd = registry.save(EDGE_TIER, other.edge, other.edge_metadata)
    outcome = applier.apply(control_message(registry, odd))
    assert applier.stages[EDGE_TIER].model_version == v1
    assert outcome.event["reason"] == "incompatible_pair" and "deviations" in outcome.event["detail"]


def test_a_swap_in_the_middle_of_a_batch_waits_for_the_next_batch(applier, two_edge_versions, control_message, feature_messages):
    registry, v1, v2 = two_edge_versions
    stage = applier.stages[EDGE_TIER]
    expected_v1 = stage.process(feature_messages, {}).outputs
    v2_message = control_message(registry, v2)

    class SwapsWhileScoring:
        """The v1 model, but the control thread swaps in v2 as soon as the batch asks its first question."""

        def __init__(self, model):
            self._model, self._swapped = model, False

        def __getattr__(self, name):
            if not self._swapped:
                self._swapped = True
                applier.apply(v2_message)
            return getattr(self._model, name)

    stage.swap(SwapsWhileScoring(stage.model), v1)
    during = stage.process(feature_messages, {}).outputs
    assert stage.model_version == v2  # the swap happened, mid-batch
    assert {o["model_version"] for o in during} == {v1}
    assert [o["score"] for o in during] == [o["score"] for o in expected_v1]
    after = stage.process(feature_messages, {}).outputs
    assert {o["model_version"] for o in after} == {v2}


def test_a_canary_serves_a_stable_share_of_assets_and_the_rest_stay_on_the_active_model(
        applier, two_edge_versions, control_message, codec, simulated_fleet, as_messages):
    from vigil.models.lifecycle import in_canary

    registry, v1, v2 = two_edge_versions
    windows = OfflinePumpPipeline().feed((r.kind, r.key, r.value) for r in simulated_fleet(pumps=12, steps=30, seed=8)).features
    messages = as_messages(windows, topic=FEATURES, schema=FEATURE_SCHEMA)
    outcome = applier.apply(control_message(registry, v2, alias="canary", share=0.5))
    assert outcome.event["detail"] == f"canary none -> {v2} for 50% of assets"
    assert applier.stages[EDGE_TIER].model_version == v1  # the active model is untouched
    outputs = applier.stages[EDGE_TIER].process(messages, {}).outputs
    version_of_pump = {}
    for o in outputs:
        assert version_of_pump.setdefault(o["asset_id"], o["model_version"]) == o["model_version"]  # a pump stays on one model
    assert version_of_pump == {a: v2 if in_canary(a, 0.5) else v1 for a in version_of_pump}
    assert 0 < sum(v == v2 for v in version_of_pump.values()) < len(version_of_pump)
    # Each pump's scores are the ones its model gives on its own.
    alone = {v: {(o["asset_id"], o["stream"], o["seq"]): o["score"]
                 for o in EdgeStage(codec, registry.load(EDGE_TIER, v)[0], v).process(messages, {}).outputs} for v in (v1, v2)}
    assert all(o["score"] == alone[o["model_version"]][(o["asset_id"], o["stream"], o["seq"])] for o in outputs)


def test_a_shadow_scores_every_window_to_its_own_topic_and_leaves_the_served_outputs_alone(
        applier, two_edge_versions, control_message, codec, feature_messages):
    registry, v1, v2 = two_edge_versions
    stage = applier.stages[EDGE_TIER]
    served_alone = stage.process(feature_messages, {}).outputs
    applier.apply(control_message(registry, v2, alias="shadow"))
    result = stage.process(feature_messages, {})
    served = [o for o, t in zip(result.outputs, result.output_topics) if t is None]
    shadowed = [o for o, t in zip(result.outputs, result.output_topics) if t == "pump.scores.edge.shadow"]
    assert served == served_alone
    v2_alone = EdgeStage(codec, registry.load(EDGE_TIER, v2)[0], v2).process(feature_messages, {}).outputs
    assert shadowed == v2_alone
    assert result.flagged == stage.process(feature_messages, {}).flagged  # metrics count the served verdicts only
    retired = applier.apply(control_message(registry, v2, alias="shadow", action="retire", epoch=2))
    assert retired.event["kind"] == "model_retired" and stage.models.shadow is None
    assert set(stage.process(feature_messages, {}).output_topics) == {None}


def test_a_cloud_shadow_judges_the_same_flagged_windows(applier, two_edge_versions, control_message, codec, pump_models):
    from vigil.streams.pumps.cloud import CloudStage

    registry, _, _ = two_edge_versions
    cloud = applier.stages[CLOUD_TIER]
    other = registry.save(CLOUD_TIER, pump_models.cloud, pump_models.cloud_metadata)
    edge_scores = _edge_scores_with_flags(applier.stages[EDGE_TIER], codec)
    served_alone = cloud.process(edge_scores, {}).outputs
    applier.apply(control_message(registry, other, tier=CLOUD_TIER, alias="shadow"))
    result = cloud.process(edge_scores, {})
    served = [o for o, t in zip(result.outputs, result.output_topics) if t is None]
    shadowed = [o for o, t in zip(result.outputs, result.output_topics) if t == "pump.scores.cloud.shadow"]
    assert served == served_alone
    other_alone = CloudStage(codec, pump_models.cloud, other, pump_models.cloud_metadata["thresholds"]).process(edge_scores, {}).outputs
    assert shadowed == other_alone and sum(o["evaluated"] for o in shadowed) > 0


def _edge_scores_with_flags(edge_stage, codec):
    """pump.scores.edge messages of a fleet with faulty pumps, so the cloud tier has flagged windows to judge."""
    from vigil.models.simulate import FleetSimulator, make_fleet
    from vigil.streams.runtime.stage import RawMessage

    sim = FleetSimulator(make_fleet(4, seed=2, n_faulty=2, horizon_s=120), seed=2)
    features = OfflinePumpPipeline().feed((r.kind, r.key, r.value) for _ in range(120) for r in sim.step()).features
    feature_messages = [RawMessage(FEATURES, 0, i, w["asset_id"].encode(), codec.encode(FEATURES, FEATURE_SCHEMA, w))
                        for i, w in enumerate(features)]
    scores = edge_stage.process(feature_messages, {}).outputs
    assert sum(s["flagged"] for s in scores) > 0
    return [RawMessage("pump.scores.edge", 0, i, s["asset_id"].encode(), codec.encode("pump.scores.edge", "vigil.pumps.EdgeScore", s))
            for i, s in enumerate(scores)]


def test_a_version_the_worker_lacks_is_fetched_then_served(two_edge_versions, codec, control_message, tmp_path):
    import shutil

    from vigil.models.registry import ModelRegistry

    operator, v1, v2 = two_edge_versions
    shutil.copytree(operator.root, tmp_path / "worker")
    worker = ModelRegistry(tmp_path / "worker")
    shutil.rmtree(worker.root / EDGE_TIER / v2)
    asked = []

    def fetch(tier, version):
        asked.append((tier, version))
        if version != v2:
            return f"{tier} {version} is not on the artifacts topic either"
        worker.install(tier, version, *operator.files(tier, version))
        return None

    stage = EdgeStage(codec, worker.load(EDGE_TIER, v1)[0], v1)
    applier = ControlApplier({EDGE_TIER: stage}, worker, codec, fetch=fetch)
    assert applier.apply(control_message(operator, v2)).event["kind"] == "model_switched"
    assert stage.model_version == v2 and asked == [(EDGE_TIER, v2)]
    missing = applier.apply(control_message(operator, "edge-20990101T000000000000-deadbeef", epoch=2))
    assert missing.dead_letter["reason"] == "unknown_version" and "not on the artifacts topic" in missing.dead_letter["detail"]
    assert stage.model_version == v2
