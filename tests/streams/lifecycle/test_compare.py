"""`vigil models compare falls` on the real broker: the fall topics hold only what a model fired on, so every candidate
counts, a missing verdict as not fired."""
from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import vigil
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.runtime.topics import FALL_CANDIDATES, FALL_SUSPECTED, FALL_SUSPECTED_SHADOW, ensure_topics

pytestmark = pytest.mark.broker

T0 = 1_767_225_600_000


def candidate(seq: int) -> dict:
    return {"wearer_id": "w-1", "seq": seq, "impact_ts_ms": T0 + seq * 60_000, "window_start_ts_ms": T0 + seq * 60_000 - 2_000,
            "fs_hz": 50.0, "source_seq": seq, "peak_g": 3.0, "angle_change_deg": 60.0, "post_std_g": 0.1, "xyz": bytes(4 * 750)}


def fired(seq: int, version: str, probability: float) -> dict:
    c = candidate(seq)
    return {"wearer_id": "w-1", "seq": seq, "impact_ts_ms": c["impact_ts_ms"], "window_start_ts_ms": c["window_start_ts_ms"],
            "fs_hz": 50.0, "probability": probability, "threshold": 0.5, "model_version": version, "features": {}, "xyz": c["xyz"]}


def test_falls_compare_counts_every_candidate_within_the_shadows_span(broker_settings, codec):
    ensure_topics(broker_settings)
    producer = RecordProducer(broker_settings, codec)
    for seq in range(12):
        producer.send_record(FALL_CANDIDATES, "w-1", candidate(seq))
    # Candidates 0-1 came before the shadow's first record: the active model alone judged them.
    for seq, p in ((0, 0.9), (2, 0.8), (3, 0.7), (5, 0.6)):
        producer.send_record(FALL_SUSPECTED, "w-1", fired(seq, "f1", p))
    for seq, p in ((2, 0.95), (3, 0.55), (7, 0.6), (9, 0.7)):  # first record at candidate 2, last at 9
        producer.send_record(FALL_SUSPECTED_SHADOW, "w-1", fired(seq, "f2", p))
    producer.flush()
    producer.close()
    out = vigil("models", "compare", "falls", "--json", env=broker_settings.to_env())
    assert out.returncode == 0, out.stderr
    shadow = json.loads(out.stdout)["shadow"]
    # Candidates 2-9: both fired on 2 and 3, the active alone on 5, the shadow alone on 7 and 9, neither on 4, 6 and 8.
    assert (shadow["windows_compared"], shadow["flagged_by_both"], shadow["flagged_by_served_only"],
            shadow["flagged_by_shadow_only"]) == (8, 2, 1, 2)
    assert shadow["flag_agreement"] == 0.625 and shadow["windows_scored_by_both"] == 2
    assert shadow["served_versions"] == ["f1"] and shadow["shadow_versions"] == ["f2"]
