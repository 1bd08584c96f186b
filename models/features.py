"""Feature extraction for vibration windows and process samples, vectorized over batches.

Vibration features (``VIBRATION_FEATURES``), per window of one channel:

- time domain: ``rms_g`` (including any DC offset), ``std_g``, ``peak_g``
  (largest absolute sample), ``crest_factor`` (peak / rms), ``skewness`` and
  excess ``kurtosis`` (0 for Gaussian noise, grows with impulsive defects);
- spectrum: ``band_energy_0`` .. ``band_energy_5``, the mean-square
  acceleration (g^2) in octave bands scaled to the sampling rate, edges at
  Nyquist x (0, 1/32, 1/16, 1/8, 1/4, 1/2, 1), so the six sum to the variance;
  ``spectral_centroid_hz``;
- envelope analysis: ``envelope_bpfo``, ``envelope_bpfi``, ``envelope_bsf``.
  The window is band-passed in the demodulation band, its squared envelope
  taken with the analytic signal, and the squared-envelope spectrum's peak
  power near harmonics 1-3 of each defect frequency (+- slip tolerance),
  averaged over the harmonics, is divided by the spectrum's median power.
  A search band never reaches past halfway to another fault's line, and a
  harmonic (not a fundamental) within half the slip tolerance of another
  fault's line is left out (SKF 6205: 3 x BPFO and 2 x BPFI, 0.7 % apart),
  so one fault's lines do not count for another. Without a line the ratio
  is the largest noise bin of each search band over the median, a few
  units; a bearing defect gives tens to thousands. NaN when rpm is unknown.

Process features (``PROCESS_FEATURES``): the sensor values plus ratios that
tie them together (electrical and hydraulic power, efficiency, flow per
ampere, motor temperature rise over the fluid). NaN where an input is missing.

Batches are processed in chunks of ``CHUNK_WINDOWS`` windows in float32:
measured here, one 2-D FFT call over 256 one-second windows is slower per
window than one window at a time, because its complex temporaries overflow
the L2 cache; chunks of 16-32 are about 3x faster.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import scipy.fft

from vigil.models.bearing import FaultOrders

N_BANDS = 6
BAND_EDGES_NYQUIST = np.array([0.0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0])
FAULT_NAMES = ("bpfo", "bpfi", "bsf")
ENVELOPE_HARMONICS = 3
VIBRATION_FEATURE_SET = "vibration.v2"  # v2: envelope lines no longer count another fault's harmonics
VIBRATION_FEATURES: tuple[str, ...] = (
    "rms_g",
    "std_g",
    "peak_g",
    "crest_factor",
    "skewness",
    "kurtosis",
    *(f"band_energy_{k}" for k in range(N_BANDS)),
    "spectral_centroid_hz",
    *(f"envelope_{name}" for name in FAULT_NAMES),
)
CHUNK_WINDOWS = 32
# Energies only (level, band energies, envelope lines): the vibration features that grow with wear.
VIBRATION_ENERGY_FEATURES: tuple[str, ...] = (
    "rms_g", "std_g", "peak_g", *(f"band_energy_{k}" for k in range(N_BANDS)), *(f"envelope_{name}" for name in FAULT_NAMES)
)

PROCESS_INPUTS: tuple[str, ...] = (
    "pressure_bar",
    "flow_l_min",
    "current_a",
    "voltage_v",
    "motor_temp_c",
    "fluid_temp_c",
    "vibration1_rms_g",
    "vibration2_rms_g",
)
PROCESS_FEATURE_SET = "process.v1"
PROCESS_FEATURES: tuple[str, ...] = (
    *PROCESS_INPUTS,
    "electrical_power_w",
    "hydraulic_power_w",
    "hydraulic_efficiency",
    "flow_per_amp_l_min_a",
    "temp_rise_c",
)
# Every feature of each feature set, by the set's name.
FEATURE_NAMES = {VIBRATION_FEATURE_SET: VIBRATION_FEATURES, PROCESS_FEATURE_SET: PROCESS_FEATURES}

# Features whose baseline comparison is made on a log scale (positive, multiplicative).
LOG_SCALE_FEATURES = frozenset(
    ["rms_g", "std_g", "peak_g", *(f"band_energy_{k}" for k in range(N_BANDS)), *(f"envelope_{n}" for n in FAULT_NAMES)]
)


@functools.lru_cache(maxsize=64)
def _defect_lines(orders: FaultOrders, tolerance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where each fault's harmonic lines may be looked for, in orders of the shaft frequency.

    Returns ``(centre, lower, upper, ambiguous)``, each (faults, harmonics).
    Different faults' harmonics can fall close together (SKF 6205: 3 x BPFO
    = 10.75 and 2 x BPFI = 10.83, 2 x BPFO = 7.17 and 3 x BSF = 7.07), and a
    line of one fault would then count for the other too. So each search band
    stops halfway to the nearest line of another fault (``lower``,
    ``upper``), and a harmonic (not a fundamental) whose line lies within
    half the slip tolerance of another fault's line is ``ambiguous``: it
    cannot be told apart under slip, and is left out of that fault's mean.
    """
    per_fault = np.array([orders.bpfo_x, orders.bpfi_x, orders.bsf_x])
    centre = per_fault[:, None] * np.arange(1, ENVELOPE_HARMONICS + 1, dtype=np.float64)
    lower = np.full(centre.shape, -np.inf)
    upper = np.full(centre.shape, np.inf)
    ambiguous = np.zeros(centre.shape, dtype=bool)
    for k in range(len(per_fault)):
        others = np.delete(centre, k, axis=0).ravel()
        for h in range(ENVELOPE_HARMONICS):
            line = centre[k, h]
            below, above = others[others <= line], others[others > line]
            if below.size:
                lower[k, h] = 0.5 * (line + below.max())
            if above.size:
                upper[k, h] = 0.5 * (line + above.min())
            ambiguous[k, h] = h > 0 and bool(np.any(np.abs(others - line) < 0.5 * tolerance * line))
    for array in (centre, lower, upper, ambiguous):
        array.setflags(write=False)
    return centre, lower, upper, ambiguous


def _fault_band_peaks(
    env_power: np.ndarray, freqs_hz: np.ndarray, shaft_hz: np.ndarray, orders: FaultOrders, tolerance: float, df_hz: float
) -> np.ndarray:
    """Peak of ``env_power`` (b, m) near the harmonics of each fault at ``shaft_hz`` (b,):
    returns (b, faults, harmonics), NaN where a harmonic is ambiguous or beyond the spectrum."""
    line_x, lower_x, upper_x, ambiguous = _defect_lines(orders, tolerance)
    shaft = shaft_hz[:, None, None]
    centre = shaft * line_x  # (b, k, h)
    half_width = centre * tolerance + 0.5 * df_hz  # always covers at least the nearest bin
    lo_hz = np.maximum(centre - half_width, shaft * lower_x)  # never past halfway to another fault's line
    hi_hz = np.minimum(centre + half_width, shaft * upper_x)
    lo = np.searchsorted(freqs_hz, lo_hz, side="left")
    hi = np.searchsorted(freqs_hz, hi_hz, side="right")
    # A line keeps its nearest bin however coarse the bins (0.1 s windows: 10 Hz).
    nearest = np.minimum(np.rint(centre / df_hz).astype(np.int64), len(freqs_hz) - 1)
    lo = np.minimum(lo, nearest)
    hi = np.maximum(hi, nearest + 1)
    b_idx = np.arange(env_power.shape[0])[:, None, None]
    # Peak within [lo, hi) per (b, k, h) via a running-maximum-free trick: gather a fixed-width stencil.
    width = int(max(1, (hi - lo).max(initial=1)))
    offsets = np.arange(width)
    idx = lo[..., None] + offsets  # (b, k, h, w)
    valid = idx < hi[..., None]
    idx = np.minimum(idx, env_power.shape[1] - 1)
    gathered = env_power[b_idx[..., None], idx]
    gathered = np.where(valid, gathered, 0.0)
    peaks = gathered.max(axis=-1)
    peaks[(centre - half_width > freqs_hz[-1]) | ambiguous] = np.nan  # beyond the spectrum, or ambiguous
    return peaks


def _vibration_chunk(
    x: np.ndarray,
    fs_hz: float,
    rpm: np.ndarray,
    orders: FaultOrders,
    demod_band_hz: tuple[float, float],
    slip_tolerance: float,
) -> np.ndarray:
    b, n = x.shape
    out = np.empty((b, len(VIBRATION_FEATURES)), dtype=np.float64)
    mean = x.mean(axis=1, dtype=np.float64)
    xc = x - mean[:, None].astype(np.float32)
    xc64_sq = np.square(xc, dtype=np.float64)
    var = xc64_sq.mean(axis=1)
    std = np.sqrt(var)
    rms = np.sqrt(var + mean**2)
    peak = np.abs(x).max(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        m3 = (xc64_sq * xc).mean(axis=1)
        m4 = (xc64_sq * xc64_sq).mean(axis=1)
        skew = np.where(var > 0, m3 / var**1.5, 0.0)
        kurt = np.where(var > 0, m4 / var**2 - 3.0, 0.0)
        crest = np.where(rms > 0, peak / rms, 0.0)

    spectrum = scipy.fft.rfft(xc, axis=1)  # complex64
    power = spectrum.real**2 + spectrum.imag**2  # float32, (b, n//2 + 1)
    # One-sided mean-square per bin: 2|X|^2 / n^2 (DC and Nyquist bins once).
    weight = np.full(power.shape[1], 2.0 / n**2, dtype=np.float64)
    weight[0] = 1.0 / n**2
    if n % 2 == 0:
        weight[-1] = 1.0 / n**2
    ms = power * weight  # float64 (b, m)
    freqs = scipy.fft.rfftfreq(n, 1.0 / fs_hz)
    edges = np.searchsorted(freqs, BAND_EDGES_NYQUIST * (0.5 * fs_hz), side="left")
    edges[-1] = power.shape[1]
    cumulative = np.concatenate([np.zeros((b, 1)), np.cumsum(ms, axis=1)], axis=1)
    bands = cumulative[:, edges[1:]] - cumulative[:, edges[:-1]]
    total = cumulative[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Row-wise sum, not a matrix product: BLAS blocking would make a window's
        # last bits depend on the batch it was in, and replays must reproduce windows exactly.
        centroid = np.where(total > 0, (ms * freqs).sum(axis=1) / total, 0.0)

    # Envelope: band-pass by zeroing bins, analytic signal by doubling the
    # positive half (inverse full FFT), then the spectrum of the squared envelope.
    lo_hz, hi_hz = demod_band_hz
    keep = (freqs >= lo_hz) & (freqs <= hi_hz)
    analytic_spec = np.zeros((b, n), dtype=np.complex64)
    analytic_spec[:, : power.shape[1]] = spectrum * (2.0 * keep).astype(np.float32)
    analytic = scipy.fft.ifft(analytic_spec, axis=1)
    env_sq = analytic.real**2 + analytic.imag**2
    env_sq -= env_sq.mean(axis=1, keepdims=True)
    env_spec = scipy.fft.rfft(env_sq, axis=1)
    env_power = (env_spec.real**2 + env_spec.imag**2).astype(np.float64)
    envelope = np.full((b, len(FAULT_NAMES)), np.nan)
    known = np.isfinite(rpm) & (rpm > 0)
    if known.any():
        shaft_hz = rpm[known] / 60.0
        fault_hz = shaft_hz[:, None] * np.array([orders.bpfo_x, orders.bpfi_x, orders.bsf_x])
        # Reference level: median power over the range the fault lines live in.
        ref_hi = np.searchsorted(freqs, fault_hz.max(axis=1) * (ENVELOPE_HARMONICS + 0.5))
        ref_lo = max(1, int(np.searchsorted(freqs, 0.0, side="right")))
        ref = np.array(
            [np.median(env_power[row, ref_lo : max(ref_lo + 4, hi)]) for row, hi in zip(np.flatnonzero(known), ref_hi)]
        )
        peaks = _fault_band_peaks(env_power[known], freqs, shaft_hz, orders, slip_tolerance, fs_hz / n)
        with np.errstate(divide="ignore", invalid="ignore"):
            envelope[known] = np.nanmean(peaks, axis=2) / np.where(ref > 0, ref, np.nan)[:, None]

    out[:, 0] = rms
    out[:, 1] = std
    out[:, 2] = peak
    out[:, 3] = crest
    out[:, 4] = skew
    out[:, 5] = kurt
    out[:, 6 : 6 + N_BANDS] = bands
    out[:, 6 + N_BANDS] = centroid
    out[:, 7 + N_BANDS :] = envelope
    return out


def extract_window_features(
    windows: np.ndarray,
    fs_hz: float,
    rpm: Sequence[float] | np.ndarray | float | None,
    orders: FaultOrders,
    demod_band_hz: tuple[float, float],
    slip_tolerance: float = 0.02,
) -> np.ndarray:
    """Features of equal-length windows sampled at ``fs_hz``.

    ``windows`` is (batch, samples) or (samples,); ``rpm`` one value or one
    per window (None or NaN: unknown). Returns (batch, len(VIBRATION_FEATURES))
    float64, columns in the order of ``VIBRATION_FEATURES``.

    >>> import numpy as np
    >>> from vigil.models.bearing import SKF_6205
    >>> t = np.arange(4000) / 4000.0
    >>> sine = 2.0 * np.sin(2 * np.pi * 50.0 * t)
    >>> f = extract_window_features(sine, 4000.0, 1800.0, SKF_6205.fault_orders(), (500.0, 1800.0))
    >>> round(float(f[0, VIBRATION_FEATURES.index("rms_g")]), 4)  # A / sqrt(2)
    1.4142
    """
    if fs_hz <= 0:
        raise ValueError(f"fs_hz must be > 0, got {fs_hz}")
    x = np.asarray(windows, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"windows must be (batch, samples) with at least 2 samples, got shape {x.shape}")
    b = x.shape[0]
    if rpm is None:
        rpm_arr = np.full(b, np.nan)
    else:
        rpm_arr = np.broadcast_to(np.asarray(rpm, dtype=np.float64), (b,)).copy()
    out = np.empty((b, len(VIBRATION_FEATURES)))
    for start in range(0, b, CHUNK_WINDOWS):
        stop = min(start + CHUNK_WINDOWS, b)
        out[start:stop] = _vibration_chunk(
            x[start:stop], float(fs_hz), rpm_arr[start:stop], orders, demod_band_hz, slip_tolerance
        )
    return out


def extract_process_features(values: np.ndarray) -> np.ndarray:
    """Process features of samples given as (batch, len(PROCESS_INPUTS)), NaN = missing.

    >>> import numpy as np
    >>> row = np.array([[2.0, 60.0, 5.0, 400.0, 50.0, 20.0, 0.1, np.nan]])
    >>> f = extract_process_features(row)
    >>> round(float(f[0, PROCESS_FEATURES.index("hydraulic_power_w")]), 1)  # 2e5 Pa * 1e-3 m^3/s
    200.0
    >>> round(float(f[0, PROCESS_FEATURES.index("temp_rise_c")]), 1)
    30.0
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.shape[1] != len(PROCESS_INPUTS):
        raise ValueError(f"expected {len(PROCESS_INPUTS)} process inputs {PROCESS_INPUTS}, got shape {v.shape}")
    pressure, flow, current, voltage, motor_t, fluid_t = (v[:, i] for i in range(6))
    electrical_w = voltage * current
    hydraulic_w = pressure * 1e5 * flow / 60000.0
    with np.errstate(divide="ignore", invalid="ignore"):
        efficiency = np.where(electrical_w > 0, hydraulic_w / electrical_w, np.nan)
        flow_per_amp = np.where(current > 0, flow / current, np.nan)
    return np.column_stack([v, electrical_w, hydraulic_w, efficiency, flow_per_amp, motor_t - fluid_t])
