"""Fault type from envelope spectra: which bearing defect line stands out.

Each vibration window carries ``envelope_bpfo``, ``envelope_bpfi`` and
``envelope_bsf``: the squared-envelope spectrum's power at harmonics of the
outer-race, inner-race and ball defect frequencies over its median level
(see ``models.features``). A defect repeats its impacts at its own rate, so
its line rises far above the others. One window's spectrum is noisy, so the
rule works on the median over an asset's windows:

1. the best fault is the one with the largest median ratio;
2. ``none`` if that median is below ``min_ratio``: on Gaussian noise the median
   over 10 windows stayed below 6 at 4-25.6 kHz and 0.1-1 s windows (measured
   here), while single windows reached 13.6;
3. ``uncertain`` if the best median is less than ``min_margin`` times the runner-up;
4. otherwise ``outer_race`` (BPFO), ``inner_race`` (BPFI) or ``ball`` (BSF).

Confidence is the share of windows whose own decision (same floor, no margin
test) agrees with the answer.

>>> diagnose_fault([{"envelope_bpfo": 40.0, "envelope_bpfi": 3.0, "envelope_bsf": 2.0}] * 3).fault
'outer_race'
>>> diagnose_fault([{"envelope_bpfo": 4.0, "envelope_bpfi": 5.0, "envelope_bsf": 3.0}]).fault  # no line stands out
'none'
>>> diagnose_fault([{"envelope_bpfo": 30.0, "envelope_bpfi": 25.0, "envelope_bsf": 3.0}]).fault
'uncertain'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

LINES = ("envelope_bpfo", "envelope_bpfi", "envelope_bsf")
FAULT_OF_LINE = {"envelope_bpfo": "outer_race", "envelope_bpfi": "inner_race", "envelope_bsf": "ball"}
MIN_LINE_RATIO = 10.0
MIN_MARGIN = 1.5


@dataclass(frozen=True)
class Diagnosis:
    fault: str  # outer_race, inner_race, ball, none or uncertain
    confidence: float  # share of windows that agree, 0..1
    envelope_ratios: dict[str, float]  # median per line


def diagnose_fault(
    windows: Sequence[Mapping[str, float]], min_ratio: float = MIN_LINE_RATIO, min_margin: float = MIN_MARGIN
) -> Diagnosis | None:
    """Diagnose one asset from its windows' envelope ratios; None when no window has them (rpm unknown)."""
    ratios = np.array([[w.get(line, np.nan) for line in LINES] for w in windows], dtype=np.float64).reshape(-1, len(LINES))
    ratios = ratios[np.isfinite(ratios).all(axis=1)]
    if len(ratios) == 0:
        return None
    med = np.median(ratios, axis=0)
    order = np.argsort(-med)
    best, second = int(order[0]), int(order[1])
    summary = {line: round(float(m), 3) for line, m in zip(LINES, med)}
    window_best = np.argmax(ratios, axis=1)
    window_above = ratios.max(axis=1) >= min_ratio
    if med[best] < min_ratio:
        return Diagnosis("none", round(float(np.mean(~window_above)), 3), summary)
    agree = round(float(np.mean(window_above & (window_best == best))), 3)
    if med[second] > 0 and med[best] < min_margin * med[second]:
        return Diagnosis("uncertain", agree, summary)
    return Diagnosis(FAULT_OF_LINE[LINES[best]], agree, summary)
