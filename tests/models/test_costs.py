import pytest

from vigil.models.costs import AssetOutcome, CostModel, cheapest, cost_table, expected_cost


def outcomes(detected, false_alarms, fraction=0.3):
    return [AssetOutcome(True, d, f, fraction) for d, f in zip(detected, false_alarms)]


def test_expected_cost_by_hand():
    # 4 failing assets, 3 caught; 2 false alarms over 4 x 0.5 healthy lives of 2 years each = 4 asset-years.
    row = expected_cost(outcomes([True, True, True, False], [0, 2, 0, 0], 0.5), CostModel(asset_life_years=2.0), threshold=3.0)
    assert row.recall == 0.75 and row.missed_failures == 1 and row.false_alarms == 2
    assert row.false_alarms_per_asset_year == 0.5
    # 0.5 failures/yr x (0.75 x 3,000 + 0.25 x 15,000) + 0.5 FA/yr x 500 = 3,000 + 250
    assert row.annual_cost_per_asset == 3250.0


def test_configurable_costs_change_the_choice():
    table = {1.0: outcomes([True, True], [3, 3]), 5.0: outcomes([True, False], [0, 0])}
    cheap_inspections = cost_table(table, table.get, CostModel(false_alarm_inspection=100))
    dear_inspections = cost_table(table, table.get, CostModel(false_alarm_inspection=5_000))
    assert cheapest(cheap_inspections).threshold == 1.0  # 3,000 + 10 FA/yr x 100 = 4,000 < 9,000
    assert cheapest(dear_inspections).threshold == 5.0  # 3,000 + 10 x 5,000 = 53,000 > 9,000


def test_a_tie_goes_to_the_middle_of_the_cheapest_plateau():
    caught, missed = outcomes([True], [0]), outcomes([False], [0])
    table = {1.0: missed, 2.0: caught, 3.0: caught, 4.0: caught, 5.0: caught, 6.0: caught, 8.0: missed}
    assert cheapest(cost_table(table, table.get)).threshold == 4.0
    # The widest plateau wins over a lone cheap threshold.
    table = {1.0: caught, 2.0: missed, 3.0: caught, 4.0: caught, 5.0: caught}
    assert cheapest(cost_table(table, table.get)).threshold == 4.0


def test_invalid_cost_models_are_refused():
    with pytest.raises(ValueError, match="asset_life_years"):
        CostModel(asset_life_years=0)
    with pytest.raises(ValueError, match="no candidate"):
        cheapest([])
