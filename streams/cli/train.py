"""`vigil train pumps|falls`: models into the registry through each topology's one training path."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from vigil.streams.cli.common import console, out, print_json
from vigil.streams.pumps.training_config import SIMULATED_PUMPS, SIMULATED_WINDOWS_PER_PUMP, PumpTrainingConfig
from vigil.streams.runtime.settings import Settings


def cmd_train(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.tier == "falls":
        return cmd_train_falls(args, settings)
    if bool(args.pack) == bool(args.simulate):
        console.print("[red]error:[/red] give exactly one of --pack PATH or --simulate")
        return 2
    return cmd_train_pumps(args, settings)


def training_config(args: argparse.Namespace, settings: Settings) -> PumpTrainingConfig:
    """``PumpTrainingConfig``'s defaults, changed only where an option was given: the settings
    `vigil train pumps` uses are the ones docs/evaluation.md was measured with."""
    changes = {field: getattr(args, field) for field in PUMP_OPTIONS if getattr(args, field) is not None}
    if args.baseline_windows is None and settings.baseline_windows != PumpTrainingConfig.baseline_windows:
        changes["baseline_windows"] = settings.baseline_windows  # VIGIL_BASELINE_WINDOWS
    return replace(PumpTrainingConfig(), seed=args.seed, **changes)


def cmd_train_pumps(args: argparse.Namespace, settings: Settings) -> int:
    from vigil.models.registry import ModelRegistry
    from vigil.streams.pumps.training import save_pump_models, train_pumps_simulated, train_run_to_failure

    config = training_config(args, settings)
    if args.pack:
        with console.status(f"training both tiers on {args.pack}"):
            models = train_run_to_failure(args.pack, bearings=args.bearings, config=config)
            edge_version, cloud_version = save_pump_models(ModelRegistry(settings.models_dir), models)
        metrics = {"edge": models.edge_metadata["metrics"], "cloud": models.cloud_metadata["metrics"]}
    else:
        with console.status("training both tiers on a simulated healthy fleet"):
            edge_version, cloud_version, metrics = train_pumps_simulated(
                settings, pumps=args.pumps, windows=args.windows, seed=args.seed, config=config
            )
    result = {"edge_version": edge_version, "cloud_version": cloud_version, "models_dir": str(settings.models_dir), "metrics": metrics}
    if args.json:
        print_json(result)
    else:
        out.print(f"trained and activated [bold]{edge_version}[/bold] and [bold]{cloud_version}[/bold] in {settings.models_dir}")
        for tier, per_set in metrics.items():
            for name, m in per_set.items():
                windows = m.get("training_windows", m.get("training_sequences"))
                out.print(f"  {tier} {name}: {windows} healthy windows from {m['streams']} streams, threshold {m['threshold']:.3f}")
    return 0


def cmd_train_falls(args: argparse.Namespace, settings: Settings) -> int:
    from vigil.streams.falls.offline import load_candidates
    from vigil.streams.falls.training import save_fall_model, train_falls_simulated

    if args.simulate:
        with console.status("fitting stage 2 on synthetic wearers"):
            version, info = train_falls_simulated(settings, seed=args.seed)
        if args.json:
            print_json({"version": version, "models_dir": str(settings.models_dir), **info})
        else:
            out.print(f"trained and activated fall model [bold]{version}[/bold] on {info['falls']} synthetic falls and "
                      f"{info['adl']} synthetic ADL trials (a demo model: train on recorded falls with --pack)")
        return 0
    if not args.pack:
        raise ValueError("`vigil train falls` needs --pack PATH (a SisFall-layout .npz) or --simulate")
    with console.status(f"screening every trial of {args.pack}"):
        data = load_candidates(args.pack)
    subjects = sorted(set(args.subjects) if args.subjects else set(data.subject.tolist()))
    unknown = sorted(set(subjects) - set(data.subject.tolist()))
    if unknown:
        raise ValueError(f"subjects {unknown} are not in {args.pack}")
    with console.status(f"fitting stage 2 on {len(subjects)} subjects"):
        version, clf = save_fall_model(settings, data, subjects, args.pack, seed=args.seed)
    result = {"version": version, "models_dir": str(settings.models_dir), "subjects": subjects, "threshold": clf.threshold_}
    if args.json:
        print_json(result)
    else:
        out.print(f"trained and activated fall model [bold]{version}[/bold] on {len(subjects)} subjects; threshold {clf.threshold_:.3f}")
    return 0


# Options that change PumpTrainingConfig, named after its fields; their defaults are the dataclass's.
PUMP_OPTIONS = {
    "baseline_windows": (int, "commissioning windows per stream (VIGIL_BASELINE_WINDOWS)"),
    "edge_quantile": (float, "edge threshold: this quantile of healthy training scores"),
    "edge_trees": (int, "Isolation Forest trees"),
    "cloud_window": (int, "windows per LSTM autoencoder sequence"),
    "cloud_epochs": (int, "LSTM autoencoder training epochs"),
    "cloud_quantile": (float, "cloud threshold: this quantile of healthy reconstruction errors"),
}


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train models into the registry: both pump tiers (pumps) or fall-detection stage 2 (falls)")
    p.add_argument("tier", choices=["pumps", "falls"])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--pack", default=None, help="pumps: a PRONOSTIA-layout run-to-failure pack; falls: a SisFall-layout pack")
    source.add_argument("--simulate", action="store_true", help="train on a simulated healthy fleet (pumps) or synthetic wearers (falls)")
    p.add_argument("--bearings", nargs="+", default=None, help="pumps --pack: only these bearings of the pack")
    p.add_argument("--subjects", nargs="+", default=None, help="falls --pack: train on these subjects of the pack only")
    defaults = PumpTrainingConfig()
    for field, (kind, text) in PUMP_OPTIONS.items():
        p.add_argument("--" + field.replace("_", "-"), type=kind, default=None, help=f"{text} (default {getattr(defaults, field)})")
    p.add_argument("--pumps", type=int, default=SIMULATED_PUMPS, help="pumps --simulate: pumps in the healthy fleet")
    p.add_argument("--windows", type=int, default=SIMULATED_WINDOWS_PER_PUMP, help="pumps --simulate: 1 s windows per pump")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)
