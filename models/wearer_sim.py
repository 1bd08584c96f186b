"""SYNTHETIC waist-worn accelerometer trials: falls and activities of daily living (ADL).

Nothing here is recorded data.  The simulator imitates the SisFall layout that
``models.falls`` was built for -- a waist-worn ADXL345 at 200 Hz, +-16 g, 3.9 mg
per count, y axis vertical: standing still reads about (0, -1, 0) g, lying face
down about (0, 0, -1), on the back (0, 0, +1), on a side (+-1, 0, 0), sitting
leans back a little (z > 0); checked on sisfall_dev.npz -- so that fall
detection stages 1 and 2 can be exercised and tested without the real pack.

A trial (g, sensor frame):
    reading = gain * (support * posture + motion) + offset + noise, quantised
    to 1/256 g and clipped to +-16 g per axis, where
    posture  unit gravity reading, moved between postures by slerp (standing
             leans 5-15 deg forward; sitting is 10-25 deg further back);
    support  fraction of gravity felt: 1 at rest, towards 0 in free fall;
    motion   gait (a heel-strike pulse per step + trunk sway), contact shocks
             (Hann pulses), damped rebound ringing and small fidgets;
    sensor   gain 1 +- 0.02, offset +- 0.035 g per axis (|a| at rest 0.94-1.06
             g as in SisFall), white noise 0.01-0.02 g.
Falls (FALL_ACTIVITIES): standing or walking (sitting for faint_from_sitting),
    a 0.5-1.4 s descent in which the trunk turns 60-95 % of the way, with a
    free-fall dip to 0.05-0.6 g (faint_from_standing 0.2-0.6 g; none for
    faint_from_sitting, whose |a| stays above ~0.65 g), an impact cluster -- a
    main shock sized so that |a| peaks at 3-12 g (fall_lateral and
    faint_from_standing from 2.5 g, faint_from_standing up to 9 g,
    faint_from_sitting 2.0-3.2 g and short: a hard floor; 10 % of the slip/trip
    falls are severe: the dominant axis is driven to 16-26 g and clips at 16 g,
    |a| 16-28 g) plus 2-5 secondary
    contacts and a rebound -- then lying with gravity on another axis
    (orientation change 60-100 deg, mostly near 90), still apart from sensor
    noise, with occasional small movements.
ADL (ADL_ACTIVITIES): walk (peak |a| 1.45-2.3 g), jog (2.5-3.9 g), sit_down
    (support drops by 0.2-0.7 g, then a 1.3-2.6 g seat contact; 10-25 deg),
    lie_down (slow, 60-100 deg, |a| < 1.5 g, measured <= 1.2 g), flop_onto_bed
    (quick lie-down onto a mattress: a soft 1.5-2.5 g bump, 60-95 deg; like
    SisFall D13, the ADL that reaches stage 2), jump (landing 2.7-5.1 g),
    stumble_recover (trip shock 2.2-6 g, the trunk pitches 15-40 deg and comes
    back), bend_pick_up (50-90 deg and back, no impact).  Walk, jog, jump,
    stumble_recover and sit_down give impact candidates that stage 1 rejects.

Measured with ``simulate_trials(200, 300, seed)`` (15 s trials), stage-2 models
trained on seed 0 (groups = trial index % 8), judged on seed 1:
    stage 1 (``screen_impacts``, default ScreenConfig): 100 % of fall trials
        (200/200) and 7.3 % of ADL trials (22/300, all flop_onto_bed) pass.
    stage 1 + stage 2 trained on SYNTHETIC trials: per-trial sensitivity
        100 % (200/200), specificity 100 % (300/300); over 10 seed pairs
        (train 2k, test 2k+1) sensitivity 100 % and specificity >= 99.67 %.
    stage 1 + stage 2 trained on the real SisFall development pack
        (``streams.evaluation.falls.fit_fall_classifier``, all 24 subjects):
        sensitivity 75.5 % (151/200), specificity 99.67 % (1 flop_onto_bed).
        It finds 99.3 % (144/145) of the falls whose impact is >= 3.5 g but
        only 2/40 faint_from_sitting (2-3.2 g, no free fall: SisFall's falls
        from a chair have a dip to ~0.3 g and ~4.7 g impacts) and misses most
        2.5-3.3 g falls; 10 seed pairs: 70.5-76.0 %, without
        faint_from_sitting 88.1-94.4 %, specificity >= 99.33 %.
    cost: simulate_trials(20, 30, seed) ~ 60 ms (about 1 ms per trial).
Reproduce: the synthetic figures are asserted (with margins) by
``pytest tests/models/test_wearer_sim.py``, which screens and fits through
``streams.evaluation.falls`` (``screen_trials``, ``fit_fall_classifier``,
``summarize``); the SisFall-trained figures come from the same functions with
the model fitted on all of ../shared/datasets/sisfall_dev.npz.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

FS_HZ = 200
CLIP_G = 16.0
LSB_G = 2 * 16 / 2 ** 13  # ADXL345 full resolution at +-16 g (SisFall count_to_g)
MIN_SECONDS = 10.0        # 2 s before an event, its descent, 3 s of stage-1 context after it

# Sensor-frame reading directions (SisFall waist mount).
UPRIGHT = np.array([0.0, -1.0, 0.0])
FORWARD = np.array([0.0, 0.0, -1.0])   # the way the reading tilts when the trunk leans forward
BACKWARD = -FORWARD
RIGHT = np.array([1.0, 0.0, 0.0])
LEFT = -RIGHT

FALL_ACTIVITIES: tuple[str, ...] = (
    "fall_forward", "fall_backward", "fall_lateral", "faint_from_standing", "faint_from_sitting",
)
ADL_ACTIVITIES: tuple[str, ...] = (
    "walk", "jog", "sit_down", "lie_down", "flop_onto_bed", "jump", "stumble_recover", "bend_pick_up",
)


@dataclass(frozen=True)
class SimulatedTrial:
    """One SYNTHETIC trial: (n, 3) float32 acceleration in g, its label and activity name."""

    acc_g: np.ndarray
    is_fall: bool
    activity: str


# ---------------------------------------------------------------- geometry

def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _tilt(v: np.ndarray, toward: np.ndarray, angle_deg: float) -> np.ndarray:
    """Unit vector ``angle_deg`` away from unit ``v`` in the plane of v and ``toward``."""
    w = _unit(toward - (toward @ v) * v)
    a = np.radians(angle_deg)
    return np.cos(a) * v + np.sin(a) * w


def _heading(base: np.ndarray, jitter_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Horizontal (x-z) direction near ``base``: people never fall exactly along an axis."""
    az = np.arctan2(base[0], -base[2]) + np.radians(rng.normal(0.0, jitter_deg))
    return np.array([np.sin(az), 0.0, -np.cos(az)])


def _slerp(v0: np.ndarray, v1: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(len(p), 3) points from unit v0 (p=0) to unit v1 (p=1) on the great circle."""
    angle = np.arccos(np.clip(v0 @ v1, -1.0, 1.0))
    if angle < 1e-6:
        return np.broadcast_to(v0, (p.size, 3)).copy()
    w = _unit(v1 - np.cos(angle) * v0)
    a = angle * p[:, None]
    return np.cos(a) * v0 + np.sin(a) * w


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _posture_track(t: np.ndarray, start: np.ndarray, moves: list[tuple[float, float, np.ndarray]]) -> np.ndarray:
    """(n, 3) gravity direction: ``start``, then each (t0, t1, target) move in time order."""
    track = np.broadcast_to(start, (t.size, 3)).copy()
    current = start
    for t0, t1, target in moves:
        after = t >= t0
        track[after] = _slerp(current, target, _smoothstep((t[after] - t0) / max(t1 - t0, 1e-3)))
        current = target
    return track


def _body_axes(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(anterior-posterior, medio-lateral) unit axes orthogonal to each row of ``up``."""
    ap = _unit(FORWARD - (up @ FORWARD)[:, None] * up)
    return ap, np.cross(up, ap)


# ---------------------------------------------------------------- signal pieces

def _hann(t: np.ndarray, center: float, width: float) -> np.ndarray:
    """Raised-cosine pulse of ``width`` s, exactly 1 at ``center``: the shape of a contact shock."""
    u = (t - center) / width
    return np.where(np.abs(u) < 0.5, 0.5 * (1.0 + np.cos(2.0 * np.pi * u)), 0.0)


def _dip(t: np.ndarray, end: float, width: float, depth: float) -> np.ndarray:
    """Loss of support (0..depth) over ``width`` s, deepest just before ``end`` (the contact)."""
    return depth * _hann(t, end - 0.4 * width, width)


def _ringing(t: np.ndarray, t0: float, amp_g: float, freq_hz: float, decay_s: float, direction: np.ndarray) -> np.ndarray:
    """Damped rebound of soft tissue / mattress after a contact, along ``direction``."""
    dt = t - t0
    wave = np.where(dt >= 0, amp_g * np.exp(-np.maximum(dt, 0) / decay_s) * np.sin(2 * np.pi * freq_hz * dt), 0.0)
    return wave[:, None] * direction


def _fidget(t: np.ndarray, center: float, duration: float, amp_g: float, rng: np.random.Generator) -> np.ndarray:
    """A small limb / trunk movement: a few 1-4 Hz tones under a Hann envelope, random direction."""
    freqs = rng.uniform(1.0, 4.0, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    tones = np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]).sum(0) / 3.0
    return (amp_g * _hann(t, center, duration) * tones)[:, None] * _unit(rng.normal(size=3))


def _shock_cluster(t: np.ndarray, t0: float, amps: np.ndarray, delays: np.ndarray, widths: np.ndarray,
                   directions: np.ndarray) -> np.ndarray:
    """Sum of Hann shocks: amplitude amps[k] g along directions[k] at t0 + delays[k]."""
    pulses = np.stack([_hann(t, t0 + d, w) for d, w in zip(delays, widths)])  # (k, n)
    return (pulses * amps[:, None]).T @ directions


def _main_shock_amplitude(base: np.ndarray, direction: np.ndarray, peak_g: float) -> float:
    """Shock amplitude along unit ``direction`` that makes |base + a * direction| = peak_g."""
    b = base @ direction
    return float(-b + np.sqrt(max(b * b - base @ base + peak_g ** 2, 0.0)))


def _gait(t: np.ndarray, up: np.ndarray, start: float, stop: float, cadence_hz: float, heel_g: float,
          heel_s: float, sway_g: float, rng: np.random.Generator) -> np.ndarray:
    """Walking / running trunk acceleration between ``start`` and ``stop``.

    One heel-strike pulse per step along the body's vertical (amplitude varying
    +-15 % step to step, cadence drifting a few %), vertical and
    anterior-posterior sway at the step frequency, lateral sway at the stride
    frequency; made zero-mean so the average reading stays gravity (running
    pulses are large enough to leave a near-free-fall flight phase).
    """
    env = _smoothstep((t - start) / 0.4) * _smoothstep((stop - t) / 0.3)
    if not env.any():
        return np.zeros((t.size, 3))
    drift = 1.0 + 0.03 * np.sin(2 * np.pi * t / rng.uniform(4.0, 9.0) + rng.uniform(0, 2 * np.pi))
    phase = np.cumsum(cadence_hz * drift) * (t[1] - t[0])
    phase -= np.interp(start, t, phase)
    step = np.rint(phase).astype(np.int64)
    to_strike_s = (phase - step) / cadence_hz
    step_amp = 1.0 + 0.15 * rng.standard_normal(step.max() - step.min() + 1)
    heel = heel_g * step_amp[step - step.min()] * _hann(to_strike_s, 0.0, heel_s)
    cycle = 2 * np.pi * phase
    vertical = heel + sway_g * np.cos(cycle + rng.uniform(-0.5, 0.5))
    forward = 0.6 * sway_g * np.sin(cycle + rng.uniform(0, 2 * np.pi)) - 0.25 * heel
    lateral = 0.4 * sway_g * np.sin(0.5 * cycle + rng.uniform(0, 2 * np.pi))
    parts = np.stack([vertical, forward, lateral], axis=1)
    parts -= (parts * env[:, None]).sum(0) / env.sum()
    ap, ml = _body_axes(up)
    return env[:, None] * (parts[:, :1] * up + parts[:, 1:2] * ap + parts[:, 2:3] * ml)


def _sensor(true_g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ADXL345-like reading: per-axis gain and offset error, white noise, 3.9 mg steps, +-16 g clip."""
    gain = 1.0 + 0.02 * rng.standard_normal(3)
    offset = np.clip(0.035 * rng.standard_normal(3), -0.1, 0.1)
    noise = rng.uniform(0.01, 0.02) * rng.standard_normal(true_g.shape)
    counts = np.rint((true_g * gain + offset + noise) / LSB_G)
    return np.clip(counts * LSB_G, -CLIP_G, CLIP_G).astype(np.float32)


# ---------------------------------------------------------------- postures and pre-event activity

def _standing(rng: np.random.Generator) -> np.ndarray:
    return _tilt(UPRIGHT, _heading(FORWARD, 25.0, rng), rng.uniform(5.0, 15.0))


def _sitting(standing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _tilt(standing, _heading(BACKWARD, 20.0, rng), rng.uniform(10.0, 25.0))


def _walk_params(rng: np.random.Generator) -> dict[str, float]:
    return {"cadence_hz": rng.uniform(1.6, 2.1), "heel_g": rng.uniform(0.35, 0.9), "heel_s": rng.uniform(0.06, 0.1),
            "sway_g": rng.uniform(0.08, 0.2)}


def _jog_params(rng: np.random.Generator) -> dict[str, float]:
    return {"cadence_hz": rng.uniform(2.4, 2.9), "heel_g": rng.uniform(1.2, 2.2), "heel_s": rng.uniform(0.11, 0.15),
            "sway_g": rng.uniform(0.15, 0.3)}


def _event_time(seconds: float, rng: np.random.Generator, after_s: float = 4.5) -> float:
    """When the main event happens: room for 2 s + descent before it and ``after_s`` after it."""
    lo, hi = 3.5, seconds - after_s
    return float(rng.uniform(lo, max(lo, min(hi, 0.6 * seconds))))


def _later_fidgets(t: np.ndarray, after: float, rng: np.random.Generator, p: float, amp: tuple[float, float]) -> np.ndarray:
    """With probability ``p`` per slot, a small movement in each 3 s slot after ``after``."""
    out = np.zeros((t.size, 3))
    for slot in np.arange(after, t[-1] - 1.0, 3.0):
        if rng.random() < p:
            out += _fidget(t, slot + rng.uniform(0.5, 2.5), rng.uniform(0.5, 1.5), rng.uniform(*amp), rng)
    return out


# ---------------------------------------------------------------- falls

@dataclass(frozen=True)
class _FallKind:
    pre: tuple[str, ...]            # "walk", "stand", "sit": what the wearer does before
    headings: tuple[np.ndarray, ...]  # horizontal direction the trunk falls towards
    peak_g: tuple[float, float]     # peak |a| at the impact (log-uniform)
    dip_g: tuple[float, float]      # lowest support during the descent (1 = none)
    descent_s: tuple[float, float]
    severe_p: float                 # share of very hard impacts that clip at 16 g
    flail_g: tuple[float, float]    # arm / trunk movement on the way down (someone who faints does not flail)


_SLIP = {"pre": ("walk", "walk", "stand"), "dip_g": (0.05, 0.6), "descent_s": (0.5, 1.1), "severe_p": 0.1,
         "flail_g": (0.05, 0.3)}
_FALLS: dict[str, _FallKind] = {
    "fall_forward": _FallKind(headings=(FORWARD,), peak_g=(3.0, 12.0), **_SLIP),
    "fall_backward": _FallKind(headings=(BACKWARD,), peak_g=(3.0, 12.0), **_SLIP),
    "fall_lateral": _FallKind(headings=(LEFT, LEFT, RIGHT), peak_g=(2.5, 12.0), **_SLIP),
    "faint_from_standing": _FallKind(pre=("stand", "walk"), headings=(FORWARD, BACKWARD, LEFT, RIGHT), peak_g=(2.5, 9.0),
                                     dip_g=(0.2, 0.6), descent_s=(0.7, 1.2), severe_p=0.0, flail_g=(0.03, 0.15)),
    "faint_from_sitting": _FallKind(pre=("sit",), headings=(FORWARD, LEFT, RIGHT, BACKWARD), peak_g=(2.0, 3.2),
                                    dip_g=(0.8, 0.95), descent_s=(0.9, 1.4), severe_p=0.0, flail_g=(0.02, 0.08)),
}


def _fall(kind: _FallKind, t: np.ndarray, rng: np.random.Generator, seconds: float) -> np.ndarray:
    standing = _standing(rng)
    pre = kind.pre[rng.integers(len(kind.pre))]
    start = _sitting(standing, rng) if pre == "sit" else standing
    heading = _heading(kind.headings[rng.integers(len(kind.headings))], 20.0, rng)
    lying = _tilt(start, heading, 60.0 + 40.0 * rng.beta(2.5, 1.2))  # mostly near 90 deg, as in SisFall
    impact = _event_time(seconds, rng)
    descent = rng.uniform(*kind.descent_s)
    at_impact = _slerp(start, lying, np.array([rng.uniform(0.6, 0.95)]))[0]
    settle = rng.uniform(0.3, 1.0)
    posture = _posture_track(t, start, [(impact - descent, impact, at_impact), (impact, impact + settle, lying)])

    ff_width = rng.uniform(0.25, min(0.6, descent))
    support = 1.0 - _dip(t, impact, ff_width, 1.0 - rng.uniform(*kind.dip_g))
    motion = np.zeros((t.size, 3))
    if pre == "walk":
        motion += _gait(t, posture, rng.uniform(0.0, 1.0), impact - descent + 0.15, rng=rng, **_walk_params(rng))
    # arms flailing / reaching out on the way down
    motion += _fidget(t, impact - 0.5 * descent, descent, rng.uniform(*kind.flail_g), rng)

    severe = rng.random() < kind.severe_p
    peak = rng.uniform(16.0, 26.0) if severe else float(np.exp(rng.uniform(*np.log(kind.peak_g))))
    # secondary contacts (knees, hands, hip, head) around the main one
    n_sec = rng.integers(2, 6)
    sec_delay = rng.choice([-1.0, 1.0], n_sec, p=[0.3, 0.7]) * rng.uniform(0.04, 0.35, n_sec)
    sec_dirs = _unit(lying + rng.normal(0.0, 0.8, (n_sec, 3)))
    sec_dirs *= np.sign(sec_dirs @ lying)[:, None]  # a contact pushes the body away from the floor
    sec_amps = rng.uniform(0.15, 0.6, n_sec) * (peak - 1.0)
    motion += _shock_cluster(t, impact, sec_amps, sec_delay, rng.uniform(0.03, 0.1, n_sec), sec_dirs)
    motion += _ringing(t, impact, rng.uniform(0.2, 0.8), rng.uniform(3.0, 8.0), rng.uniform(0.08, 0.25),
                       _unit(rng.normal(size=3)))
    # rolling over / limbs settling, mostly over within 1.5 s
    motion += _fidget(t, impact + rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0), rng.uniform(0.1, 0.6), rng)
    motion += _later_fidgets(t, impact + 1.6, rng, 0.2, (0.02, 0.12))

    # the ground pushes back along the new "up", plus a component from the way the body was moving
    main_dir = _unit(lying + rng.uniform(-0.3, 0.8) * start + rng.normal(0.0, 0.5, 3))
    i = int(np.argmin(np.abs(t - impact)))
    # never against the current "up": that would first cancel gravity and fake a free-fall dip
    main_dir = _unit(main_dir + max(0.0, 0.5 - main_dir @ posture[i]) * posture[i])
    # a hard floor: short contact (a chair-height drop still hits the floor, unlike a mattress)
    width = rng.uniform(0.04, 0.1) if pre != "sit" else rng.uniform(0.025, 0.05)
    base = support[i] * posture[i] + motion[i]
    # severe: drive the dominant axis (not just |a|) to 16-26 g, so the reading clips like SisFall's worst falls
    target = peak / np.abs(main_dir).max() if severe else peak
    motion += _shock_cluster(t, t[i], np.array([_main_shock_amplitude(base, main_dir, target)]), np.zeros(1),
                             np.array([width]), main_dir[None, :])
    return support[:, None] * posture + motion


# ---------------------------------------------------------------- activities of daily living

def _walk(t: np.ndarray, rng: np.random.Generator, seconds: float) -> np.ndarray:
    posture = np.broadcast_to(_standing(rng), (t.size, 3))
    stop = seconds - rng.uniform(0.0, 2.0)
    return posture + _gait(t, posture, rng.uniform(0.0, 1.5), stop, rng=rng, **_walk_params(rng))


def _jog(t: np.ndarray, rng: np.random.Generator, seconds: float) -> np.ndarray:
    posture = np.broadcast_to(_tilt(_standing(rng), FORWARD, rng.uniform(0.0, 8.0)), (t.size, 3))
    stop = seconds - rng.uniform(0.0, 3.0)
    return posture + _gait(t, posture, rng.uniform(0.5, 2.0), stop, rng=rng, **_jog_params(rng))


def _sit_down(t: np.ndarray, rng: np.random.Generator, seconds: float) -> np.ndarray:
    standing = _standing(rng)
    seated = _sitting(standing, rng)
    contact = _event_time(seconds, rng, after_s=5.0)
    descent = rng.uniform(0.5, 0.9)
    posture = _posture_track(t, standing, [(contact - descent, contact + 0.2, seated)])
    support = 1.0 - _dip(t, contact, rng.uniform(0.3, descent), rng.uniform(0.2, 0.7))
    motion = np.zeros((t.size, 3))
    if rng.random() < 0.5:
        motion += _gait(t, posture, 0.0, contact - descent - 0.5, rng=rng, **_walk_params(rng))
    motion += _ringing(t, contact, rng.uniform(0.05, 0.3), rng.uniform(3.0, 6.0), rng.uniform(0.08, 0.2), seated)
    motion += _later_fidgets(t, contact + 0.8, rng, 0.4, (0.03, 0.2))
    i = int(np.argmin(np.abs(t - contact)))
    base = support[i] * posture[i] + motion[i]
    peak = float(np.exp(rng.uniform(np.log(1.3), np.log(2.6))))
    motion += _shock_cluster(t, t[i], np.array([_main_shock_amplitude(base, seated, peak)]), np.zeros(1),
                             np.array([rng.uniform(0.08, 0.2)]), seated[None, :])
    return support[:, None] * posture + motion


def _lie_down(t: np.ndarray, rng: np.random.Generator, seconds: float) -> np.ndarray:
    standing = _standing(rng)
    start = _sitting(standing, rng) if rng.random() < 0.7 else standing
    lying = _tilt(start, _heading([BACKWARD, LEFT, RIGHT][rng.integers(3)], 20.0, rng), rng.uniform(60.0, 100.0))
    begin = _event_time(seconds, rng, after_s=6.0) - 1.0
    duration = rng.uniform(2.0, 4.0)
    posture = _posture_track(t, start, [(begin, begin + duration, lying)])
    motion = _fidget(t, begin + 0.5 * duration, duration, rng.uniform(0.05, 0.2), rng)
    motion += _later_fidgets(t, begin + duration, rng, 0.3, (0.02, 0.12))
    return posture + motion


def _flop_onto_bed(t: np.ndarray, rng: np.random.Generator, seconds: float) -> np.ndarray:
    standing = _standing(rng)
    start = _sitting(standing, rng) if rng.random() < 0.7 else standing
    lying = _tilt(start, _heading([BACKWARD, LEFT, RIGHT][rng.integers(3)], 20.0, rng), rng.uniform(60.0, 95.0))
    contact = _event_time(seconds, rng)
    descent = rng.uniform(1.2, 2.0)
    posture = _posture_track(t, start, [(contact - descent, contact + rng.uniform(0.2, 0.5), lying)])
    support = 1.0 - _dip(t, contact, rng.uniform(0.4, 0.8), rng.uniform(0.1, 0.35))
    motion = _ringing(t, contact, rng.uniform(0.2, 0.5), rng.uniform(2.0, 4.0), rng.uniform(0.15, 0.3), lying)
    motion += _fidget(t, contact, rng.uniform(0.6, 1.2), rng.uniform(0.1, 0.4), rng)
    motion += _later_fidgets(t, contact + 1.6, rng, 0.3, (0.02, 0.12))
    i = int(np.argmin(np.abs(t - contact)))
    base = support[i] * posture[i] + motion[i]
    peak = float(np.exp(rng.uniform(np.log(1.5), np.log(2.4))))
    motion += _shock_cluster(t, t[i], np.array([_main_shock_amplitude(base, lying, peak)]), np.zeros(1),
                             np.array([rng.uniform(0.09, 0.16)]), lying[None, :])
    return support[:, None] * posture + motion


def _jump(t: np.ndarray, rng: np.random.Generator, seconds: float) -> np.ndarray:
    standing = _standing(rng)
    first = _event_time(seconds, rng, after_s=6.0)
    jumps = first + np.cumsum(np.r_[0.0, rng.uniform(1.5, 3.0, rng.integers(0, 3))])
    jumps = jumps[jumps < seconds - 2.0]
    moves, support, motion = [], np.ones(t.size), np.zeros((t.size, 3))
    for land in jumps:
        flight = rng.uniform(0.2, 0.4)
        takeoff = land - flight
        crouch = _tilt(standing, FORWARD, rng.uniform(8.0, 25.0))
        moves += [(takeoff - 0.6, takeoff - 0.25, crouch), (takeoff - 0.25, takeoff, standing)]
        support -= _dip(t, takeoff - 0.3, 0.3, rng.uniform(0.2, 0.5))          # crouching down
        support += rng.uniform(0.6, 1.3) * _hann(t, takeoff - 0.12, 0.22)       # push-off
        support -= (1.0 - rng.uniform(0.05, 0.25)) * np.clip((t - takeoff + 0.04) / 0.05, 0, 1) * (t < land - 0.02)
        motion += _ringing(t, land, rng.uniform(0.2, 0.5), rng.uniform(3.0, 6.0), rng.uniform(0.1, 0.2), standing)
        peak = float(np.exp(rng.uniform(np.log(2.5), np.log(5.0))))
        motion += _shock_cluster(t, land, np.array([peak - 1.0, rng.uniform(0.3, 1.0) * (peak - 1.0)]),
                                 np.array([0.0, rng.uniform(0.08, 0.2)]), rng.uniform(0.04, 0.1, 2),
                                 np.stack([standing, _unit(standing + rng.normal(0, 0.3, 3))]))
    posture = _posture_track(t, standing, moves)
    return support[:, None] * posture + motion


def _stumble_recover(t: np.ndarray, rng: np.random.Generator, seconds: float) -> np.ndarray:
    standing = _standing(rng)
    trip = _event_time(seconds, rng, after_s=5.0)
    pitched = _tilt(standing, _heading(FORWARD, 25.0, rng), rng.uniform(15.0, 40.0))
    recover = rng.uniform(0.5, 1.0)
    posture = _posture_track(t, standing, [(trip - 0.05, trip + 0.3, pitched), (trip + 0.3, trip + 0.3 + recover, standing)])
    walk = _walk_params(rng)
    stop = seconds - rng.uniform(0.0, 2.0) if rng.random() < 0.7 else trip + 0.3 + recover + rng.uniform(0.5, 1.5)
    motion = _gait(t, posture, rng.uniform(0.0, 1.0), trip - 0.1, rng=rng, **walk)
    motion += _gait(t, posture, trip + 0.5, stop, rng=rng, **walk)
    # hurried catch-up steps while regaining balance
    motion += _fidget(t, trip + 0.5, 1.0, rng.uniform(0.3, 0.8), rng)
    peak = float(np.exp(rng.uniform(np.log(2.5), np.log(6.0))))
    direction = _unit(standing + rng.normal(0.0, 0.6, 3))
    motion += _shock_cluster(t, trip, np.array([peak - 1.0, 0.4 * (peak - 1.0)]), np.array([0.0, rng.uniform(0.2, 0.4)]),
                             rng.uniform(0.03, 0.06, 2), np.stack([direction, standing]))
    return posture + motion


def _bend_pick_up(t: np.ndarray, rng: np.random.Generator, seconds: float) -> np.ndarray:
    standing = _standing(rng)
    bent = _tilt(standing, _heading(FORWARD, 15.0, rng), rng.uniform(50.0, 90.0))
    begin = _event_time(seconds, rng, after_s=6.0) - 1.0
    down, hold, up = rng.uniform(1.0, 1.5), rng.uniform(1.0, 3.0), rng.uniform(1.0, 1.5)
    posture = _posture_track(t, standing, [(begin, begin + down, bent), (begin + down + hold, begin + down + hold + up, standing)])
    return posture + _fidget(t, begin + down + 0.5 * hold, hold, rng.uniform(0.05, 0.15), rng)


_ADLS: dict[str, Callable[[np.ndarray, np.random.Generator, float], np.ndarray]] = {
    "walk": _walk, "jog": _jog, "sit_down": _sit_down, "lie_down": _lie_down, "flop_onto_bed": _flop_onto_bed,
    "jump": _jump, "stumble_recover": _stumble_recover, "bend_pick_up": _bend_pick_up,
}


# ---------------------------------------------------------------- public API

def simulate_trial(activity: str, rng: np.random.Generator, fs_hz: float = FS_HZ, seconds: float = 15.0) -> SimulatedTrial:
    """One SYNTHETIC trial of ``activity`` (one of FALL_ACTIVITIES or ADL_ACTIVITIES), ``seconds`` long."""
    if activity not in _FALLS and activity not in _ADLS:
        raise ValueError(f"unknown activity {activity!r}; choose from {FALL_ACTIVITIES + ADL_ACTIVITIES}")
    if seconds < MIN_SECONDS:
        raise ValueError(f"seconds must be >= {MIN_SECONDS} (event context), got {seconds}")
    t = np.arange(int(round(seconds * fs_hz))) / fs_hz
    if activity in _FALLS:
        true_g = _fall(_FALLS[activity], t, rng, seconds)
    else:
        true_g = _ADLS[activity](t, rng, seconds)
    return SimulatedTrial(acc_g=_sensor(np.asarray(true_g), rng), is_fall=activity in _FALLS, activity=activity)


def simulate_trials(n_falls: int, n_adl: int, seed: int, fs_hz: float = FS_HZ) -> list[SimulatedTrial]:
    """``n_falls`` + ``n_adl`` SYNTHETIC 15 s trials in shuffled order, the same for the same ``seed``.

    Activities cycle through FALL_ACTIVITIES and ADL_ACTIVITIES, so every kind
    is (nearly) equally represented; each trial has its own child seed.
    """
    activities = [FALL_ACTIVITIES[i % len(FALL_ACTIVITIES)] for i in range(n_falls)]
    activities += [ADL_ACTIVITIES[i % len(ADL_ACTIVITIES)] for i in range(n_adl)]
    order_seq, *trial_seqs = np.random.SeedSequence(seed).spawn(len(activities) + 1)
    order = np.random.default_rng(order_seq).permutation(len(activities))
    return [simulate_trial(activities[j], np.random.default_rng(s), fs_hz) for j, s in zip(order, trial_seqs)]
