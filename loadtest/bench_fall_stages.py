"""Per-core cost of the fall cascade's stages 1 and 2 without a broker.

    python -m loadtest.bench_fall_stages [--json] [--repeat 5]

Stage 1 (wearable.imu.raw -> fall.candidates) runs over synthetic wearers'
1 s chunks, state carried between batches as the worker carries it; stage 2
(fall.candidates -> fall.suspected) scores screened windows in one batch and
one at a time. Figures are per record on one core (pinned where the OS
allows), best of ``--repeat``: the per-core rate says how many 200 Hz wearers
one worker core can screen in real time.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

from loadtest.bench_edge_path import bench_arguments, best_of


def main() -> None:
    args = bench_arguments(__doc__)

    from vigil.models.registry import FALL_TIER, ModelRegistry
    from vigil.streams.falls.classify import FallModelStage
    from vigil.streams.falls.replay import interleave, simulated_wearers, wearer_records
    from vigil.streams.falls.screen import ScreenStage
    from vigil.streams.falls.training import train_falls_simulated
    from vigil.streams.runtime.codec import AvroCodec
    from vigil.streams.runtime.settings import Settings
    from vigil.streams.runtime.stage import RawMessage
    from vigil.streams.runtime.topics import SCHEMA_OF_TOPIC

    codec = AvroCodec()
    wearers = simulated_wearers(16, 8, seed=3)
    records = list(interleave(wearer_records(w, trials, 1_800_000_000_000)[0] for w, trials in wearers.items()))
    topic = "wearable.imu.raw"
    messages = [RawMessage(topic, 0, i, r["wearer_id"].encode(), codec.encode(topic, SCHEMA_OF_TOPIC[topic], r)) for i, r in enumerate(records)]
    screen, batch = ScreenStage(codec), 256

    def screen_all() -> list[dict]:
        state, out = {}, []
        for i in range(0, len(messages), batch):
            result = screen.process(messages[i:i + batch], state)
            state.update(result.state_updates)
            out += result.outputs
        return out

    candidates = screen_all()
    stage1_s = best_of(args.repeat, screen_all) / len(messages)

    with TemporaryDirectory() as tmp:
        settings = replace(Settings.from_env({}), models_dir=Path(tmp))
        version, _ = train_falls_simulated(settings, seed=11)
        model, _ = ModelRegistry(settings.models_dir).load(FALL_TIER)
    topic = "fall.candidates"
    encoded = [RawMessage(topic, 0, i, c["wearer_id"].encode(), codec.encode(topic, SCHEMA_OF_TOPIC[topic], c)) for i, c in enumerate(candidates)]
    stage2 = FallModelStage(codec, model, version)
    batched_s = best_of(args.repeat, lambda: stage2.process(encoded, {})) / len(encoded)
    single_s = best_of(args.repeat, lambda: [stage2.process([m], {}) for m in encoded]) / len(encoded)

    samples_per_chunk = 200
    report = {
        "chunks": len(messages), "candidates": len(candidates),
        "stage1_us_per_chunk": round(stage1_s * 1e6, 1),
        "stage1_wearers_per_core_real_time": round(1.0 / stage1_s),  # one 1 s chunk per wearer per second
        "stage1_ns_per_sample": round(stage1_s / samples_per_chunk * 1e9, 1),
        "stage2_us_per_candidate_batched": round(batched_s * 1e6, 1),
        "stage2_us_per_candidate_single": round(single_s * 1e6, 1),
        "stage2_batching_speedup": round(single_s / batched_s, 1),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:40s} {value}")


if __name__ == "__main__":
    main()
