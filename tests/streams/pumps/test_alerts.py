import pytest

from vigil.models.alerts import AlertPolicy, AlertPolicyConfig
from vigil.streams.pumps.alerts import AlertStage, AlertStageState

TOPIC, SCHEMA = "pump.scores.cloud", "vigil.pumps.CloudScore"


def cloud_score(asset, seq, confirmed, stream="vibration/h", flagged=True):
    return {
        "asset_id": asset, "stream": stream, "seq": seq, "ts_ms": 1_000_000 + seq * 10_000, "feature_set": "vibration.v2",
        "edge_score": 0.7, "edge_threshold": 0.65, "flagged": flagged, "evaluated": flagged,
        "cloud_score": (9.0 if confirmed else 1.0) if flagged else None, "cloud_threshold": 4.0, "confirmed": confirmed,
        "history_windows": 8, "edge_model_version": "edge-1", "cloud_model_version": "cloud-1",
        "deviations": {"kurtosis": 12.0, "rms_g": 2.5, "envelope_bpfi": 30.0, "crest_factor": 1.0},
        "features": {"envelope_bpfo": 3.0, "envelope_bpfi": 80.0, "envelope_bsf": 2.0},
    }


@pytest.fixture
def stage(codec):
    return AlertStage(codec, AlertPolicy(AlertPolicyConfig(confirm_k=2, confirm_n=3, quiet_s=45)))


def records():
    """pump-1: a confirmed streak on two channels, then quiet; pump-2: flagged but never confirmed."""
    out = []
    for seq in range(20):
        streak = 5 <= seq < 12
        out.append(cloud_score("pump-1", seq, streak, flagged=streak or seq % 4 == 0))
        out.append(cloud_score("pump-1", seq, streak and seq % 2 == 0, stream="vibration/v", flagged=streak))
        out.append(cloud_score("pump-2", seq, False, flagged=seq % 2 == 0))
    return out


def run(stage, messages, state):
    result = stage.process(messages, state)
    state.update(result.state_updates)
    return result


def test_an_episode_opens_and_closes_with_one_id(stage, as_messages, codec):
    result = run(stage, as_messages(records(), topic=TOPIC, schema=SCHEMA), {})
    assert [(a["asset_id"], a["state"], a["last_seq"]) for a in result.outputs] == [("pump-1", "OPEN", 6), ("pump-1", "CLOSE", 16)]
    opened, closed = result.outputs
    assert opened["alert_id"] == closed["alert_id"] and opened["first_seq"] == 6 and opened["kind"] == "pump.anomaly"
    assert closed["confirmations"] == 9  # from the opening window on: h at seq 6-11, v at 6, 8 and 10
    assert opened["diagnosis"]["fault"] == "inner_race"
    assert opened["top_features"] == {"envelope_bpfi": 30.0, "kurtosis": 12.0, "rms_g": 2.5}
    assert opened["model_versions"] == {"edge": "edge-1", "cloud": "cloud-1"}
    codec.decode(codec.encode("alerts", "vigil.common.Alert", opened), "vigil.common.Alert")  # valid on the wire


def test_a_replay_creates_no_new_alerts(stage, as_messages):
    state = {}
    messages = as_messages(records(), topic=TOPIC, schema=SCHEMA)
    first = run(stage, messages, state)
    again = run(stage, messages, state)
    assert again.outputs == [] and again.duplicates == len(messages)
    # The same input through a fresh state gives the same ids: downstream can de-duplicate on them.
    assert [a["alert_id"] for a in run(stage, messages, {}).outputs] == [a["alert_id"] for a in first.outputs]


def test_state_recovered_mid_episode_gives_the_same_alerts(stage, as_messages):
    messages = as_messages(records(), topic=TOPIC, schema=SCHEMA)
    whole = run(stage, messages, {}).outputs
    state, pieces = {}, []
    for i in range(0, len(messages), 5):
        state = {k: AlertStageState.from_bytes(v.to_bytes()) for k, v in state.items()}
        pieces += run(stage, messages[i : i + 5], state).outputs
    assert pieces == whole
