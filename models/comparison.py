"""Two models' verdicts on the same windows (active against shadow), and flag rates per version (against a canary).

A verdict is one window as one model judged it: a key that names the window
(asset, stream, seq), a score (None where the model did not score it) and a
flag. Nothing here reads Kafka: `vigil models compare` reads the topics and
hands the verdicts over.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Verdict:
    asset_id: str
    window: Hashable  # names the window within the topology, e.g. (asset_id, stream, seq)
    version: str
    score: float | None
    flagged: bool


def compare_verdicts(served: Sequence[Verdict], shadow: Sequence[Verdict]) -> dict[str, Any]:
    """Agreement of two models on the windows both judged.

    >>> a = [Verdict("p1", ("p1", i), "v1", float(i), i >= 8) for i in range(10)]
    >>> b = [Verdict("p1", ("p1", i), "v2", float(i) * 2, i >= 9) for i in range(10)]
    >>> r = compare_verdicts(a, b)
    >>> r["windows_compared"], r["flag_agreement"], r["flagged_by_served_only"], r["score_pearson"]
    (10, 0.9, 1, 1.0)
    """
    by_window = {v.window: v for v in shadow}
    pairs = [(v, by_window[v.window]) for v in served if v.window in by_window]
    scored = [(a.score, b.score) for a, b in pairs if a.score is not None and b.score is not None]
    x, y = (np.asarray(column, dtype=np.float64) for column in zip(*scored)) if scored else (np.zeros(0), np.zeros(0))
    both_vary = len(scored) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0
    per_asset: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for a, b in pairs:
        counts = per_asset[a.asset_id]
        counts[0] += 1
        counts[1] += a.flagged
        counts[2] += b.flagged
    agree = sum(a.flagged == b.flagged for a, b in pairs)
    return {
        "served_versions": sorted({v.version for v in served}),
        "shadow_versions": sorted({v.version for v in shadow}),
        "windows_compared": len(pairs),
        "windows_served_only": len(served) - len(pairs),
        "windows_shadow_only": len(set(by_window) - {v.window for v in served}),
        "flag_agreement": round(agree / len(pairs), 4) if pairs else None,
        "flagged_by_both": sum(a.flagged and b.flagged for a, b in pairs),
        "flagged_by_served_only": sum(a.flagged and not b.flagged for a, b in pairs),
        "flagged_by_shadow_only": sum(b.flagged and not a.flagged for a, b in pairs),
        "windows_scored_by_both": len(scored),
        "score_pearson": round(float(stats.pearsonr(x, y).statistic), 4) if both_vary else None,
        "score_spearman": round(float(stats.spearmanr(x, y).statistic), 4) if both_vary else None,
        "flag_rate_per_asset": {asset: {"windows": n, "served": round(f / n, 4), "shadow": round(g / n, 4)}
                                for asset, (n, f, g) in sorted(per_asset.items())},
    }


def flag_rates_by_version(verdicts: Iterable[Verdict]) -> dict[str, Any]:
    """Per version: windows, assets, flag rate, and flag rate per asset (a canary and the active model serve
    different assets, so only rates compare).

    >>> v = [Verdict("p1", i, "a", 0.1, i == 0) for i in range(4)] + [Verdict("p2", i, "b", 0.9, True) for i in range(2)]
    >>> r = flag_rates_by_version(v)
    >>> r["a"]["flag_rate"], r["b"]["flag_rate"], r["b"]["assets"]
    (0.25, 1.0, 1)
    """
    grouped: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for v in verdicts:
        counts = grouped[v.version][v.asset_id]
        counts[0] += 1
        counts[1] += v.flagged
    out = {}
    for version, assets in sorted(grouped.items()):
        windows = sum(n for n, _ in assets.values())
        flagged = sum(f for _, f in assets.values())
        out[version] = {"windows": windows, "assets": len(assets), "flag_rate": round(flagged / windows, 4),
                        "flag_rate_per_asset": {a: round(f / n, 4) for a, (n, f) in sorted(assets.items())}}
    return out


def over_candidates(candidates: Iterable[tuple[str, Hashable]], served: Sequence[Verdict],
                    shadow: Sequence[Verdict]) -> tuple[list[Verdict], list[Verdict]]:
    """Both models' verdicts on every candidate, where each topic holds only the windows its model fired on (the fall
    topology): a candidate missing from a model's topic is one it let pass (not flagged, score unknown), named by the
    version that model served most.

    >>> fired = lambda key, v: Verdict("w1", key, v, 0.9, True)
    >>> a, b = over_candidates([("w1", ("w1", s)) for s in range(4)], [fired(("w1", 0), "v1"), fired(("w1", 1), "v1")],
    ...                        [fired(("w1", 1), "v2"), fired(("w1", 2), "v2")])
    >>> [(v.window[1], v.flagged, v.version) for v in a], [(v.window[1], v.flagged) for v in b]
    ([(0, True, 'v1'), (1, True, 'v1'), (2, False, 'v1'), (3, False, 'v1')], [(0, False), (1, True), (2, True), (3, False)])
    >>> compare_verdicts(a, b)["flag_agreement"]
    0.5
    """
    def completed(verdicts: Sequence[Verdict]) -> list[Verdict]:
        by_window = {v.window: v for v in verdicts}
        versions = Counter(v.version for v in verdicts)
        version = versions.most_common(1)[0][0] if versions else "?"
        return [by_window.get(window) or Verdict(asset, window, version, None, False) for asset, window in keys]

    keys = list(dict.fromkeys(candidates))
    return completed(served), completed(shadow)
