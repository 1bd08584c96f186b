"""The run-to-failure evaluator on synthetic PRONOSTIA-layout packs whose fault onsets are known."""
import pytest

from vigil.models.alerts import AlertPolicyConfig
from vigil.streams.evaluation.pumps import evaluate_run_to_failure, score_episodes, tune_run_to_failure
from vigil.streams.pumps.run_to_failure import pack_lives
from vigil.streams.pumps.training import PumpTrainingConfig, train_run_to_failure

POLICY = AlertPolicyConfig(confirm_k=3, confirm_n=5, quiet_s=300.0)


@pytest.fixture(scope="module")
def packs(synthetic_packs):
    return synthetic_packs


@pytest.fixture(scope="module")
def trained(packs):
    (train, _), _ = packs
    return train_run_to_failure(train, config=PumpTrainingConfig(cloud_window=8, cloud_hidden=16, cloud_epochs=10, seed=3))


def test_known_onsets_are_found_and_healthy_pumps_raise_nothing(packs, trained):
    _, (pack, onsets) = packs
    report = evaluate_run_to_failure(pack, (trained.edge, "e"), (trained.cloud, "c"), policy=POLICY)
    assert set(report) >= {"assets", "detected", "false_alarm_assets", "median_lead_hours", "median_lead_fraction", "cloud_fraction", "per_asset"}
    per_asset = {a["asset"]: a for a in report["per_asset"]}
    assert report["assets"] == 6 and report["false_alarm_assets"] == 0
    for asset, onset in onsets.items():
        found = per_asset[asset]["first_episode_fraction"]
        assert per_asset[asset]["detected"], asset
        assert onset <= found <= onset + 0.25, (asset, onset, found)
    for asset in set(per_asset) - set(onsets):
        assert per_asset[asset]["episodes"] == 0, asset
    assert report["detected"] == 2
    assert 0 < report["cloud_fraction"] < 0.5  # the cascade spares the cloud tier most windows


def test_scores_follow_the_protocol_definitions(packs):
    (pack, _), _ = packs
    lives = pack_lives(pack)
    life = lives["pump-000"]
    at = lambda fraction: life.start_ms + int(fraction * life.duration_ms)  # noqa: E731
    alerts = [{"asset_id": "pump-000", "state": "OPEN", "ts_ms": at(0.1)}, {"asset_id": "pump-000", "state": "CLOSE", "ts_ms": at(0.2)},
              {"asset_id": "pump-000", "state": "OPEN", "ts_ms": at(0.6)}, {"asset_id": "pump-001", "state": "OPEN", "ts_ms": at(0.8)}]
    report = score_episodes(alerts, lives)
    first, second = report["per_asset"][0], report["per_asset"][1]
    assert first["false_alarm"] and first["detected"] and first["lead_fraction"] == pytest.approx(0.4, abs=1e-3)
    assert not second["false_alarm"] and second["lead_fraction"] == pytest.approx(0.2, abs=1e-3)
    assert report["detected"] == 2 and report["false_alarm_assets"] == 1
    assert report["median_lead_fraction"] == pytest.approx(0.3, abs=1e-3)
    assert report["median_lead_hours"] == pytest.approx(0.3 * life.duration_ms / 3.6e6, abs=1e-3)


def test_tuning_prefers_a_threshold_that_catches_both_failures_without_false_alarms(packs, trained):
    _, (pack, onsets) = packs
    rows, best = tune_run_to_failure(pack, (trained.edge, "e"), (trained.cloud, "c"), candidates=[2.0, 6.0, 1e6], policy=POLICY,
                                     bearings=sorted(onsets))  # the records that do run to failure
    assert [r.threshold for r in rows] == [2.0, 6.0, 1e6]
    assert rows[-1].recall == 0.0 and rows[-1].annual_cost_per_asset == 15_000.0  # nothing ever confirmed: every failure unplanned
    assert best.recall == 1.0 and best.false_alarms == 0
    assert best.annual_cost_per_asset == 3_000.0  # one planned repair per asset-year
