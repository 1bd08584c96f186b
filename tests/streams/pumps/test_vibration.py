import numpy as np
import pytest

from vigil.streams.devtools.malformed import MALFORMED_VIBRATION, MISALIGNED_SAMPLES, malformed_vibration
from vigil.streams.pumps.vibration import VibrationAssetState, VibrationStage
from vigil.streams.runtime.stage import RawMessage
from vigil.streams.runtime.validation import CONTROL_REASONS, REASONS, VibrationLimits

MAX_SAMPLES = 5000


@pytest.fixture
def stage(codec):
    return VibrationStage(codec, limits=VibrationLimits(max_samples=MAX_SAMPLES))


def run(stage, messages, state=None):
    state = {} if state is None else state
    result = stage.process(messages, state)
    state.update(result.state_updates)
    return result, state


def test_valid_chunks_become_windows_with_key_seq_and_features(stage, chunk, as_messages):
    result, state = run(stage, as_messages([chunk(i) for i in range(5)] + [chunk(i, asset_id="pump-2") for i in range(3)]))
    assert result.dead_letters == [] and result.duplicates == 0
    assert [(o["asset_id"], o["seq"], o["first_input_seq"]) for o in result.outputs] == [
        ("pump-1", 0, 0), ("pump-1", 1, 1), ("pump-1", 2, 2), ("pump-1", 3, 3), ("pump-1", 4, 4),
        ("pump-2", 0, 0), ("pump-2", 1, 1), ("pump-2", 2, 2),
    ]
    first = result.outputs[0]
    assert first["stream"] == "vibration/x" and first["feature_set"] == "vibration.v2" and first["duration_s"] == 1.0
    x = np.frombuffer(chunk(0)["samples"], dtype="<f4").astype(np.float64)
    assert first["features"]["rms_g"] == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-5)
    assert state["pump-1"].last_seq == 4 and state["pump-2"].last_seq == 2
    assert result.state_partitions == {"pump-1": 0, "pump-2": 0}
    assert result.event_end_ms[0] == chunk(0)["ts_ms"] + 1000


@pytest.mark.parametrize("reason", sorted(MALFORMED_VIBRATION))
def test_every_reason_code_dead_letters_with_the_original_bytes(stage, chunk, as_messages, codec, reason):
    good = as_messages([chunk(0)])
    key, value = malformed_vibration(reason, chunk(1), codec, max_samples=MAX_SAMPLES)
    bad = RawMessage("pump.vibration.raw", 3, 17, key, value)
    result, state = run(stage, good + [bad] + as_messages([chunk(1)], start=18))
    assert [d["reason"] for d in result.dead_letters] == [reason]
    letter = result.dead_letters[0]
    assert (letter["source_topic"], letter["partition"], letter["offset"], letter["key"], letter["original"]) == (
        "pump.vibration.raw", 3, 17, key, value)
    assert letter["detail"]
    # The rejected copy did not consume its seq: the valid record with that seq is processed.
    assert [o["seq"] for o in result.outputs] == [0, 1]
    assert state["pump-1"].last_seq == 1


def test_the_reason_codes_cover_the_contract():
    # The rest belong to other stages: the edge stage, any stage that raises, the fall topology
    # (tests/streams/falls), models.control (tests/streams/lifecycle), alerts.feedback and maintenance.failures
    # (tests/streams/ops).
    assert set(MALFORMED_VIBRATION) | {"unsupported_feature_set", "processing_error", "unsupported_rate", "unknown_request",
                                       "invalid_feedback", "unknown_alert", "invalid_failure"} \
        | set(CONTROL_REASONS) == set(REASONS)


def test_samples_that_are_not_whole_float32_are_undecodable(stage, chunk, codec):
    key, value = MISALIGNED_SAMPLES(chunk(0), codec, "pump.vibration.raw", MAX_SAMPLES)
    result, _ = run(stage, [RawMessage("pump.vibration.raw", 0, 0, key, value)])
    assert [d["reason"] for d in result.dead_letters] == ["undecodable"]


def test_infinity_is_non_finite(stage, chunk, as_messages):
    x = np.zeros(1000, dtype="<f4")
    x[5] = np.inf
    result, _ = run(stage, as_messages([chunk(0, samples=x.tobytes())]))
    assert [d["reason"] for d in result.dead_letters] == ["non_finite"]


def test_duplicates_are_counted_and_not_processed_again(stage, chunk, as_messages):
    records = [chunk(i) for i in range(4)]
    result, state = run(stage, as_messages(records + [records[1], records[3]]))
    assert result.duplicates == 2
    assert [o["seq"] for o in result.outputs] == [0, 1, 2, 3]
    replay, _ = run(stage, as_messages(records), state)  # a whole batch redelivered after a crash
    assert replay.duplicates == 4 and replay.outputs == [] and replay.state_updates == {}


def test_replaying_from_an_earlier_state_reproduces_identical_windows(stage, chunk, as_messages):
    records = [chunk(i, n=700, ts_ms=700 * i) for i in range(10)]
    once, _ = run(stage, as_messages(records))
    state = {}
    first, state = run(stage, as_messages(records[:4]), state)
    snapshot = {k: VibrationAssetState.from_bytes(v.to_bytes()) for k, v in state.items()}  # as recovered from the changelog
    second, _ = run(stage, as_messages(records[2:]), snapshot)  # records 2 and 3 come again
    assert second.duplicates == 2
    assert [o for o in first.outputs + second.outputs] == once.outputs


def test_channels_window_independently_and_seq_is_shared(stage, chunk, as_messages):
    records = [chunk(0, channel="h", ts_ms=0), chunk(1, channel="v", ts_ms=0), chunk(2, channel="h", ts_ms=1000), chunk(3, channel="v", ts_ms=1000)]
    result, state = run(stage, as_messages(records))
    assert [(o["stream"], o["seq"], o["first_input_seq"]) for o in result.outputs] == [
        ("vibration/h", 0, 0), ("vibration/v", 0, 1), ("vibration/h", 1, 2), ("vibration/v", 1, 3)]
    restored = VibrationAssetState.from_bytes(state["pump-1"].to_bytes())
    assert set(restored.channels) == {"h", "v"} and restored.last_seq == 3


def test_state_bytes_round_trip_keeps_pending_samples(stage, chunk, as_messages):
    _, state = run(stage, as_messages([chunk(0, n=1500, ts_ms=0)]))
    restored = VibrationAssetState.from_bytes(state["pump-1"].to_bytes())
    buffer = restored.channels["x"]
    np.testing.assert_array_equal(buffer.samples, state["pump-1"].channels["x"].samples)
    assert len(buffer.samples) == 500 and buffer.next_window_seq == 1 and buffer.end_ts_ms == pytest.approx(1500.0)


def test_sequence_gaps_are_counted_not_hidden(stage, chunk, as_messages):
    records = [chunk(i, ts_ms=1000 * i) for i in (0, 1, 4, 5, 9)]
    result, _ = run(stage, as_messages(records))
    assert result.seq_gaps == 2 + 3
    assert result.duplicates == 0 and len(result.outputs) == 5


def test_a_record_the_stage_raises_on_is_dead_lettered_and_the_rest_goes_on(stage, chunk, as_messages, monkeypatch):
    from vigil.streams.pumps import vibration
    from vigil.streams.runtime.stage import process_isolating_errors

    real = vibration.check_vibration

    def explode_on_seq_2(record, *args):
        if record["seq"] == 2:
            raise RuntimeError("bug on seq 2")
        return real(record, *args)

    monkeypatch.setattr(vibration, "check_vibration", explode_on_seq_2)
    seen = []
    result = process_isolating_errors(stage.process, as_messages([chunk(i) for i in range(4)]), {}, on_error=lambda m, e: seen.append(m.offset))
    assert [(d["reason"], d["offset"]) for d in result.dead_letters] == [("processing_error", 2)]
    assert "bug on seq 2" in result.dead_letters[0]["detail"]
    assert [o["seq"] for o in result.outputs] == [0, 1, 2] and seen == [2]  # seq 3 makes window 2
    assert result.state_updates["pump-1"].last_seq == 3


@pytest.mark.parametrize("key, says", [(None, "null"), (b"", "empty")])
def test_a_null_or_empty_key_is_a_key_mismatch_like_any_other_key(stage, chunk, as_messages, key, says):
    # The key must be the asset id: a null key would be spread over partitions, out of the asset's order.
    good = as_messages([chunk(0)])
    unkeyed = [RawMessage(m.topic, m.partition, m.offset, key, m.value) for m in as_messages([chunk(1), chunk(2)], start=1)]
    result, state = run(stage, good + unkeyed)
    assert [(d["reason"], d["key"], d["offset"]) for d in result.dead_letters] == [("key_mismatch", key, 1), ("key_mismatch", key, 2)]
    assert all(f"Kafka key is {says}" in d["detail"] and d["asset_id"] == "pump-1" for d in result.dead_letters)
    assert [o["seq"] for o in result.outputs] == [0] and state["pump-1"].last_seq == 0
