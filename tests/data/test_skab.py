"""SKAB's own protocol on all 34 labelled files, through the process path and the cascade (about 90 s)."""
from __future__ import annotations

import pytest

from vigil.streams.evaluation.skab import evaluate_skab

pytestmark = pytest.mark.dataset


def test_the_skab_protocol_beats_the_leaderboard_f1_at_a_low_false_alarm_rate(skab_dir):
    report = evaluate_skab(skab_dir)
    assert report["files"] == 34 and report["test_rows"] == 23_801
    assert report["anomaly_fraction"] == pytest.approx(0.537, abs=0.001)  # the benchmark's own 53.7 %: protocol reproduced
    # Measured here: F1 0.8075, FAR 9.40 %, MAR 26.79 % (Conv-AE, the leaderboard's best: 0.78 / 13.55 % / 28.02 %).
    # Issue 4's goal asks MAR <= 25 %: not reached (docs/evaluation.md says why).
    assert report["f1"] >= 0.79 and report["far"] <= 0.11 and report["mar"] <= 0.29
    assert report["dead_letters"] == 5  # pressure readings below vacuum, rejected as out of range
    assert 0.2 < report["cloud_fraction"] < 0.6
