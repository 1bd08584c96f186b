"""Stage wearable.imu.raw -> fall.candidates on crafted signals."""
import numpy as np
import pytest

from tests.fixtures.falls import FALL_IMPACT_S, LYING, fall, still, walking
from tests.streams.falls.conftest import T0_MS
from vigil.models.falls import FS_HZ, POST_S, PRE_S, candidate_windows, screen_impacts
from vigil.streams.falls.screen import ScreenStage, WearerScreenState

TOPIC = "wearable.imu.raw"


@pytest.fixture
def stage(codec):
    return ScreenStage(codec)


def run_in_batches(stage, messages, size):
    """Batch by batch, state through its bytes each time, as the worker's table keeps it."""
    stored, outputs, letters = {}, [], []
    for i in range(0, len(messages), size):
        result = stage.process(messages[i:i + size], stored)
        outputs += result.outputs
        letters += result.dead_letters
        stored.update({k: WearerScreenState.from_bytes(v.to_bytes()) for k, v in result.state_updates.items()})
    return outputs, letters, stored


def test_a_fall_becomes_one_candidate_at_its_impact_with_the_window_stage_1_cuts(stage, imu_records, to_messages):
    signal = fall(np.random.default_rng(1))
    outputs, letters, _ = run_in_batches(stage, to_messages(imu_records(signal), TOPIC), 100)
    assert letters == [] and len(outputs) == 1
    c = outputs[0]
    impact = screen_impacts(signal)[0]
    assert c["impact_ts_ms"] == T0_MS + round(impact * 1000 / FS_HZ) and abs(impact / FS_HZ - FALL_IMPACT_S) < 0.06
    assert c["window_start_ts_ms"] == c["impact_ts_ms"] - PRE_S * 1000
    window = np.frombuffer(c["xyz"], "<f4").reshape(-1, 3)
    np.testing.assert_array_equal(window, candidate_windows(signal, [impact])[0])
    assert c["peak_g"] == pytest.approx(4.0, abs=0.05) and c["angle_change_deg"] > 60 and c["post_std_g"] < 0.1
    assert (c["seq"], c["source_seq"]) == (0, int((impact / FS_HZ + POST_S) // 1.0))  # decided by the chunk holding impact + 3 s


def test_the_same_candidates_whatever_the_batching_and_through_stored_state(stage, imu_records, to_messages):
    rng = np.random.default_rng(2)
    signal = np.concatenate([walking(rng, 6.0), fall(rng), still(3.0, LYING, rng), walking(rng, 4.0), fall(rng, 6.0)])
    messages = to_messages(imu_records(signal), TOPIC)
    one_batch, _, _ = run_in_batches(stage, messages, len(messages))
    one_by_one, _, state = run_in_batches(stage, messages, 1)
    assert one_by_one == one_batch and len(one_batch) == len(screen_impacts(signal)) == 2
    assert [c["seq"] for c in one_batch] == [0, 1]
    assert [c["impact_ts_ms"] for c in one_batch] == [T0_MS + round(i * 1000 / FS_HZ) for i in screen_impacts(signal)]
    assert state["w-1"].last_seq == len(messages) - 1 and len(state["w-1"].buffer) <= (PRE_S + POST_S) * FS_HZ


def test_walking_gives_no_candidate(stage, imu_records, to_messages):
    outputs, letters, _ = run_in_batches(stage, to_messages(imu_records(walking(np.random.default_rng(3), 20.0)), TOPIC), 50)
    assert outputs == [] and letters == []


def test_a_gap_starts_a_new_segment_so_no_impact_straddles_it(stage, imu_records, to_messages):
    signal = fall(np.random.default_rng(4))
    cut = int((FALL_IMPACT_S + 1.0) * FS_HZ)  # the post-impact window is split by the gap
    records = imu_records(signal[:cut], signal[cut:])
    outputs, letters, state = run_in_batches(stage, to_messages(records, TOPIC), 100)
    assert outputs == [] and letters == []
    second = next(r for r in records if r["ts"] > T0_MS + cut * 1000 / FS_HZ)  # the first chunk after the gap
    assert state["w-1"].segment_start_ms == second["ts"] and state["w-1"].buffer_start == 0
    assert len(state["w-1"].buffer) == len(signal) - cut  # only the new segment is kept


def test_duplicates_are_skipped_and_counted(stage, imu_records, to_messages):
    records = imu_records(fall(np.random.default_rng(5)))
    messages = to_messages(records, TOPIC)
    result = stage.process(messages + messages[3:6], {})
    assert result.duplicates == 3 and len(result.outputs) == 1


def bad(record, **change):
    return {**record, **change}


@pytest.mark.parametrize("change, reason", [
    ({"fs_hz": 100.0}, "unsupported_rate"),
    ({"fs_hz": 199.5}, "unsupported_rate"),
    ({"fs_hz": 0.0}, "non_positive_fs"),
    ({"xyz": b"\x00" * 13}, "undecodable"),
    ({"xyz": b""}, "empty"),
    ({"xyz": np.array([[0, np.nan, 1]] * 4, "<f4").tobytes()}, "non_finite"),
    ({"xyz": np.array([[0, -20.0, 1]] * 4, "<f4").tobytes()}, "out_of_range"),
    ({"range_g": -1.0}, "out_of_range"),
    ({"wearer_id": ""}, "empty"),
])
def test_bad_chunks_are_dead_lettered_with_their_reason(stage, imu_records, to_messages, change, reason):
    record = imu_records(still(1.0, LYING, np.random.default_rng(6)))[0]
    result = stage.process(to_messages([bad(record, **change)], TOPIC), {})
    assert [d["reason"] for d in result.dead_letters] == [reason] and result.outputs == [] and result.state_updates == {}


def test_a_chunk_from_the_past_and_a_foreign_key_are_dead_lettered(stage, imu_records, to_messages):
    records = imu_records(still(3.0, LYING, np.random.default_rng(7)))
    messages = to_messages(records[:2] + [bad(records[2], ts=records[0]["ts"])], TOPIC)
    messages.append(messages[0].__class__(TOPIC, 0, 9, b"someone-else", messages[1].value))
    result = stage.process(messages, {})
    assert [d["reason"] for d in result.dead_letters] == ["timestamp_backwards", "key_mismatch"]


@pytest.mark.parametrize("key, says", [(None, "null"), (b"", "empty")])
def test_a_null_or_empty_key_is_a_key_mismatch(stage, imu_records, to_messages, key, says):
    records = imu_records(still(2.0, LYING, np.random.default_rng(8)))
    messages = to_messages(records, TOPIC)
    messages[1] = messages[1].__class__(TOPIC, 0, 1, key, messages[1].value)
    result = stage.process(messages, {})
    assert [(d["reason"], d["key"], d["asset_id"]) for d in result.dead_letters] == [("key_mismatch", key, "w-1")]
    assert f"Kafka key is {says}" in result.dead_letters[0]["detail"]
    assert result.state_updates["w-1"].last_seq == records[0]["seq"]
