"""docs/evaluation.md was measured with exactly the settings `vigil train pumps` uses."""
from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from vigil.streams.cli import build_parser
from vigil.streams.cli.train import training_config
from vigil.streams.pumps.training import PumpTrainingConfig
from vigil.streams.runtime.settings import Settings

DOCS = Path(__file__).resolve().parents[3] / "docs" / "evaluation.md"


def _as_json(config: PumpTrainingConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))


def test_vigil_train_pumps_defaults_are_the_training_config_defaults():
    for argv in (["train", "pumps", "--simulate"], ["train", "pumps", "--pack", "p.npz"]):
        args = build_parser().parse_args(argv)
        assert training_config(args, Settings.from_env({})) == PumpTrainingConfig()


def test_an_option_changes_only_its_own_field():
    args = build_parser().parse_args(["train", "pumps", "--simulate", "--cloud-epochs", "3", "--edge-quantile", "0.99"])
    assert training_config(args, Settings.from_env({})) == PumpTrainingConfig(cloud_epochs=3, edge_quantile=0.99)


def test_the_evaluation_document_states_the_settings_vigil_train_pumps_uses():
    text = DOCS.read_text()
    match = re.search(r"training \(`PumpTrainingConfig`\) (\{.*?\}); alert policy", text)
    assert match, "docs/evaluation.md no longer states its training settings"
    documented = json.loads(match.group(1))
    args = build_parser().parse_args(["train", "pumps", "--simulate"])
    assert documented == _as_json(training_config(args, Settings.from_env({}))), "run `make evaluation` to regenerate docs/evaluation.md"
