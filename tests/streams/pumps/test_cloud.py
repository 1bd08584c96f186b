import numpy as np
import pytest

from vigil.streams.pumps.cloud import CloudStage, CloudStreamState
from vigil.streams.pumps.offline import OfflinePumpPipeline

TOPIC, SCHEMA = "pump.scores.edge", "vigil.pumps.EdgeScore"


@pytest.fixture
def edge_scores(simulated_fleet, pump_models):
    """Edge verdicts on 2 healthy pumps and 1 developing a fault, 120 s each."""
    records = simulated_fleet(pumps=3, steps=120, seed=4, n_faulty=1, horizon_s=120.0)
    pipeline = OfflinePumpPipeline(edge=(pump_models.edge, "edge-test"))
    return pipeline.feed((r.kind, r.key, r.value) for r in records).scores


@pytest.fixture
def stage(codec, pump_models):
    return CloudStage(codec, pump_models.cloud, "cloud-test")


def run(stage, messages, state):
    result = stage.process(messages, state)
    state.update(result.state_updates)
    return result


def test_only_flagged_windows_reach_the_cloud_tier(stage, edge_scores, as_messages):
    result = run(stage, as_messages(edge_scores, topic=TOPIC, schema=SCHEMA), {})
    scored = [s for s in edge_scores if s["state"] == "SCORED"]
    assert len(result.outputs) == len(scored)  # commissioning windows give no verdict
    flagged = [o for o in result.outputs if o["flagged"]]
    assert 0 < len(flagged) < len(result.outputs)
    assert all(o["evaluated"] and o["cloud_score"] is not None for o in flagged)
    assert all(not o["evaluated"] and o["cloud_score"] is None and not o["confirmed"] for o in result.outputs if not o["flagged"])
    assert all(o["confirmed"] == (o["cloud_score"] >= o["cloud_threshold"]) for o in flagged)
    assert sum(result.confirmed.values()) == sum(o["confirmed"] for o in result.outputs)
    assert result.flagged == {}  # the edge tier's flags are counted by the edge stage alone
    assert {o["cloud_model_version"] for o in result.outputs} == {"cloud-test"}
    assert {o["edge_model_version"] for o in result.outputs} == {"edge-test"}
    # History grows window by window up to the model's sequence length.
    stream = [o for o in result.outputs if (o["asset_id"], o["stream"]) == (result.outputs[0]["asset_id"], result.outputs[0]["stream"])]
    assert [o["history_windows"] for o in stream[:10]] == [min(i + 1, 8) for i in range(10)]


def test_the_faulty_pump_is_confirmed_and_healthy_ones_mostly_dismissed(stage, edge_scores, as_messages, simulated_fleet):
    result = run(stage, as_messages(edge_scores, topic=TOPIC, schema=SCHEMA), {})
    confirmed = {}
    for o in result.outputs:
        confirmed.setdefault((o["asset_id"], o["stream"]), []).append(o["confirmed"])
    # The fault starts at 30-40 % of the run and grows to severe by its end; only vibration shows it.
    late = {key: np.mean(c[-len(c) // 3 :]) for key, c in confirmed.items()}
    faulty = max(late, key=late.get)
    assert faulty[1] == "vibration/x" and late[faulty] > 0.9
    assert all(np.mean(c) < 0.02 for key, c in confirmed.items() if key != faulty)


def test_batching_and_state_recovery_do_not_change_verdicts(stage, edge_scores, as_messages):
    messages = as_messages(edge_scores, topic=TOPIC, schema=SCHEMA)
    whole = run(stage, messages, {}).outputs
    state, pieces = {}, []
    for i in range(0, len(messages), 13):
        state = {k: CloudStreamState.from_bytes(v.to_bytes()) for k, v in state.items()}
        pieces += run(stage, messages[i : i + 13], state).outputs
    assert len(pieces) == len(whole)
    for a, b in zip(pieces, whole):
        assert {k: v for k, v in a.items() if k != "cloud_score"} == {k: v for k, v in b.items() if k != "cloud_score"}
        assert (a["cloud_score"] is None and b["cloud_score"] is None) or a["cloud_score"] == pytest.approx(b["cloud_score"], abs=1e-9)


def test_replays_are_skipped_and_bad_records_dead_lettered(stage, edge_scores, as_messages, codec):
    state = {}
    messages = as_messages(edge_scores, topic=TOPIC, schema=SCHEMA)
    run(stage, messages, state)
    again = run(stage, messages, state)
    assert again.outputs == [] and again.duplicates == len(messages)
    foreign = dict(edge_scores[-1], asset_id="pump-new", seq=0, feature_set="acoustic.v9", state="SCORED")
    garbage = messages[0].__class__(TOPIC, 0, 999, b"pump-x", b"\x00\x00\x00")
    result = run(stage, as_messages([foreign], topic=TOPIC, schema=SCHEMA) + [garbage], state)
    assert sorted(d["reason"] for d in result.dead_letters) == ["undecodable", "unsupported_feature_set"]
