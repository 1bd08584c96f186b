"""Per-core cost of the pump edge path without a broker: features, decode, stages, scoring.

    python -m loadtest.bench_edge_path [--json] [--repeat 5]

Figures are per window or per record on one core (the process is pinned to
one CPU where the OS allows), best of ``--repeat`` runs, with ratios between
the batched and the one-at-a-time forms: ratios travel between machines,
absolute microseconds do not.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import numpy as np


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_arguments(doc: str | None) -> argparse.Namespace:
    """``--json`` and ``--repeat``; pins the process to one CPU where the OS allows, so figures are per core."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    return args


def main() -> None:
    args = bench_arguments(__doc__)

    from vigil.models.bearing import SKF_6205
    from vigil.models.features import extract_window_features
    from vigil.models.simulate import FleetSimulator, make_fleet
    from vigil.streams.pumps.edge import EdgeStage
    from vigil.streams.pumps.offline import OfflinePumpPipeline
    from vigil.streams.pumps.training import PumpTrainingConfig, fit_pump_models
    from vigil.streams.pumps.vibration import VibrationStage
    from vigil.streams.runtime.codec import AvroCodec
    from vigil.streams.runtime.stage import RawMessage

    rng = np.random.default_rng(0)
    orders = SKF_6205.fault_orders()
    fs, n, batch = 4000.0, 4000, 256
    windows = rng.standard_normal((batch, n)).astype(np.float32)
    one = best_of(args.repeat, lambda: [extract_window_features(w, fs, 1800.0, orders, (500.0, 1800.0)) for w in windows[:64]]) / 64
    many = best_of(args.repeat, lambda: extract_window_features(windows, fs, 1800.0, orders, (500.0, 1800.0))) / batch

    codec = AvroCodec()
    records = [r for step in FleetSimulator(make_fleet(batch, seed=1, n_faulty=0), seed=1, chunk_s=1.0).steps(1) for r in step if r.kind == "vibration"]
    encoded = [codec.encode("pump.vibration.raw", "vigil.pumps.VibrationChunk", r.value) for r in records]
    decode = best_of(args.repeat, lambda: [codec.decode(b, "vigil.pumps.VibrationChunk") for b in encoded]) / batch
    messages = [RawMessage("pump.vibration.raw", 0, i, r.key.encode(), b) for i, (r, b) in enumerate(zip(records, encoded))]
    stage = VibrationStage(codec)
    vibration_stage = best_of(args.repeat, lambda: stage.process(messages, {})) / batch

    # Edge stage: a model from a small healthy fleet, then batches of already-commissioned windows.
    sim = FleetSimulator(make_fleet(16, seed=2, n_faulty=0, horizon_s=60 * 20.0), seed=2, chunk_s=1.0, interval_s=20.0)
    features = OfflinePumpPipeline().feed_batched((r.kind, r.key, r.value) for step in sim.steps(60) for r in step).features
    model = fit_pump_models(features, config=PumpTrainingConfig(cloud_epochs=1)).edge
    edge = EdgeStage(codec, model, "bench")
    state: dict[str, Any] = {}
    commissioning = [RawMessage("pump.features", 0, i, f["asset_id"].encode(), codec.encode("pump.features", "vigil.pumps.FeatureWindow", f))
                     for i, f in enumerate(features)]
    state.update(edge.process(commissioning, state).state_updates)
    vib = [f for f in features if f["feature_set"] == "vibration.v2"]
    fresh = [dict(f, seq=f["seq"] + 10_000 + k) for k, f in enumerate(vib[:batch])]
    scored = [RawMessage("pump.features", 0, i, f["asset_id"].encode(), codec.encode("pump.features", "vigil.pumps.FeatureWindow", f)) for i, f in enumerate(fresh)]

    from vigil.streams.pumps.edge import EdgeStreamState

    def fresh_state() -> dict[str, Any]:  # stages update dict-held state in place
        return {k: EdgeStreamState.from_bytes(v.to_bytes()) for k, v in state.items()}

    def score_batch() -> None:
        result = edge.process(scored, fresh_state())
        served = [o for o, topic in zip(result.outputs, result.output_topics) if topic is None]
        assert sum(o["state"] == "SCORED" for o in served) == batch

    def score_singly() -> None:
        current = fresh_state()
        for m in scored[:32]:
            assert edge.process([m], current).outputs[0]["state"] == "SCORED"

    edge_batched = best_of(args.repeat, score_batch) / batch
    edge_single = best_of(args.repeat, score_singly) / 32
    # The same batches with a shadow model (another fit, same features) scoring every window to its own topic.
    shadow_model = fit_pump_models(features, config=PumpTrainingConfig(cloud_epochs=1, seed=1)).edge
    edge.swap(shadow_model, "bench-shadow", alias="shadow")
    edge_with_shadow = best_of(args.repeat, score_batch) / batch
    edge.swap(None, None, alias="shadow")

    result = {
        "features_us_per_window_one_at_a_time": round(one * 1e6, 1),
        "features_us_per_window_batched_256": round(many * 1e6, 1),
        "features_batched_speedup": round(one / many, 2),
        "avro_decode_us_per_4000_sample_chunk": round(decode * 1e6, 1),
        "vibration_stage_us_per_record_batch_256": round(vibration_stage * 1e6, 1),
        "edge_stage_us_per_window_batch_256": round(edge_batched * 1e6, 1),
        "edge_stage_us_per_window_batch_1": round(edge_single * 1e6, 1),
        "edge_batched_speedup": round(edge_single / edge_batched, 1),
        "edge_stage_us_per_window_batch_256_with_shadow": round(edge_with_shadow * 1e6, 1),
        "shadow_cost_per_window_ratio": round(edge_with_shadow / edge_batched, 2),
        "records_per_core_s_vibration_plus_edge": round(1.0 / (vibration_stage + edge_batched)),
        "window": "1 s at 4 kHz (float32)",
    }
    if args.json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="pump edge path, one core, no broker")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console().print(table)


if __name__ == "__main__":
    main()
