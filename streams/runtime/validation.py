"""Validation of raw pump and wearable records: what is rejected, and the reason code it carries.

Every rejected record goes to a dead-letter topic with one of ``REASONS``;
nothing is dropped silently. Checks here are stateless; the stages add the
ones that need per-asset state (duplicates, timestamps going backwards).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from vigil.models.features import PROCESS_INPUTS

# models.control records (vigil.models.lifecycle.change_problem): the change is not applied
CONTROL_REASONS = ("unknown_tier", "unknown_alias", "unknown_action", "share_out_of_range", "bad_sha256",
                   "unknown_version")  # unknown_version: no such version in the worker's registry

REASONS = (
    "undecodable",  # not Confluent-framed Avro, corrupt body, samples not float32-aligned
    "unknown_schema_id",  # framing fine, id unknown to the manifest / registry
    "schema_mismatch",  # a known schema, but not one this topic carries
    "key_mismatch",  # Kafka key differs from asset_id: per-asset ordering would break
    "non_finite",  # NaN or inf in a sample or field
    "empty",  # no samples, no asset id, or no process variable at all
    "oversized",  # more samples than the configured maximum
    "non_positive_fs",  # sampling rate <= 0
    "timestamp_backwards",  # starts before the asset's previous record on that channel ended
    "out_of_range",  # outside the physical range of the sensor
    "unsupported_feature_set",  # a feature window the active edge model has no scorer for
    "unsupported_rate",  # a wearable sampling rate the active fall model was not trained for
    "unknown_request",  # an answer to a confirmation request this wearer was never sent
    "processing_error",  # the stage raised on this record (a bug to fix; the record is kept for replay)
    "invalid_feedback",  # an alerts.feedback record vigil.models.feedback.feedback_problem refuses
    "unknown_alert",  # feedback naming an alert id its asset never raised, after the grace
    "invalid_failure",  # a maintenance.failures record vigil.models.feedback.failure_problem refuses
    *CONTROL_REASONS,
)


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str
    asset_id: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown reason code {self.reason!r}")


def unsupported_feature_set(tier: str, model_version: str, scored: Iterable[str], record: Mapping[str, Any]) -> Rejection:
    """A window of a feature set the tier's model was not trained on: dead-lettered, never mis-scored."""
    return Rejection(
        "unsupported_feature_set", f"{tier} model {model_version} scores {sorted(scored)}, not {record['feature_set']}", record["asset_id"]
    )


@dataclass(frozen=True)
class VibrationLimits:
    # 240,000 float32 samples (960 KB) keep a chunk under Kafka's default 1 MB message limit.
    max_samples: int = 240_000
    max_fs_hz: float = 1_000_000.0
    max_rpm: float = 100_000.0
    # Room for a chunk's other fields (framing, ids, times, rates) beside its samples.
    record_overhead_bytes: int = 4096

    @property
    def max_record_bytes(self) -> int:
        return 4 * self.max_samples + self.record_overhead_bytes


def check_record_size(value: bytes | None, max_bytes: int, what: str) -> Rejection | None:
    """``oversized`` for a raw record longer than any valid one, checked before it is even decoded."""
    if value is not None and len(value) > max_bytes:
        return Rejection("oversized", f"{len(value)} bytes, more than the {max_bytes} a {what} can take")
    return None


@dataclass(frozen=True)
class ProcessLimits:
    """Physical ranges of process variables, (low, high) inclusive."""

    ranges: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "pressure_bar": (-1.0, 1000.0),
            "flow_l_min": (-1.0, 1_000_000.0),
            "current_a": (0.0, 10_000.0),
            "voltage_v": (0.0, 100_000.0),
            "motor_temp_c": (-60.0, 400.0),
            "fluid_temp_c": (-60.0, 400.0),
            "vibration1_rms_g": (0.0, 500.0),
            "vibration2_rms_g": (0.0, 500.0),
        }
    )


def check_identity(record: Mapping[str, Any], key: bytes | None, id_field: str = "asset_id", ts_field: str = "ts_ms") -> Rejection | None:
    """The record names its asset and its Kafka key is exactly that id.

    One rule for every key that is not the id, null and empty included: partitioning by
    key is what keeps an asset's records in order on one partition, and a null key is
    spread over partitions by the producer, so its record can overtake or be overtaken
    by the asset's keyed ones.
    """
    asset_id = record[id_field]
    if not asset_id:
        return Rejection("empty", f"{id_field} is empty")
    if key is None:
        return Rejection("key_mismatch", f"Kafka key is null, not the {id_field}", asset_id)
    if not key:
        return Rejection("key_mismatch", f"Kafka key is empty, not the {id_field}", asset_id)
    if key != asset_id.encode():
        return Rejection("key_mismatch", f"Kafka key {key[:64]!r} is not the {id_field}", asset_id)
    if "seq" in record and record["seq"] < 0:
        return Rejection("out_of_range", f"seq {record['seq']} is negative", asset_id)
    if record[ts_field] < 0:
        return Rejection("out_of_range", f"{ts_field} {record[ts_field]} is before 1970", asset_id)
    return None


@dataclass(frozen=True)
class ImuLimits:
    max_samples: int = 120_000  # 10 minutes at 200 Hz in one chunk; ~1.4 MB of float32
    max_range_g: float = 400.0


def check_imu(record: Mapping[str, Any], key: bytes | None, model_fs_hz: float, limits: ImuLimits) -> tuple[Rejection | None, np.ndarray | None]:
    """Stateless checks of a decoded ImuChunk; returns (rejection, samples as (n, 3) float32 g)."""
    found = check_identity(record, key, "wearer_id", "ts")
    if found:
        return found, None
    wearer = record["wearer_id"]
    fs_hz, range_g = record["fs_hz"], record["range_g"]
    for name, value in (("fs_hz", fs_hz), ("range_g", range_g)):
        if not math.isfinite(value):
            return Rejection("non_finite", f"{name} is {value}", wearer), None
    if fs_hz <= 0:
        return Rejection("non_positive_fs", f"fs_hz is {fs_hz}", wearer), None
    # Windows are cut by sample count: another rate would give stage 2 windows of another length and time scale.
    if fs_hz != model_fs_hz:
        return Rejection("unsupported_rate", f"fs_hz {fs_hz} is not the fall model's {model_fs_hz:g} Hz; resample on the device", wearer), None
    if not 0 < range_g <= limits.max_range_g:
        return Rejection("out_of_range", f"range_g {range_g} outside (0, {limits.max_range_g}]", wearer), None
    # A reading beyond the sensor's full scale is a corrupt record, not a hard fall.
    return check_samples(record["xyz"], 3, limits.max_samples, range_g * 1.001, wearer, "xyz")


def samples_from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4")


def check_samples(raw: bytes, axes: int, max_samples: int, max_abs_g: float, asset_id: str,
                  name: str) -> tuple[Rejection | None, np.ndarray | None]:
    """Little-endian float32 acceleration, ``axes`` values per sample: (rejection, samples shaped (n,) or (n, axes))."""
    width = 4 * axes
    if len(raw) % width:
        unit = "float32" if axes == 1 else f"{axes}-axis float32 samples"
        return Rejection("undecodable", f"{name} holds {len(raw)} bytes, not a whole number of {unit}", asset_id), None
    n = len(raw) // width
    if n == 0:
        return Rejection("empty", "chunk has no samples", asset_id), None
    if n > max_samples:
        return Rejection("oversized", f"{n} samples, more than the limit of {max_samples}", asset_id), None
    samples = samples_from_bytes(raw)
    peak = float(np.max(np.abs(samples)))
    if not math.isfinite(peak):
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        return Rejection("non_finite", f"{bad} of {samples.size} values are NaN or inf", asset_id), None
    if peak > max_abs_g:
        return Rejection("out_of_range", f"|acceleration| reaches {peak:.4g} g, above {max_abs_g:g} g", asset_id), None
    return None, samples if axes == 1 else samples.reshape(n, axes)


def check_vibration(
    record: Mapping[str, Any], key: bytes | None, max_abs_g: float, limits: VibrationLimits
) -> tuple[Rejection | None, np.ndarray | None]:
    """Stateless checks of a decoded VibrationChunk; returns (rejection, samples)."""
    found = check_identity(record, key)
    if found:
        return found, None
    asset_id = record["asset_id"]
    fs_hz = record["fs_hz"]
    if not math.isfinite(fs_hz):
        return Rejection("non_finite", f"fs_hz is {fs_hz}", asset_id), None
    if fs_hz <= 0:
        return Rejection("non_positive_fs", f"fs_hz is {fs_hz}", asset_id), None
    if fs_hz > limits.max_fs_hz:
        return Rejection("out_of_range", f"fs_hz {fs_hz} above {limits.max_fs_hz}", asset_id), None
    rpm = record.get("rpm")
    if rpm is not None:
        if not math.isfinite(rpm):
            return Rejection("non_finite", f"rpm is {rpm}", asset_id), None
        if not 0 <= rpm <= limits.max_rpm:
            return Rejection("out_of_range", f"rpm {rpm} outside [0, {limits.max_rpm}]", asset_id), None
    return check_samples(record["samples"], 1, limits.max_samples, max_abs_g, asset_id, "samples")


def check_process(
    record: Mapping[str, Any], key: bytes | None, limits: ProcessLimits
) -> tuple[Rejection | None, np.ndarray | None]:
    """Stateless checks of a decoded ProcessSample; returns (rejection, values in PROCESS_INPUTS order, NaN = missing)."""
    found = check_identity(record, key)
    if found:
        return found, None
    asset_id = record["asset_id"]
    values = np.full(len(PROCESS_INPUTS), np.nan)
    present = 0
    for i, name in enumerate(PROCESS_INPUTS):
        value = record.get(name)
        if value is None:
            continue
        if not math.isfinite(value):
            return Rejection("non_finite", f"{name} is {value}", asset_id), None
        lo, hi = limits.ranges[name]
        if not lo <= value <= hi:
            return Rejection("out_of_range", f"{name} {value} outside [{lo}, {hi}]", asset_id), None
        values[i] = value
        present += 1
    if present == 0:
        return Rejection("empty", "no process variable is present", asset_id), None
    return None, values
