import numpy as np

from vigil.models.bearing import SKF_6205
from vigil.models.diagnosis import diagnose_fault
from vigil.models.features import VIBRATION_FEATURES, extract_window_features

FS_HZ, RPM = 12_000.0, 1797.0


def impulse_windows(order, n=8, seed=0):
    """Windows of resonance ringing excited at ``order`` x shaft speed, in noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(256) / FS_HZ
    kernel = np.exp(-900.0 * t) * np.sin(2 * np.pi * 3200.0 * t)
    rows = []
    for _ in range(n):
        x = 0.2 * rng.standard_normal(12_000)
        if order:
            period = 60.0 / (order * RPM)
            impacts = np.zeros(12_000)
            impacts[(np.arange(rng.uniform(0, period), 1.0, period) * FS_HZ).astype(int)] = 2.0
            x += np.convolve(impacts, kernel)[:12_000]
        rows.append(x)
    features = extract_window_features(np.array(rows), FS_HZ, RPM, SKF_6205.fault_orders(), (1500.0, 5400.0))
    return [dict(zip(VIBRATION_FEATURES, row)) for row in features]


def test_outer_and_inner_race_impacts_are_told_apart():
    orders = SKF_6205.fault_orders()
    outer, inner = diagnose_fault(impulse_windows(orders.bpfo_x)), diagnose_fault(impulse_windows(orders.bpfi_x, seed=1))
    assert outer.fault == "outer_race" and outer.confidence >= 0.9
    assert inner.fault == "inner_race" and inner.confidence >= 0.9
    assert outer.envelope_ratios["envelope_bpfo"] > 10 * outer.envelope_ratios["envelope_bpfi"]


def test_noise_alone_is_no_fault():
    assert diagnose_fault(impulse_windows(None)).fault == "none"


def test_without_rpm_there_is_no_diagnosis():
    assert diagnose_fault([{"rms_g": 1.0}]) is None
    assert diagnose_fault([]) is None
