import numpy as np
import pytest

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


def test_injected_changes_step_the_duty_point_and_flat_line_the_sensors_from_their_time_on():
    from vigil.models.simulate import PumpSimulator, inject_changes

    fleet, injected = inject_changes(make_fleet(10, seed=3, n_faulty=2), duty_share=0.2, duty_at_s=600.0, duty_step=0.3,
                                     stuck=2, stuck_at_s=900.0, seed=3)
    duty = [i.asset_id for i in injected if i.change == "duty_point"]
    stuck = [i.asset_id for i in injected if i.change == "stuck_sensor"]
    assert len(duty) == 2 and len(stuck) == 2 and not set(duty) & set(stuck)
    assert all(s.fault is None for s in fleet if s.asset_id in duty + stuck)  # one cause per pump
    spec = next(s for s in fleet if s.asset_id == duty[0])
    assert spec.load(599.0, 0.0) + 0.3 == pytest.approx(spec.load(600.0, 0.0), abs=0.01)
    pump = PumpSimulator(next(s for s in fleet if s.asset_id == stuck[0]), 3, 0)
    before, after = pump.vibration(899.0, 512), pump.vibration(900.0, 512)
    assert np.ptp(before) > 0.05 and np.ptp(after) == 0.0
    first = pump.process(899.0, 0.1)
    assert pump.process(900.0, 0.1) == pump.process(1800.0, 0.1) == dict(first, vibration1_rms_g=0.1)
