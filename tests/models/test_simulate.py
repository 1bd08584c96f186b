import numpy as np

from vigil.models.features import VIBRATION_FEATURES, extract_window_features
from vigil.models.simulate import FleetSimulator, make_fleet


def records(seed, steps=5, pumps=4):
    sim = FleetSimulator(make_fleet(pumps, seed=seed, horizon_s=steps), seed=seed)
    return [r for step in sim.steps(steps) for r in step]


def test_reproducible_from_its_seed():
    a, b, c = records(11), records(11), records(12)
    assert [(r.kind, r.key, r.value) for r in a] == [(r.kind, r.key, r.value) for r in b]
    assert [r.value for r in a] != [r.value for r in c]


def test_records_are_in_seq_and_time_order_per_pump():
    recs = [r for r in records(3, steps=6) if r.kind == "vibration"]
    for key in {r.key for r in recs}:
        mine = [r.value for r in recs if r.key == key]
        assert [v["seq"] for v in mine] == list(range(6))
        assert all(b["ts_ms"] - a["ts_ms"] == 1000 for a, b in zip(mine, mine[1:]))


def test_faulty_pumps_grow_a_bearing_line_at_their_defect_frequency():
    fleet = make_fleet(10, seed=4, n_faulty=2, horizon_s=100)
    faulty = [i for i, s in enumerate(fleet) if s.fault]
    assert len(faulty) == 2 and {fleet[i].fault for i in faulty} == {"outer", "inner"}
    sim = FleetSimulator(fleet, seed=4)
    per_step = [step for step in sim.steps(100)]
    for i in faulty:
        spec = fleet[i]
        late = np.frombuffer(per_step[-1][2 * i].value["samples"], dtype="<f4")
        early = np.frombuffer(per_step[5][2 * i].value["samples"], dtype="<f4")
        rows = extract_window_features(np.vstack([early, late]), spec.fs_hz, spec.rpm, spec.bearing.fault_orders(), (spec.fs_hz / 8, 0.45 * spec.fs_hz))
        name = "envelope_bpfo" if spec.fault == "outer" else "envelope_bpfi"
        other = "envelope_bpfi" if spec.fault == "outer" else "envelope_bpfo"
        col, other_col = VIBRATION_FEATURES.index(name), VIBRATION_FEATURES.index(other)
        assert rows[1, col] > 20 * rows[0, col]
        assert rows[1, col] > 2 * rows[1, other_col]
        assert rows[1, 0] > rows[0, 0]  # RMS grows too


def test_process_sensors_follow_the_defect():
    fleet = make_fleet(3, seed=5, n_faulty=1, horizon_s=200)
    i = next(i for i, s in enumerate(fleet) if s.fault)
    sim = FleetSimulator(fleet, seed=5)
    process = [step[2 * i + 1].value for step in sim.steps(200)]
    early = np.mean([p["current_a"] for p in process[:40]])
    late = np.mean([p["current_a"] for p in process[-20:]])
    assert late > early * 1.05
    assert process[-1]["motor_temp_c"] > process[0]["motor_temp_c"]
