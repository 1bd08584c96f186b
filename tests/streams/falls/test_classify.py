"""Stage fall.candidates -> fall.suspected with a stage-2 model fitted on crafted signals."""
import numpy as np
import pytest

from tests.fixtures.falls import fall, sit_down_hard
from vigil.models.falls import FEATURE_NAMES, fall_window_features
from vigil.streams.falls.classify import FallModelStage
from vigil.streams.falls.screen import ScreenStage

IMU, CANDIDATES = "wearable.imu.raw", "fall.candidates"


@pytest.fixture
def candidates(codec, imu_records, to_messages):
    """Stage 1's candidates for three falls and three hard sit-downs (all pass the lenient screen below)."""
    from vigil.models.falls import ScreenConfig

    rng = np.random.default_rng(11)
    signals = [fall(rng, 3.0), sit_down_hard(rng, 2.3), fall(rng, 5.0), sit_down_hard(rng, 2.0), fall(rng, 7.0), sit_down_hard(rng, 2.5)]
    screen = ScreenStage(codec, ScreenConfig(min_angle_deg=0.0, max_post_std_g=1.0))
    out = screen.process(to_messages(imu_records(*signals), IMU), {}).outputs
    assert len(out) == 6
    return out


def test_the_model_passes_the_falls_and_stops_the_sit_downs(codec, crafted_fall_model, candidates, to_messages):
    stage = FallModelStage(codec, crafted_fall_model, "falls-test-1")
    result = stage.process(to_messages(candidates, CANDIDATES), {})
    assert [r["seq"] for r in result.outputs] == [0, 2, 4]  # the falls
    assert result.flagged == {}  # the edge-flag metric is the pumps'; suspected falls are this stage's outputs
    first = result.outputs[0]
    window = np.frombuffer(first["xyz"], "<f4").reshape(1, -1, 3)
    expected = dict(zip(FEATURE_NAMES, fall_window_features(window)[0].astype(float)))
    assert first["features"] == pytest.approx(expected)
    assert first["probability"] >= first["threshold"] == crafted_fall_model.threshold_
    assert first["model_version"] == "falls-test-1" and first["xyz"] == candidates[0]["xyz"]
    assert result.state_updates["w-1"].last_seq == 5


def test_batching_does_not_change_the_verdicts_and_replays_are_skipped(codec, crafted_fall_model, candidates, to_messages):
    stage = FallModelStage(codec, crafted_fall_model, "v")
    messages = to_messages(candidates, CANDIDATES)
    whole = stage.process(messages, {})
    state, one_by_one = {}, []
    for m in messages:
        r = stage.process([m], state)
        state.update(r.state_updates)
        one_by_one += r.outputs
    assert [o["probability"] for o in one_by_one] == pytest.approx([o["probability"] for o in whole.outputs])
    replay = stage.process(messages, state)
    assert replay.outputs == [] and replay.duplicates == 6


@pytest.mark.parametrize("change, reason", [
    ({"xyz": b"\x00" * 120}, "undecodable"),
    ({"fs_hz": 100.0}, "unsupported_rate"),
    ({"wearer_id": ""}, "empty"),
    ({"xyz": np.full((1000, 3), np.nan, "<f4").tobytes()}, "non_finite"),
])
def test_bad_candidates_are_dead_lettered(codec, crafted_fall_model, candidates, to_messages, change, reason):
    stage = FallModelStage(codec, crafted_fall_model, "v")
    result = stage.process(to_messages([{**candidates[0], **change}], CANDIDATES), {})
    assert [d["reason"] for d in result.dead_letters] == [reason] and result.outputs == []
