"""A physics-based pump fleet simulator: vibration waveforms and process sensors.

Each pump's accelerometer sees:

- shaft harmonics (1x and 2x: residual imbalance and misalignment) and the
  vane-pass line (impeller vanes x shaft speed), with slow speed wander;
- broadband noise;
- for pumps with a bearing defect, after its onset: an impulse at every
  passage of a rolling element over the defect (BPFO for the outer race,
  BPFI for the inner race, with 1 % random slip between impacts), each
  ringing a structural resonance (a damped sinusoid). Inner-race impacts
  are amplitude-modulated at shaft speed, since the defect turns through
  the load zone. The defect's severity grows exponentially from its onset.

The duty point drifts slowly (``load_drift``: demand changes over tens of
minutes), as real pumps' do: flow, pressure, current and the vibration
amplitudes follow it. A detector trained on a perfectly stationary fleet
flags any real machine's ordinary drift; this keeps it honest.

Process sensors follow the pump's state: flow and pressure around the duty
point, motor current and temperature rising with the friction of the
defect, and the RMS of the simulated waveform as vibration RMS.

Everything is drawn from ``numpy.random.default_rng([seed, pump index])`` in
order, so a run is reproducible from its seed; pumps are independent, so
generating them in any interleaving gives the same records.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterator, Literal

import numpy as np
import scipy.signal

from vigil.models.bearing import SKF_6205, BearingGeometry
from vigil.models.packs import RunToFailureRecord

FaultKind = Literal["outer", "inner"]
DEFAULT_START_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: reproducible event time unless told otherwise


@dataclass(frozen=True)
class PumpSpec:
    asset_id: str
    rpm: float = 1780.0
    fs_hz: float = 5120.0
    bearing: BearingGeometry = SKF_6205
    vanes: int = 6
    resonance_hz: float = 1600.0
    damping_ratio: float = 0.05
    noise_g: float = 0.05
    imbalance_g: float = 0.08
    load_drift: float = 0.08  # relative amplitude of the slow duty-point drift
    drift_period_s: float = 1800.0
    fault: FaultKind | None = None
    fault_onset_s: float = math.inf
    fault_growth_per_s: float = 1e-3  # e-folding rate of severity after onset
    fault_initial_g: float = 0.05  # impact amplitude at onset
    fault_max_g: float = 8.0
    # Process duty point
    flow_l_min: float = 600.0
    pressure_bar: float = 4.0
    voltage_v: float = 400.0
    fluid_temp_c: float = 25.0
    # Injected changes (``inject_changes``): a step in the duty point, and a sensor that flat-lines.
    duty_step_s: float = math.inf
    duty_step: float = 0.0  # relative change of the duty point from duty_step_s on
    stuck_from_s: float = math.inf

    def load(self, t_s: float | np.ndarray, phase: float) -> np.ndarray:
        """Relative duty point (1 = nominal) at time t: two incommensurate slow waves, and any injected step."""
        t = np.asarray(t_s, dtype=np.float64)
        w = 2 * np.pi / self.drift_period_s
        wave = 1.0 + self.load_drift * (0.7 * np.sin(w * t + phase) + 0.3 * np.sin(2.71 * w * t + 2 * phase))
        return wave + np.where(t >= self.duty_step_s, self.duty_step, 0.0)

    def severity(self, t_s: float | np.ndarray) -> np.ndarray:
        """Impact amplitude in g at time t (0 before onset)."""
        t = np.asarray(t_s, dtype=np.float64)
        grown = self.fault_initial_g * np.exp(self.fault_growth_per_s * np.maximum(t - self.fault_onset_s, 0.0))
        return np.where(t >= self.fault_onset_s, np.minimum(grown, self.fault_max_g), 0.0)


@dataclass
class _PumpState:
    rng: np.random.Generator
    phases: np.ndarray
    next_impact_s: float = 0.0
    ringing: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ringing_until_s: float = -1.0  # where the carried-over ringing belongs; a gap drops it
    motor_temp_c: float = 45.0
    stuck_process: dict[str, float] | None = None  # what a flat-lined process sensor keeps reporting


class PumpSimulator:
    """One pump; call ``vibration`` and ``process`` with consecutive times."""

    def __init__(self, spec: PumpSpec, seed: int, index: int) -> None:
        self.spec = spec
        rng = np.random.default_rng([seed, index])
        self._state = _PumpState(rng=rng, phases=rng.uniform(0, 2 * np.pi, 4))
        self._state.next_impact_s = spec.fault_onset_s
        zeta, wn = spec.damping_ratio, 2 * np.pi * spec.resonance_hz
        n_kernel = int(math.ceil(6.0 / (zeta * wn) * spec.fs_hz))  # rings down to e^-6
        k = np.arange(n_kernel) / spec.fs_hz
        self._kernel = np.exp(-zeta * wn * k) * np.sin(wn * math.sqrt(1 - zeta**2) * k)

    def shaft_hz(self, t_s: np.ndarray) -> np.ndarray:
        return self.spec.rpm / 60.0 * (1.0 + 0.002 * np.sin(2 * np.pi * t_s / 300.0))

    def vibration(self, t0_s: float, n: int) -> np.ndarray:
        """``n`` samples of acceleration (g) starting at simulated time ``t0_s``."""
        spec, st = self.spec, self._state
        if t0_s >= spec.stuck_from_s:  # a flat-lined accelerometer: its last reading, over and over
            return np.full(n, 0.0123, dtype=np.float32)
        fs = spec.fs_hz
        t = t0_s + np.arange(n) / fs
        # Integrate speed for phase so the speed wander stays continuous across chunks.
        rev = spec.rpm / 60.0 * (t + 0.002 * 300.0 / (2 * np.pi) * (1 - np.cos(2 * np.pi * t / 300.0)))
        theta = 2 * np.pi * rev
        load = spec.load(t, st.phases[3])
        x = (load**1.5) * (
            spec.imbalance_g * np.sin(theta + st.phases[0])
            + 0.5 * spec.imbalance_g * np.sin(2 * theta + st.phases[1])
            + 0.3 * spec.imbalance_g * np.sin(spec.vanes * theta + st.phases[2])
        )
        severity_end = float(spec.severity(t[-1]))
        x += st.rng.standard_normal(n) * spec.noise_g * load * (1.0 + 0.2 * severity_end / spec.fault_max_g)
        impacts = np.zeros(n + len(self._kernel))
        if spec.fault is not None:
            order = spec.bearing.fault_orders()
            factor = order.bpfo_x if spec.fault == "outer" else order.bpfi_x
            t_end = t0_s + n / fs
            if st.next_impact_s < t0_s - 1.0:  # after a gap between captures: resume the impact train here
                st.next_impact_s = t0_s + st.rng.uniform(0.0, 1.0 / (factor * spec.rpm / 60.0))
            while st.next_impact_s < t_end:
                ti = st.next_impact_s
                i = int(round((ti - t0_s) * fs))
                if 0 <= i < n:
                    amp = float(spec.severity(ti))
                    if spec.fault == "inner":
                        amp *= 0.6 + 0.4 * math.cos(theta[i])
                    impacts[i] += amp
                interval = 1.0 / (factor * float(self.shaft_hz(np.array([ti]))[0]))
                st.next_impact_s = ti + interval * (1.0 + 0.01 * st.rng.standard_normal())
        ringing = scipy.signal.fftconvolve(impacts[:n], self._kernel)[: n + len(self._kernel)]
        carried = np.zeros(len(ringing))
        if abs(st.ringing_until_s - t0_s) < 0.5 / fs:
            carried[: len(st.ringing)] = st.ringing[: len(ringing)]
        ringing = ringing + carried
        x += ringing[:n]
        st.ringing = ringing[n:].copy()
        st.ringing_until_s = t0_s + n / fs
        return x.astype(np.float32)

    def process(self, t_s: float, vibration_rms_g: float) -> dict[str, float]:
        spec, st = self.spec, self._state
        if t_s >= spec.stuck_from_s and st.stuck_process is not None:
            return dict(st.stuck_process, vibration1_rms_g=vibration_rms_g)
        rng = st.rng
        wear = float(spec.severity(t_s)) / spec.fault_max_g  # 0 healthy .. 1 failing
        load = float(spec.load(t_s, st.phases[3]))
        flow = spec.flow_l_min * load * (1.0 - 0.03 * wear) * (1.0 + 0.005 * rng.standard_normal())
        pressure = spec.pressure_bar * (2.0 - load) * (1.0 - 0.02 * wear) * (1.0 + 0.005 * rng.standard_normal())
        hydraulic_w = pressure * 1e5 * flow / 60000.0
        efficiency = 0.62 * (1.0 - 0.15 * wear)
        voltage = spec.voltage_v * (1.0 + 0.002 * rng.standard_normal())
        current = hydraulic_w / efficiency / voltage * (1.0 + 0.01 * rng.standard_normal())
        # First-order thermal lag towards a target that rises with losses.
        target = spec.fluid_temp_c + 20.0 + 25.0 * wear
        st.motor_temp_c += 0.02 * (target - st.motor_temp_c) + 0.05 * rng.standard_normal()
        reading = {
            "pressure_bar": pressure,
            "flow_l_min": flow,
            "current_a": current,
            "voltage_v": voltage,
            "motor_temp_c": st.motor_temp_c,
            "fluid_temp_c": spec.fluid_temp_c + 0.1 * rng.standard_normal(),
            "vibration1_rms_g": vibration_rms_g,
            "vibration2_rms_g": None,
        }
        st.stuck_process = reading
        return reading


def make_fleet(
    n_pumps: int,
    *,
    seed: int = 0,
    n_faulty: int | None = None,
    horizon_s: float = 3600.0,
    fs_hz: float = 5120.0,
    prefix: str = "pump",
) -> list[PumpSpec]:
    """A fleet of pumps with varied speeds and resonances; ``n_faulty`` of them
    (default a tenth, at least one when there are three or more) develop a
    bearing defect at 30-40 % of ``horizon_s`` that grows to severe by its end."""
    if n_pumps < 1:
        raise ValueError(f"n_pumps must be >= 1, got {n_pumps}")
    rng = np.random.default_rng([seed, 1_000_003])
    if n_faulty is None:
        n_faulty = max(n_pumps // 10, 1 if n_pumps >= 3 else 0)
    if not 0 <= n_faulty <= n_pumps:
        raise ValueError(f"n_faulty must be in [0, {n_pumps}], got {n_faulty}")
    faulty = set(rng.choice(n_pumps, size=n_faulty, replace=False).tolist())
    width = max(3, len(str(n_pumps)))
    fleet = []
    for i in range(n_pumps):
        rpm = float(rng.choice([1480.0, 1780.0, 2950.0]))
        spec = PumpSpec(
            asset_id=f"{prefix}-{i:0{width}d}",
            rpm=rpm,
            fs_hz=fs_hz,
            resonance_hz=float(rng.uniform(1300.0, 1900.0)),
            noise_g=float(rng.uniform(0.03, 0.08)),
            imbalance_g=float(rng.uniform(0.05, 0.15)),
            # Some pumps hold a steady duty, others follow a cycling demand.
            load_drift=float(rng.uniform(0.02, 0.3)),
            drift_period_s=float(rng.uniform(600.0, 3600.0)),
            flow_l_min=float(rng.uniform(300.0, 900.0)),
            pressure_bar=float(rng.uniform(2.5, 6.0)),
        )
        if i in faulty:
            onset = horizon_s * float(rng.uniform(0.3, 0.4))
            initial_g, final_g = 0.05, 4.0
            spec = replace(
                spec,
                fault="outer" if sum(s.fault is not None for s in fleet) % 2 == 0 else "inner",
                fault_onset_s=onset,
                fault_initial_g=initial_g,
                fault_max_g=final_g,
                fault_growth_per_s=math.log(final_g / initial_g) / (horizon_s - onset),
            )
        fleet.append(spec)
    return fleet


@dataclass(frozen=True)
class Injection:
    """A change ``inject_changes`` made to a pump: what, from when (simulated seconds), and by how much."""

    asset_id: str
    change: Literal["duty_point", "stuck_sensor"]
    at_s: float
    detail: str


def inject_changes(fleet: list[PumpSpec], *, duty_share: float = 0.2, duty_at_s: float, duty_step: float = 0.3,
                   stuck: int = 2, stuck_at_s: float, seed: int = 0) -> tuple[list[PumpSpec], list[Injection]]:
    """The fleet with a duty-point step on ``duty_share`` of its healthy pumps and flat-lined sensors on
    ``stuck`` others (never a pump developing a fault, so each change has one cause to find).

    >>> from vigil.models.simulate import make_fleet
    >>> fleet, injected = inject_changes(make_fleet(10, n_faulty=1), duty_at_s=3600.0, stuck_at_s=7200.0)
    >>> [(i.change, i.at_s) for i in injected].count(("duty_point", 3600.0)), sum(i.change == "stuck_sensor" for i in injected)
    (2, 2)
    """
    healthy = [i for i, spec in enumerate(fleet) if spec.fault is None]
    n_duty = int(round(duty_share * len(fleet)))
    if n_duty + stuck > len(healthy):
        raise ValueError(f"{n_duty} duty-point changes and {stuck} stuck sensors need that many healthy pumps, the fleet has {len(healthy)}")
    chosen = np.random.default_rng([seed, 2_000_003]).permutation(healthy)
    fleet = list(fleet)
    injected = []
    for i in sorted(chosen[:n_duty].tolist()):
        fleet[i] = replace(fleet[i], duty_step_s=duty_at_s, duty_step=duty_step)
        injected.append(Injection(fleet[i].asset_id, "duty_point", duty_at_s, f"duty point {duty_step:+.0%}"))
    for i in sorted(chosen[n_duty:n_duty + stuck].tolist()):
        fleet[i] = replace(fleet[i], stuck_from_s=stuck_at_s)
        injected.append(Injection(fleet[i].asset_id, "stuck_sensor", stuck_at_s, "accelerometer and process sensors flat-lined"))
    return fleet, injected


@dataclass(frozen=True)
class SimulatedRecord:
    """One record to publish: topic kind, key, and the Avro-ready value."""

    kind: Literal["vibration", "process"]
    key: str
    value: dict


class FleetSimulator:
    """Interleaves a fleet's chunks in event-time order: for each step, every
    pump's vibration chunk, then (every ``process_every`` chunks) its process sample.

    Chunks are ``chunk_s`` long and start every ``interval_s`` (default: back to
    back, a continuous stream; longer: periodic captures, as condition
    monitoring systems take them)."""

    def __init__(
        self,
        fleet: list[PumpSpec],
        *,
        seed: int = 0,
        chunk_s: float = 1.0,
        interval_s: float | None = None,
        process_every: int = 1,
        start_ts_ms: int = DEFAULT_START_TS_MS,
        channel: str = "x",
    ) -> None:
        if chunk_s <= 0:
            raise ValueError(f"chunk_s must be > 0, got {chunk_s}")
        if interval_s is not None and interval_s < chunk_s:
            raise ValueError(f"interval_s ({interval_s}) must be at least chunk_s ({chunk_s})")
        self.fleet = fleet
        self.chunk_s = chunk_s
        self.interval_s = chunk_s if interval_s is None else interval_s
        self.process_every = max(1, process_every)
        self.start_ts_ms = start_ts_ms
        self.channel = channel
        self.pumps = [PumpSimulator(spec, seed, i) for i, spec in enumerate(fleet)]
        self._step = 0
        self._vib_seq = [0] * len(fleet)
        self._proc_seq = [0] * len(fleet)

    def step(self) -> list[SimulatedRecord]:
        """The next chunk of every pump (and process samples when due)."""
        out: list[SimulatedRecord] = []
        t0 = self._step * self.interval_s
        for i, (spec, pump) in enumerate(zip(self.fleet, self.pumps)):
            n = int(round(self.chunk_s * spec.fs_hz))
            x = pump.vibration(t0, n)
            ts_ms = self.start_ts_ms + int(round(t0 * 1000.0))
            out.append(
                SimulatedRecord(
                    "vibration",
                    spec.asset_id,
                    {
                        "asset_id": spec.asset_id,
                        "seq": self._vib_seq[i],
                        "ts_ms": ts_ms,
                        "fs_hz": spec.fs_hz,
                        "rpm": float(pump.shaft_hz(np.array([t0]))[0] * 60.0),
                        "channel": self.channel,
                        "samples": x.astype("<f4").tobytes(),
                    },
                )
            )
            self._vib_seq[i] += 1
            if self._step % self.process_every == 0:
                rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
                out.append(
                    SimulatedRecord(
                        "process",
                        spec.asset_id,
                        {"asset_id": spec.asset_id, "seq": self._proc_seq[i], "ts_ms": ts_ms, **pump.process(t0, rms)},
                    )
                )
                self._proc_seq[i] += 1
        self._step += 1
        return out

    def steps(self, n_steps: int | None = None) -> Iterator[list[SimulatedRecord]]:
        done = 0
        while n_steps is None or done < n_steps:
            yield self.step()
            done += 1

    @property
    def simulated_s(self) -> float:
        return self._step * self.interval_s


def simulate_run_to_failure(
    fleet: list[PumpSpec], *, snapshots: int, period_s: float, samples: int, seed: int = 0
) -> list[RunToFailureRecord]:
    """Periodic snapshots of each pump on two channels (independent noise, the same machine),
    as a run-to-failure pack records them; pumps with a fault end at their worst."""
    records = []
    for i, spec in enumerate(fleet):
        channels = [PumpSimulator(spec, seed, i), PumpSimulator(spec, seed, 10_000 + i)]
        t = np.arange(snapshots) * period_s
        h = np.stack([channels[0].vibration(float(t0), samples) for t0 in t])
        v = np.stack([channels[1].vibration(float(t0), samples) for t0 in t])
        records.append(RunToFailureRecord(spec.asset_id, h, v, t, spec.rpm))
    return records
