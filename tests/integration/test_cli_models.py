"""`vigil train pumps`, `vigil models`, `vigil evaluate` and `vigil tune` as users run them."""
from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import vigil
from vigil.models.registry import ModelRegistry


@pytest.fixture(scope="module")
def trained_registry(tmp_path_factory, synthetic_packs):
    (train, _), _ = synthetic_packs
    models = tmp_path_factory.mktemp("registry")
    env = {"VIGIL_MODELS": str(models), "VIGIL_ALERT_QUIET_S": "300"}
    out = vigil("train", "pumps", "--pack", str(train), "--cloud-window", "8", "--cloud-epochs", "8", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return env, json.loads(out.stdout)


def test_train_pumps_writes_both_tiers_with_their_metadata(trained_registry):
    env, report = trained_registry
    registry = ModelRegistry(env["VIGIL_MODELS"])
    assert registry.active_version("edge") == report["edge_version"]
    assert registry.active_version("cloud") == report["cloud_version"]
    meta = registry.metadata("cloud")
    assert meta["edge_version"] == report["edge_version"]
    assert len(meta["training_data_fingerprint"]) == 64 and meta["feature_sets"]["vibration.v2"][0] == "rms_g"
    fractions = meta["reference_histograms"]["vibration.v2"]["fractions"]["envelope_bpfo"]
    assert "kurtosis" not in meta["feature_sets"]["vibration.v2"]  # the default compares energies only
    assert sum(fractions) == pytest.approx(1.0, abs=1e-4)
    assert meta["thresholds"]["vibration.v2"] == meta["metrics"]["vibration.v2"]["threshold"]
    assert meta["source"]["bearings"] == [f"pump-{i:03d}" for i in range(6)]


def test_evaluate_pumps_json_has_the_contract_keys(trained_registry, synthetic_packs):
    env, _ = trained_registry
    _, (pack, onsets) = synthetic_packs
    out = vigil("evaluate", "pumps", "--pack", str(pack), "--json", env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {"assets", "detected", "median_lead_hours", "median_lead_fraction", "false_alarm_assets", "cloud_fraction", "per_asset"} <= set(report)
    assert report["detected"] == len(onsets) and report["false_alarm_assets"] == 0


def test_tune_writes_the_cheapest_threshold_and_a_promotion_needs_the_broker(trained_registry, synthetic_packs, tmp_path):
    env, report = trained_registry
    _, (pack, _) = synthetic_packs
    out = vigil("tune", "--pack", str(pack), "--candidates", "2", "4", "1000000", "--json", env=env)
    assert out.returncode == 0, out.stderr
    tuned = json.loads(out.stdout)
    assert [row["threshold"] for row in tuned["table"]] == [2.0, 4.0, 1e6]
    assert tuned["table"][-1]["annual_cost_per_asset"] == 15_000.0
    assert tuned["chosen"]["annual_cost_per_asset"] == min(r["annual_cost_per_asset"] for r in tuned["table"])
    registry = ModelRegistry(env["VIGIL_MODELS"])
    assert registry.metadata("cloud")["thresholds"]["vibration.v2"] == tuned["chosen"]["threshold"]

    listed = json.loads(vigil("models", "list", "--json", env=env).stdout)
    assert {(r["tier"], r["active"]) for r in listed} == {("edge", True), ("cloud", True)}
    # Promotions go through the broker (tests/integration/test_model_lifecycle.py); without one, nothing changes.
    second = registry.save("cloud", registry.load("cloud")[0], {"note": "candidate"})
    out = vigil("models", "promote", "cloud", second, "--why", "candidate", env={**env, "VIGIL_BROKER": ""})
    assert out.returncode == 2 and "VIGIL_BROKER" in out.stderr, out.stderr
    assert registry.active_version("cloud") == report["cloud_version"]
    shown = json.loads(vigil("models", "show", "cloud", "--json", env=env).stdout)
    assert shown["active"] and [h["action"] for h in shown["history"]] == ["save"]


def test_commands_without_models_or_with_a_tampered_one_say_what_to_do(trained_registry, synthetic_packs, tmp_path):
    _, (pack, _) = synthetic_packs
    out = vigil("evaluate", "pumps", "--pack", str(pack), env={"VIGIL_MODELS": str(tmp_path / "empty")})
    assert out.returncode == 2 and "vigil train pumps" in out.stderr
    env, report = trained_registry
    artifact = ModelRegistry(env["VIGIL_MODELS"]).root / "edge" / report["edge_version"] / "model.pkl"
    copy = tmp_path / "registry"
    import shutil

    shutil.copytree(env["VIGIL_MODELS"], copy)
    (copy / "edge" / report["edge_version"] / "model.pkl").write_bytes(artifact.read_bytes()[:-10])
    out = vigil("evaluate", "pumps", "--pack", str(pack), env={"VIGIL_MODELS": str(copy)})
    assert out.returncode == 2 and "refusing to load" in out.stderr


@pytest.mark.dataset
def test_evaluate_cwru_json(cwru_pack):
    out = vigil("evaluate", "cwru", "--pack", str(cwru_pack), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {"ir_or_records", "ir_or_accuracy", "ball_records", "ball_accuracy"} <= set(report)


def test_an_edge_and_cloud_pair_that_do_not_fit_together_is_refused(trained_registry, synthetic_packs, tmp_path):
    import shutil

    from vigil.streams.pumps.run_to_failure import pack_features, pack_lives, protocol_assets
    from vigil.streams.pumps.training import EDGE_TIER, PumpTrainingConfig, fit_pump_models

    env, _ = trained_registry
    copy = tmp_path / "registry"
    shutil.copytree(env["VIGIL_MODELS"], copy)
    (train, _), (pack, _) = synthetic_packs
    assets = protocol_assets(pack_lives(train))
    every_feature = fit_pump_models(pack_features(train, assets), assets=assets, healthy_until=lambda key, n: int(0.3 * n),
                                    config=PumpTrainingConfig(vibration_features=None, cloud_epochs=1))
    registry = ModelRegistry(copy)
    registry.save(EDGE_TIER, every_feature.edge, every_feature.edge_metadata, activate=True)  # promoted alone
    out = vigil("evaluate", "pumps", "--pack", str(pack), env={"VIGIL_MODELS": str(copy)})
    assert out.returncode == 2 and "trained behind" in out.stderr
