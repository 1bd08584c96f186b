import pytest

from vigil.streams.pumps.process import ProcessAssetState, ProcessStage

SCHEMA = "vigil.pumps.ProcessSample"
TOPIC = "pump.process.raw"


def sample(n, **override):
    record = {"asset_id": "pump-1", "seq": n, "ts_ms": 1000 * n, "pressure_bar": 4.0, "flow_l_min": 600.0,
              "current_a": 12.0, "voltage_v": 400.0, "motor_temp_c": 45.0, "fluid_temp_c": 25.0, "vibration1_rms_g": 0.1}
    record.update(override)
    return record


@pytest.fixture
def run(codec, as_messages):
    stage = ProcessStage(codec)

    def go(records, state=None):
        state = {} if state is None else state
        result = stage.process(as_messages(records, topic=TOPIC, schema=SCHEMA), state)
        state.update(result.state_updates)
        return result, state

    return go


def test_each_sample_is_a_window_with_ratios(run):
    result, state = run([sample(0), sample(1, current_a=10.0)])
    assert [(o["stream"], o["seq"], o["first_input_seq"]) for o in result.outputs] == [("process", 0, 0), ("process", 1, 1)]
    features = result.outputs[1]["features"]
    assert features["flow_per_amp_l_min_a"] == pytest.approx(60.0)
    assert features["hydraulic_power_w"] == pytest.approx(4e5 * 0.01)
    assert ProcessAssetState.from_bytes(state["pump-1"].to_bytes()) == state["pump-1"]


@pytest.mark.parametrize(
    "override, reason",
    [
        ({"pressure_bar": float("nan")}, "non_finite"),
        ({"current_a": float("inf")}, "non_finite"),
        ({"motor_temp_c": 900.0}, "out_of_range"),
        ({"current_a": -3.0}, "out_of_range"),
        ({k: None for k in ("pressure_bar", "flow_l_min", "current_a", "voltage_v", "motor_temp_c", "fluid_temp_c", "vibration1_rms_g")}, "empty"),
        ({"asset_id": ""}, "empty"),
        ({"seq": -1}, "out_of_range"),
    ],
)
def test_bad_samples_are_dead_lettered(run, override, reason):
    result, _ = run([sample(0), sample(1, **override)])
    assert [d["reason"] for d in result.dead_letters] == [reason]
    assert len(result.outputs) == 1


def test_time_going_backwards_and_duplicates(run):
    result, state = run([sample(0), sample(1), sample(2, ts_ms=500), sample(1), sample(3)])
    assert [d["reason"] for d in result.dead_letters] == ["timestamp_backwards"]
    assert result.duplicates == 1
    assert [o["first_input_seq"] for o in result.outputs] == [0, 1, 3]
    assert [o["seq"] for o in result.outputs] == [0, 1, 2]  # window numbers stay gapless


def test_missing_sensors_are_fine(run):
    result, _ = run([sample(0, voltage_v=None, vibration1_rms_g=None)])
    assert result.dead_letters == [] and len(result.outputs) == 1


def test_a_trailing_mean_window_averages_the_last_samples_across_batches(codec, as_messages):
    from vigil.models.assets import AssetCatalog

    stage = ProcessStage(codec, assets=AssetCatalog.from_mapping({"assets": {"pump-1": {"process_window_samples": 3}}}))
    records = [sample(n) | {"flow_l_min": 600.0 + 30.0 * n, "current_a": None if n == 1 else 10.0} for n in range(5)]
    state = {}
    outputs = []
    for batch in ([records[0], records[1]], records[2:]):
        result = stage.process(as_messages(batch, topic="pump.process.raw", schema="vigil.pumps.ProcessSample"), state)
        state = {k: ProcessAssetState.from_bytes(v.to_bytes()) for k, v in result.state_updates.items()}
        outputs += result.outputs
    flows = [o["features"]["flow_l_min"] for o in outputs]
    assert flows == pytest.approx([600.0, 615.0, 630.0, 660.0, 690.0])  # means of 1, 2, then 3 samples
    assert [o["first_input_seq"] for o in outputs] == [0, 0, 0, 1, 2]
    assert [o["last_input_seq"] for o in outputs] == [0, 1, 2, 3, 4]
    assert outputs[1]["features"]["current_a"] == pytest.approx(10.0)  # a missing reading is left out of the mean


@pytest.mark.parametrize("key, says", [(None, "null"), (b"", "empty")])
def test_a_null_or_empty_key_is_a_key_mismatch(codec, as_messages, key, says):
    from vigil.streams.runtime.stage import RawMessage

    messages = as_messages([sample(0), sample(1)], topic=TOPIC, schema=SCHEMA)
    messages[1] = RawMessage(TOPIC, 0, 1, key, messages[1].value)
    result = ProcessStage(codec).process(messages, {})
    assert [(d["reason"], d["key"]) for d in result.dead_letters] == [("key_mismatch", key)]
    assert f"Kafka key is {says}" in result.dead_letters[0]["detail"]
    assert [o["last_input_seq"] for o in result.outputs] == [0]
