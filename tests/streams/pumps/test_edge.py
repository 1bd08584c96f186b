import pytest

from tests.fixtures.models import BASELINE_WINDOWS
from vigil.streams.pumps.edge import EdgeStage, EdgeStreamState
from vigil.streams.pumps.offline import OfflinePumpPipeline

TOPIC = "pump.features"
SCHEMA = "vigil.pumps.FeatureWindow"


@pytest.fixture
def windows(simulated_fleet):
    """Feature windows of a healthy 3-pump fleet, 60 s each, from the vibration and process stages."""
    return OfflinePumpPipeline().feed((r.kind, r.key, r.value) for r in simulated_fleet(pumps=3, steps=60, seed=9)).features


@pytest.fixture
def stage(codec, edge_model):
    return EdgeStage(codec, *edge_model)


def run(stage, messages, state):
    result = stage.process(messages, state)
    state.update(result.state_updates)
    return result


def test_commissioning_then_scored(stage, windows, as_messages):
    state = {}
    result = run(stage, as_messages(windows, topic=TOPIC, schema=SCHEMA), state)
    per_stream = {}
    for out in result.outputs:
        per_stream.setdefault((out["asset_id"], out["stream"]), []).append(out)
    assert len(per_stream) == 6  # 3 pumps x (vibration/x, process)
    for outs in per_stream.values():
        assert [o["seq"] for o in outs] == list(range(60))
        assert [o["state"] for o in outs] == ["COMMISSIONING"] * BASELINE_WINDOWS + ["SCORED"] * (60 - BASELINE_WINDOWS)
        assert [o["baseline_windows"] for o in outs[:3]] == [1, 2, 3]
        scored = outs[BASELINE_WINDOWS:]
        assert all(0 < o["score"] < 1 and o["flagged"] == (o["score"] >= o["threshold"]) for o in scored)
        assert all(o["score"] is None and not o["flagged"] for o in outs[:BASELINE_WINDOWS])
        assert set(scored[0]["deviations"]) >= {"rms_g"} or set(scored[0]["deviations"]) >= {"current_a"}
    healthy_flags = sum(o["flagged"] for o in result.outputs)
    assert healthy_flags <= 0.05 * (6 * (60 - BASELINE_WINDOWS))


def test_batching_and_state_recovery_do_not_change_scores(stage, windows, as_messages):
    messages = as_messages(windows, topic=TOPIC, schema=SCHEMA)
    whole = run(stage, messages, {}).outputs
    state, pieces = {}, []
    for i in range(0, len(messages), 7):
        state = {k: EdgeStreamState.from_bytes(v.to_bytes()) for k, v in state.items()}  # as if recovered between batches
        pieces += run(stage, messages[i : i + 7], state).outputs
    assert pieces == whole


def test_replayed_windows_are_skipped(stage, windows, as_messages):
    state = {}
    messages = as_messages(windows, topic=TOPIC, schema=SCHEMA)
    run(stage, messages, state)
    restored = {k: EdgeStreamState.from_bytes(v.to_bytes()) for k, v in state.items()}
    again = run(stage, messages[-50:], restored)
    assert again.duplicates == 50 and again.outputs == []


def test_unknown_feature_set_is_dead_lettered(stage, windows, as_messages):
    odd = dict(windows[0], feature_set="acoustic.v9")
    result = run(stage, as_messages([odd], topic=TOPIC, schema=SCHEMA), {})
    assert [d["reason"] for d in result.dead_letters] == ["unsupported_feature_set"]
