"""CWRU-layout packs: does the envelope diagnosis name the right race?

Every record runs through the vibration stage exactly as a replayed pack
would (1 s windows, SKF 6205 geometry, the record's rpm), and the windows'
envelope features go to the same ``diagnose_fault`` the alert policy uses.
Inner- and outer-race records are scored together; ball faults separately,
because envelope analysis is known to be weak for them.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vigil.models.diagnosis import diagnose_fault
from vigil.models.packs import iter_cwru, pack_assets, pack_kind
from vigil.streams.pumps.offline import OfflinePumpPipeline

EXPECTED = {"IR": "inner_race", "OR": "outer_race", "B": "ball", "normal": "none"}


def evaluate_cwru(path: str | Path) -> dict[str, Any]:
    if pack_kind(path) != "cwru":
        raise ValueError(f"{path} is not a CWRU-layout pack")
    with np.load(path) as d:
        labels = {f"cwru-{fid}": (str(f), int(mil), str(pos), int(hp)) for fid, f, mil, pos, hp in
                  zip(d["file_id"], d["fault"], d["diameter_mil"], d["or_position"], d["load_hp"])}
    pipeline = OfflinePumpPipeline(assets=pack_assets("cwru"))
    out = pipeline.feed_batched((("vibration", c.asset_id, c.as_record()) for c in iter_cwru(path)), batch_size=64)
    windows: dict[str, list[dict[str, float]]] = defaultdict(list)
    for w in out.features:
        windows[w["asset_id"]].append(w["features"])
    records = []
    for asset, (fault, mil, position, load) in sorted(labels.items()):
        diagnosis = diagnose_fault(windows.get(asset, []))
        got = diagnosis.fault if diagnosis is not None else "no_rpm"
        records.append({
            "record": asset, "fault": fault, "diameter_mil": mil, "or_position": position, "load_hp": load,
            "windows": len(windows.get(asset, [])), "diagnosis": got, "correct": got == EXPECTED[fault],
            "envelope_ratios": diagnosis.envelope_ratios if diagnosis is not None else {},
        })
    ir_or = [r for r in records if r["fault"] in ("IR", "OR")]
    ball = [r for r in records if r["fault"] == "B"]
    confusion: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        confusion[r["fault"]][r["diagnosis"]] += 1
    return {
        "ir_or_records": len(ir_or),
        "ir_or_accuracy": round(sum(r["correct"] for r in ir_or) / len(ir_or), 4) if ir_or else None,
        "ball_records": len(ball),
        "ball_accuracy": round(sum(r["correct"] for r in ball) / len(ball), 4) if ball else None,
        "ir_or_accuracy_by_diameter_mil": {
            mil: round(sum(r["correct"] for r in ir_or if r["diameter_mil"] == mil) / sum(r["diameter_mil"] == mil for r in ir_or), 4)
            for mil in sorted({r["diameter_mil"] for r in ir_or})
        },
        "confusion": {fault: dict(counts) for fault, counts in sorted(confusion.items())},
        "dead_letters": len(out.dead_letters),
        "per_record": records,
    }
