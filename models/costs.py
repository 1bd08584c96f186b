"""Choosing an alert threshold by expected cost, not by a score quantile.

For every candidate threshold the evaluation gives, per asset, whether its
failure was caught in time and how many false alarms it raised while healthy.
Costs (defaults from the design brief): an unplanned failure 15,000, a
planned repair 3,000, a false-alarm inspection 500.

Run-to-failure records are often accelerated tests (PRONOSTIA lives are
hours), so time is measured in lives: each record's life stands for
``asset_life_years`` of service. Then failures per asset-year are
``1 / asset_life_years`` and false alarms per asset-year are false alarms per
healthy life-fraction observed, scaled the same way.

>>> outcomes = [AssetOutcome(failed=True, detected=True, false_alarms=0, healthy_life_fraction=0.3),
...             AssetOutcome(failed=True, detected=False, false_alarms=1, healthy_life_fraction=0.3)]
>>> row = expected_cost(outcomes, CostModel(asset_life_years=1.0), threshold=5.0)
>>> row.recall, row.missed_failures, round(row.false_alarms_per_asset_year, 3)
(0.5, 1, 1.667)
>>> row.annual_cost_per_asset  # 1 failure/yr x (0.5 x 3,000 + 0.5 x 15,000) + 1.667 x 500
9833.33
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence


@dataclass(frozen=True)
class CostModel:
    unplanned_failure: float = 15_000.0
    planned_repair: float = 3_000.0
    false_alarm_inspection: float = 500.0
    asset_life_years: float = 1.0

    def __post_init__(self) -> None:
        if self.asset_life_years <= 0:
            raise ValueError(f"asset_life_years must be > 0, got {self.asset_life_years}")
        if min(self.unplanned_failure, self.planned_repair, self.false_alarm_inspection) < 0:
            raise ValueError("costs must be >= 0")


@dataclass(frozen=True)
class AssetOutcome:
    failed: bool  # the record ends in a failure
    detected: bool  # an alert came in time to plan the repair
    false_alarms: int  # alert episodes while the asset was healthy
    healthy_life_fraction: float  # how much of a life the record shows healthy


@dataclass(frozen=True)
class CostRow:
    threshold: float
    recall: float
    missed_failures: int
    false_alarms: int
    false_alarms_per_asset_year: float
    annual_cost_per_asset: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def expected_cost(outcomes: Sequence[AssetOutcome], costs: CostModel, threshold: float) -> CostRow:
    failed = [o for o in outcomes if o.failed]
    caught = sum(o.detected for o in failed)
    recall = caught / len(failed) if failed else 1.0
    false_alarms = sum(o.false_alarms for o in outcomes)
    healthy_years = sum(o.healthy_life_fraction for o in outcomes) * costs.asset_life_years
    fa_per_year = false_alarms / healthy_years if healthy_years > 0 else 0.0
    failures_per_year = 1.0 / costs.asset_life_years
    cost = failures_per_year * (recall * costs.planned_repair + (1.0 - recall) * costs.unplanned_failure)
    cost += fa_per_year * costs.false_alarm_inspection
    return CostRow(float(threshold), round(recall, 4), len(failed) - caught, false_alarms, round(fa_per_year, 3), round(cost, 2))


def cost_table(
    thresholds: Iterable[float], outcomes_at: Callable[[float], Sequence[AssetOutcome]], costs: CostModel = CostModel()
) -> list[CostRow]:
    """One row per candidate threshold; ``outcomes_at(threshold)`` evaluates the fleet at that threshold."""
    return [expected_cost(outcomes_at(t), costs, t) for t in thresholds]


def cheapest(rows: Sequence[CostRow]) -> CostRow:
    """The lowest expected cost. When a run of neighbouring thresholds ties, the middle one:
    a threshold at either edge of the plateau is one noisy window away from a costlier outcome.

    >>> rows = [CostRow(float(t), 1.0, 0, 0, 0.0, c) for t, c in [(1, 3500.0), (2, 3000.0), (3, 3000.0), (4, 3000.0), (5, 15000.0)]]
    >>> cheapest(rows).threshold
    3.0
    """
    if not rows:
        raise ValueError("no candidate thresholds")
    ordered = sorted(rows, key=lambda r: r.threshold)
    best = min(r.annual_cost_per_asset for r in ordered)
    runs: list[list[CostRow]] = []
    for i, r in enumerate(ordered):
        if r.annual_cost_per_asset != best:
            continue
        if runs and ordered[i - 1].annual_cost_per_asset == best:
            runs[-1].append(r)
        else:
            runs.append([r])
    widest = max(runs, key=len)
    return widest[(len(widest) - 1) // 2]
