"""Per-core cost and state size of the monitoring stages without a broker: ops.drift, ops.quality and the fleet drift stage.

    python -m loadtest.bench_monitoring [--json] [--repeat 3]

Drift: a fleet of pumps' scored windows (12 vibration features) through ``DriftStage`` in batches of 256,
as the worker feeds it, decode included; per window, with its share of the edge stage's cost for
scale (``bench_edge_path``: about 100-150 us a window). Quality: 1 s vibration chunks of 5,120
samples and process samples through ``QualityStage``. State: bytes per pump after a simulated
week, as the changelog stores them. False findings: windows drawn from the reference for many
pump-hours, findings counted.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from loadtest.bench_edge_path import bench_arguments, best_of

T0 = 1_767_225_600_000
FEATURES = [f"f{i}" for i in range(12)]


def scored(asset: str, n: int, step_ms: int, rng: np.random.Generator, threshold: float = 0.6) -> list[dict[str, Any]]:
    z = rng.normal(size=(n, len(FEATURES)))
    scores = rng.normal(0.45, 0.05, n)
    return [{"asset_id": asset, "stream": "vibration/x", "seq": i, "ts_ms": T0 + i * step_ms, "feature_set": "vibration.v1",
             "edge_score": float(scores[i]), "edge_threshold": threshold, "flagged": bool(scores[i] > threshold), "evaluated": False,
             "cloud_score": None, "cloud_threshold": 3.0, "confirmed": False, "history_windows": 0, "edge_model_version": "edge-1",
             "cloud_model_version": "cloud-1", "deviations": dict(zip(FEATURES, np.round(z[i], 3).tolist())), "features": {}}
            for i in range(n)]


def main() -> None:
    args = bench_arguments(__doc__)

    from vigil.models.drift import reference_score_histogram
    from vigil.models.training import reference_histograms
    from vigil.streams.ops.drift import DriftAssetState, DriftStage
    from vigil.streams.ops.fleet_drift import FleetDriftStage, FleetDriftState
    from vigil.streams.ops.quality import QualityAssetState, QualityStage
    from vigil.streams.ops.references import DriftReferences
    from vigil.streams.runtime.codec import AvroCodec
    from vigil.streams.runtime.stage import RawMessage

    rng = np.random.default_rng(0)
    codec = AvroCodec()
    metadata = {"reference_histograms": {"vibration.v1": reference_histograms(rng.normal(size=(50_000, 12)), FEATURES)},
                "score_reference": {"vibration.v1": reference_score_histogram(rng.normal(0.45, 0.05, 50_000), 0.6)}}
    references = DriftReferences(known={"edge-1": metadata})

    def run(stage: Any, messages: list[RawMessage], decode_state: Any, batch: int = 256) -> tuple[dict[str, Any], list[Any]]:
        state: dict[str, Any] = {}
        outputs = []
        for i in range(0, len(messages), batch):
            result = stage.process(messages[i:i + batch], state)
            state.update({k: decode_state(v.to_bytes()) for k, v in result.state_updates.items()})
            outputs += list(zip(result.output_topics, result.outputs))
        return state, outputs

    # Drift: 20 pumps x 2 days at a window a minute (57,600 windows): hourly and daily windows, own reference of a day.
    pumps, per_pump = 20, 2 * 1440
    records = sorted((r for p in range(pumps) for r in scored(f"pump-{p:02d}", per_pump, 60_000, rng)), key=lambda r: r["ts_ms"])
    drift_messages = [RawMessage("pump.scores.cloud", 0, i, r["asset_id"].encode(), codec.encode("pump.scores.cloud", "vigil.pumps.CloudScore", r))
                      for i, r in enumerate(records)]
    drift_s = best_of(args.repeat, lambda: run(DriftStage(codec, references), drift_messages, DriftAssetState.from_bytes))
    decode_s = best_of(args.repeat, lambda: [codec.decode(m.value, "vigil.pumps.CloudScore") for m in drift_messages])
    state, outputs = run(DriftStage(codec, references), drift_messages, DriftAssetState.from_bytes)
    drift_state_bytes = [len(s.to_bytes()) for s in state.values()]
    summaries = [RawMessage("ops.drift.windows", 0, i, b"fleet", codec.encode("ops.drift.windows", "vigil.ops.DriftWindow", r))
                 for i, (t, r) in enumerate(outputs) if t == "ops.drift.windows"]
    fleet_s = best_of(args.repeat, lambda: run(FleetDriftStage(codec, references), summaries, FleetDriftState.from_bytes))
    fleet_state, fleet_outputs = run(FleetDriftStage(codec, references), summaries, FleetDriftState.from_bytes)
    asset_hours = sum(1 for t, r in outputs if t == "ops.drift.windows" and r["window"] == "1h")
    findings = [r for t, r in outputs if t == "ops.drift"] + [r for t, r in fleet_outputs if t is None]

    # Quality: 20 pumps x 6 h of 1 s vibration chunks (5,120 samples) every 10 s and process samples every 10 s.
    def chunk(asset: str, seq: int) -> dict[str, Any]:
        return {"asset_id": asset, "seq": seq, "ts_ms": T0 + seq * 10_000, "fs_hz": 5120.0, "rpm": 1780.0, "channel": "x",
                "samples": (0.1 * rng.standard_normal(5120)).astype("<f4").tobytes()}

    def sample(asset: str, seq: int) -> dict[str, Any]:
        return {"asset_id": asset, "seq": seq, "ts_ms": T0 + seq * 10_000, "pressure_bar": 4.0 + 0.01 * rng.standard_normal(),
                "flow_l_min": 600.0 + rng.standard_normal(), "current_a": 20.0 + 0.1 * rng.standard_normal(),
                "voltage_v": 400.0 + rng.standard_normal(), "motor_temp_c": 45.0 + rng.standard_normal(),
                "fluid_temp_c": 25.0 + 0.1 * rng.standard_normal(), "vibration1_rms_g": 0.1 + 0.001 * rng.standard_normal(),
                "vibration2_rms_g": None}

    steps = 6 * 360
    raw = []
    for seq in range(steps):
        for p in range(pumps):
            asset = f"pump-{p:02d}"
            raw.append(("pump.vibration.raw", "vigil.pumps.VibrationChunk", chunk(asset, seq)))
            raw.append(("pump.process.raw", "vigil.pumps.ProcessSample", sample(asset, seq)))
    quality_messages = [RawMessage(t, 0, i, r["asset_id"].encode(), codec.encode(t, schema, r), r["ts_ms"] + 1500)
                        for i, (t, schema, r) in enumerate(raw)]
    quality_s = best_of(args.repeat, lambda: run(QualityStage(codec), quality_messages, QualityAssetState.from_bytes))
    quality_state, quality_outputs = run(QualityStage(codec), quality_messages, QualityAssetState.from_bytes)

    figures = {
        "drift_us_per_window": round(drift_s / len(drift_messages) * 1e6, 1),
        "drift_decode_us_per_window": round(decode_s / len(drift_messages) * 1e6, 1),
        "drift_windows_per_core_s": round(len(drift_messages) / drift_s),
        "fleet_drift_us_per_pump_window_summary": round(fleet_s / max(1, len(summaries)) * 1e6, 1),
        "drift_state_bytes_per_pump": int(np.median(drift_state_bytes)),
        "fleet_drift_state_bytes": len(fleet_state["fleet"].to_bytes()) if fleet_state else 0,
        "quality_us_per_record": round(quality_s / len(quality_messages) * 1e6, 1),
        "quality_records_per_core_s": round(len(quality_messages) / quality_s),
        "quality_state_bytes_per_pump": int(np.median([len(s.to_bytes()) for s in quality_state.values()])),
        "unshifted_pump_hours_judged": asset_hours,
        "unshifted_findings": len(findings),
        "unshifted_quality_findings": sum(1 for t, _ in quality_outputs if t == "ops.quality"),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:42s} {value}")


if __name__ == "__main__":
    main()
