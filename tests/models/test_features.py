import numpy as np
import pytest

from vigil.models.bearing import SKF_6205
from vigil.models.features import (
    PROCESS_FEATURES,
    VIBRATION_FEATURES,
    extract_process_features,
    extract_window_features,
)

FS_HZ = 12_000.0
RPM = 1797.0
ORDERS = SKF_6205.fault_orders()
DEMOD_BAND_HZ = (1500.0, 5400.0)


def feature(rows: np.ndarray, name: str) -> np.ndarray:
    return rows[:, VIBRATION_FEATURES.index(name)]


def impulse_train(rate_hz: float, n: int = 12_000, resonance_hz: float = 3000.0, noise_g: float = 0.05, seed: int = 0) -> np.ndarray:
    """Impacts at ``rate_hz``, each ringing a resonance, plus white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS_HZ
    kernel = np.exp(-800.0 * t[:600]) * np.sin(2 * np.pi * resonance_hz * t[:600])
    impacts = np.zeros(n)
    impacts[(np.arange(0, n / FS_HZ, 1.0 / rate_hz) * FS_HZ).astype(int)] = 1.0
    return np.convolve(impacts, kernel)[:n] + noise_g * rng.standard_normal(n)


@pytest.mark.parametrize("amplitude_g", [0.5, 2.0, 7.5])
def test_rms_of_a_sine_is_amplitude_over_root_two(amplitude_g):
    t = np.arange(12_000) / FS_HZ
    rows = extract_window_features(amplitude_g * np.sin(2 * np.pi * 60.0 * t), FS_HZ, RPM, ORDERS, DEMOD_BAND_HZ)
    assert feature(rows, "rms_g")[0] == pytest.approx(amplitude_g / np.sqrt(2), rel=1e-4)
    assert feature(rows, "peak_g")[0] == pytest.approx(amplitude_g, rel=1e-3)
    assert feature(rows, "crest_factor")[0] == pytest.approx(np.sqrt(2), rel=1e-3)
    # A pure sine has kurtosis 1.5, i.e. excess kurtosis -1.5.
    assert feature(rows, "kurtosis")[0] == pytest.approx(-1.5, abs=1e-3)


def test_rms_counts_a_dc_offset_and_std_does_not():
    x = np.full(4000, 3.0) + np.sin(2 * np.pi * 50 * np.arange(4000) / 4000.0)
    rows = extract_window_features(x, 4000.0, None, ORDERS, (500.0, 1800.0))
    assert feature(rows, "std_g")[0] == pytest.approx(1 / np.sqrt(2), rel=1e-4)
    assert feature(rows, "rms_g")[0] == pytest.approx(np.sqrt(9 + 0.5), rel=1e-4)


def test_gaussian_noise_has_excess_kurtosis_and_skewness_near_zero():
    x = np.random.default_rng(1).standard_normal((8, 12_000))
    rows = extract_window_features(x, FS_HZ, RPM, ORDERS, DEMOD_BAND_HZ)
    assert np.abs(feature(rows, "kurtosis")).max() < 0.15
    assert np.abs(feature(rows, "skewness")).max() < 0.08
    assert np.abs(feature(rows, "kurtosis").mean()) < 0.05


def test_band_energies_sum_to_the_variance_and_locate_a_tone():
    t = np.arange(12_000) / FS_HZ
    x = np.sin(2 * np.pi * 1000.0 * t)  # 1 kHz sits in [Nyquist/8, Nyquist/4) = [750, 1500) Hz
    rows = extract_window_features(x, FS_HZ, RPM, ORDERS, DEMOD_BAND_HZ)
    bands = rows[0, [VIBRATION_FEATURES.index(f"band_energy_{k}") for k in range(6)]]
    assert bands.sum() == pytest.approx(0.5, rel=1e-4)
    assert np.argmax(bands) == 3
    assert bands[3] / bands.sum() > 0.999
    assert feature(rows, "spectral_centroid_hz")[0] == pytest.approx(1000.0, rel=1e-3)


def test_bands_scale_with_the_sampling_rate():
    # The same tone at a quarter of Nyquist lands in the same band at any fs.
    for fs in (4000.0, 25_600.0):
        t = np.arange(int(fs)) / fs
        x = np.sin(2 * np.pi * fs / 8 * 1.1 * t)
        rows = extract_window_features(x, fs, None, ORDERS, (fs / 8, 0.45 * fs))
        bands = rows[0, [VIBRATION_FEATURES.index(f"band_energy_{k}") for k in range(6)]]
        assert np.argmax(bands) == 4


def test_impulses_at_bpfo_light_up_bpfo_and_not_bpfi():
    bpfo_hz = ORDERS.bpfo_x * RPM / 60
    rows = extract_window_features(impulse_train(bpfo_hz), FS_HZ, RPM, ORDERS, DEMOD_BAND_HZ)
    bpfo, bpfi = feature(rows, "envelope_bpfo")[0], feature(rows, "envelope_bpfi")[0]
    assert bpfo > 100.0
    assert bpfo > 3.0 * bpfi


def test_impulses_at_bpfi_light_up_bpfi_and_not_bpfo():
    bpfi_hz = ORDERS.bpfi_x * RPM / 60
    rows = extract_window_features(impulse_train(bpfi_hz), FS_HZ, RPM, ORDERS, DEMOD_BAND_HZ)
    assert feature(rows, "envelope_bpfi")[0] > 3.0 * feature(rows, "envelope_bpfo")[0]


@pytest.mark.parametrize("fault", ["bpfo", "bpfi"])
def test_one_faults_harmonics_do_not_count_for_another(fault):
    # SKF 6205: 3 x BPFO and 2 x BPFI are 0.7 % apart, 2 x BPFO and 3 x BSF 1.4 %:
    # inside each other's slip bands, so a pure train at one rate used to light up the other.
    order = ORDERS.bpfo_x if fault == "bpfo" else ORDERS.bpfi_x
    rows = extract_window_features(impulse_train(order * RPM / 60), FS_HZ, RPM, ORDERS, DEMOD_BAND_HZ)
    own = feature(rows, f"envelope_{fault}")[0]
    others = [feature(rows, f"envelope_{name}")[0] for name in ("bpfo", "bpfi", "bsf") if name != fault]
    assert own > 20.0 * max(others)


def test_close_lines_keep_their_nearest_bin_in_short_windows():
    # PRONOSTIA: 0.1 s windows (10 Hz bins), 2 x BSF = 7.18 and BPFI = 7.39 orders, 6 Hz apart at 1800 rpm.
    from vigil.models.bearing import PRONOSTIA_BEARING

    orders = PRONOSTIA_BEARING.fault_orders()
    fs, rpm = 25_600.0, 1800.0
    rng = np.random.default_rng(4)
    t = np.arange(2560) / fs
    kernel = np.exp(-2000.0 * t[:256]) * np.sin(2 * np.pi * 6000.0 * t[:256])
    windows = []
    for _ in range(8):
        impacts = np.zeros(2560)
        start = rng.uniform(0, 60.0 / (orders.bpfi_x * rpm))
        impacts[(np.arange(start, 0.1, 60.0 / (orders.bpfi_x * rpm)) * fs).astype(int)] = 1.0
        windows.append(np.convolve(impacts, kernel)[:2560] + 0.05 * rng.standard_normal(2560))
    rows = extract_window_features(np.array(windows), fs, rpm, orders, (fs / 8, 0.45 * fs))
    assert (feature(rows, "envelope_bpfi") > feature(rows, "envelope_bsf")).all()
    assert (feature(rows, "envelope_bpfi") > feature(rows, "envelope_bpfo")).all()


def test_noise_alone_shows_no_bearing_line():
    x = np.random.default_rng(2).standard_normal((6, 12_000))
    rows = extract_window_features(x, FS_HZ, RPM, ORDERS, DEMOD_BAND_HZ)
    envelope = rows[:, [VIBRATION_FEATURES.index(f"envelope_{n}") for n in ("bpfo", "bpfi", "bsf")]]
    assert envelope.max() < 15.0


def test_envelope_is_nan_when_rpm_is_unknown_and_other_features_are_not():
    rows = extract_window_features(impulse_train(100.0), FS_HZ, None, ORDERS, DEMOD_BAND_HZ)
    envelope_cols = [VIBRATION_FEATURES.index(f"envelope_{n}") for n in ("bpfo", "bpfi", "bsf")]
    assert np.isnan(rows[0, envelope_cols]).all()
    assert np.isfinite(np.delete(rows[0], envelope_cols)).all()


def test_batched_equals_one_at_a_time():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((70, 4000)).astype(np.float32)  # spans three internal chunks
    rpm = rng.uniform(1000, 3000, 70)
    batched = extract_window_features(x, 4000.0, rpm, ORDERS, (500.0, 1800.0))
    single = np.vstack([extract_window_features(x[i], 4000.0, rpm[i], ORDERS, (500.0, 1800.0)) for i in range(70)])
    np.testing.assert_allclose(batched, single, rtol=1e-6)


def test_rejects_bad_input_with_a_clear_error():
    with pytest.raises(ValueError, match="fs_hz"):
        extract_window_features(np.zeros(100), 0.0, None, ORDERS, (1.0, 2.0))
    with pytest.raises(ValueError, match="at least 2 samples"):
        extract_window_features(np.zeros((3, 1)), 100.0, None, ORDERS, (1.0, 2.0))


def test_process_ratios():
    #           pressure flow  current voltage motor fluid vib1 vib2
    row = np.array([[3.0, 120.0, 10.0, 400.0, 60.0, 25.0, 0.2, np.nan]])
    f = dict(zip(PROCESS_FEATURES, extract_process_features(row)[0]))
    assert f["electrical_power_w"] == pytest.approx(4000.0)
    assert f["hydraulic_power_w"] == pytest.approx(3e5 * 120.0 / 60000.0)  # 600 W
    assert f["hydraulic_efficiency"] == pytest.approx(600.0 / 4000.0)
    assert f["flow_per_amp_l_min_a"] == pytest.approx(12.0)
    assert f["temp_rise_c"] == pytest.approx(35.0)
    assert np.isnan(f["vibration2_rms_g"])


def test_process_ratios_are_nan_not_inf_when_a_sensor_is_missing_or_zero():
    rows = np.array([[3.0, 120.0, 0.0, 400.0, 60.0, np.nan, 0.2, 0.1]])
    f = dict(zip(PROCESS_FEATURES, extract_process_features(rows)[0]))
    assert np.isnan(f["hydraulic_efficiency"]) and np.isnan(f["flow_per_amp_l_min_a"]) and np.isnan(f["temp_rise_c"])
