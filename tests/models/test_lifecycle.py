"""What a model change may say, where a rollback goes, and which assets a canary serves."""
from __future__ import annotations

import math

import pytest

from vigil.models.lifecycle import canary_position, change_problem, current_changes, in_canary, rollback_target

ASSETS = [f"pump-{i:05d}" for i in range(10_000)]


@pytest.mark.parametrize("share", [0.01, 0.1, 0.5, 0.9])
def test_a_canary_takes_its_share_of_assets_within_binomial_error(share):
    n = sum(in_canary(a, share) for a in ASSETS)
    sigma = math.sqrt(len(ASSETS) * share * (1 - share))
    assert abs(n - share * len(ASSETS)) < 4 * sigma


def test_growing_a_canary_only_adds_assets():
    small = {a for a in ASSETS if in_canary(a, 0.1)}
    large = {a for a in ASSETS if in_canary(a, 0.2)}
    assert small < large


def test_the_position_is_a_pure_function_of_the_asset_id():
    # the same in every worker and every run: a fixed hash, not Python's salted hash()
    assert canary_position("wearer-7") == 0.4636865835995098  # blake2b of the id; pinned so a change of hash is noticed


def test_the_change_in_force_is_the_highest_epoch_per_alias():
    changes = [{"tier": "edge", "alias": "active", "version": "a", "epoch": 1},
               {"tier": "edge", "alias": "shadow", "version": "s", "epoch": 1},
               {"tier": "edge", "alias": "active", "version": "b", "epoch": 2},
               {"tier": "cloud", "alias": "active", "version": "c", "epoch": 1}]
    current = current_changes(changes)
    assert {k: v["version"] for k, v in current.items()} == {"pumps|edge|active": "b", "pumps|edge|shadow": "s", "pumps|cloud|active": "c"}


def test_rollbacks_walk_back_through_promotions():
    history = [{"action": "promote", "version": v} for v in ("a", "b", "c")]
    assert rollback_target(history, "c") == "b"
    history.append({"action": "rollback", "version": "b"})
    assert rollback_target(history, "b") == "a"
    history.append({"action": "rollback", "version": "a"})
    assert rollback_target(history, "a") is None


def test_a_retirement_is_for_a_shadow_or_canary_only():
    change = {"topology": "pumps", "tier": "edge", "alias": "shadow", "action": "retire", "version": "edge-1", "sha256": "0" * 64, "share": 0.0}
    assert change_problem(change) is None
    assert change_problem({**change, "alias": "active"})[0] == "unknown_action"
    assert change_problem({**change, "tier": "falls"})[0] == "unknown_tier"  # falls belongs to the falls topology
