"""`vigil evaluate` and `vigil tune`: the published protocols and cost-based thresholds on the registry's active models."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from rich.table import Table

from vigil.models.features import VIBRATION_FEATURE_SET
from vigil.streams.cli.common import console, out, print_json
from vigil.streams.runtime.settings import Settings


def _policy(args: argparse.Namespace, settings: Settings, base: Any = None) -> Any:
    policy = base if base is not None else settings.alert_policy()
    changes = {k: v for k, v in {"confirm_k": args.confirm_k, "confirm_n": args.confirm_n, "quiet_s": args.quiet_s}.items() if v is not None}
    return replace(policy, **changes)


def cmd_evaluate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    needed = "--data" if args.target == "skab" else "--pack"
    if not (args.data if args.target == "skab" else args.pack):
        console.print(f"[red]error:[/red] `vigil evaluate {args.target}` needs {needed} (see README: Models, evaluation and thresholds)")
        return 2
    if args.target == "pumps":
        from vigil.streams.evaluation.pumps import evaluate_run_to_failure
        from vigil.streams.pumps.training import load_pump_models

        active = load_pump_models(settings.models_dir)
        with console.status(f"replaying {args.pack} through the cascade"):
            report = evaluate_run_to_failure(
                args.pack, (active.edge, active.edge_version), (active.cloud, active.cloud_version),
                cloud_thresholds=active.cloud_thresholds, policy=_policy(args, settings),
            )
        if args.json:
            print_json(report)
            return 0
        table = Table(title=f"{report['detected']}/{report['assets']} detected, {report['false_alarm_assets']} false-alarm assets, "
                            f"median lead {report['median_lead_fraction']} of life ({report['median_lead_hours']} h)")
        for column in ("asset", "life h", "episodes", "false alarm", "detected at", "lead h", "lead"):
            table.add_column(column)
        for a in report["per_asset"]:
            table.add_row(a["asset"], f"{a['life_hours']:.2f}", str(a["episodes"]), "yes" if a["false_alarm"] else "",
                          f"{a['first_episode_fraction']:.1%}" if a["detected"] else "-",
                          f"{a['lead_hours']:.2f}" if a["detected"] else "-", f"{a['lead_fraction']:.1%}" if a["detected"] else "-")
        out.print(table)
        out.print(f"cloud tier saw {report['cloud_fraction']:.2%} of scored windows")
        return 0
    if args.target == "falls":
        return _evaluate_falls(args, settings)
    if args.target == "cwru":
        from vigil.streams.evaluation.cwru import evaluate_cwru

        report = evaluate_cwru(args.pack)
        if args.json:
            print_json(report)
        else:
            out.print(f"inner/outer race: {report['ir_or_accuracy']:.1%} of {report['ir_or_records']} records; "
                      f"ball: {report['ball_accuracy']:.1%} of {report['ball_records']}")
            out.print(f"confusion (true -> diagnosed): {report['confusion']}")
        return 0
    from vigil.streams.evaluation.skab import SKAB_POLICY, evaluate_skab

    with console.status(f"SKAB protocol on {args.data}"):
        report = evaluate_skab(args.data, policy=_policy(args, settings, base=SKAB_POLICY))
    if args.json:
        print_json(report)
    else:
        out.print(f"F1 {report['f1']:.3f}, FAR {report['far']:.2%}, MAR {report['mar']:.2%} over {report['files']} files "
                  f"({report['test_rows']} test rows); cloud tier saw {report['cloud_fraction']:.2%} of rows")
    return 0


def _evaluate_falls(args: argparse.Namespace, settings: Settings) -> int:
    from vigil.models.registry import FALL_TIER, ModelNotFoundError, ModelRegistry
    from vigil.streams.evaluation.falls import cross_validate_falls, evaluate_falls
    from vigil.streams.falls.offline import load_candidates

    with console.status(f"screening every trial of {args.pack}"):
        data = load_candidates(args.pack)
    if args.cv:
        if args.folds < 2:
            raise ValueError(f"--folds must be >= 2, got {args.folds}")
        with console.status(f"{args.folds}-fold leave-subjects-out cross-validation"):
            report = cross_validate_falls(data, folds=args.folds, seed=args.seed)
    else:
        try:
            clf, meta = ModelRegistry(settings.models_dir).load(FALL_TIER)
        except ModelNotFoundError:
            raise ValueError(f"no active fall model in {settings.models_dir}; train one with `vigil train falls --pack PATH "
                             "--subjects ...` on other subjects, or use --cv subjects") from None
        report = {**evaluate_falls(data, clf, meta.get("trained_subjects", [])), "model_version": meta["version"]}
    if args.json:
        print_json(report)
        return 0
    table = Table(title=f"falls: sensitivity {report['sensitivity']:.2%}, specificity {report['specificity']:.2%} per trial "
                        f"({report['fall_trials']} fall, {report['adl_trials']} ADL trials, {report['adl_hours']} h of ADL)")
    for column in ("stage", "falls passing", "ADL trials passing", "false alarms / h of ADL"):
        table.add_column(column, justify="right")
    fa = report["false_alarms_per_hour_adl"]
    table.add_row("impacts >= peak", "", "", f"{fa['impacts']}")
    table.add_row("stage 1 screen", f"{report['stage1_pass_rate']:.2%}", f"{report['stage1_adl_pass_rate']:.2%}", f"{fa['stage1']}")
    table.add_row("stage 2 model", f"{report['stage2_pass_rate']:.2%} of those", f"{report['stage2_adl_pass_rate']:.2%} of those",
                  f"{fa['stage2']}")
    out.print(table)
    out.print(f"false alarms by activity: {report['false_alarm_trials_by_activity'] or 'none'}; missed: {', '.join(report['missed_falls']) or 'none'}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from vigil.models.costs import CostModel
    from vigil.models.registry import ModelRegistry
    from vigil.streams.evaluation.pumps import DEFAULT_CANDIDATES, tune_run_to_failure
    from vigil.streams.pumps.training import CLOUD_TIER, load_pump_models

    settings = Settings.from_env()
    active = load_pump_models(settings.models_dir)
    costs = CostModel(args.unplanned_failure, args.planned_repair, args.false_alarm, args.asset_life_years)
    candidates = args.candidates or sorted(set(DEFAULT_CANDIDATES) | {round(v, 3) for v in active.cloud_thresholds.values()})
    with console.status(f"evaluating {len(candidates)} thresholds on {args.pack}"):
        rows, best = tune_run_to_failure(
            args.pack, (active.edge, active.edge_version), (active.cloud, active.cloud_version),
            candidates=candidates, costs=costs, policy=_policy(args, settings),
        )
    registry = ModelRegistry(settings.models_dir)
    feature_set = args.feature_set
    if not args.dry_run:
        meta = registry.metadata(CLOUD_TIER, active.cloud_version)
        thresholds = {**meta.get("thresholds", {}), feature_set: best.threshold}
        registry.update_metadata(CLOUD_TIER, active.cloud_version, {
            "thresholds": thresholds,
            "tuning": {"pack": str(args.pack), "feature_set": feature_set, "costs": costs.__dict__,
                       "chosen": best.as_dict(), "table": [r.as_dict() for r in rows]},
        })
    result = {"model_version": active.cloud_version, "feature_set": feature_set, "written": not args.dry_run,
              "costs": costs.__dict__, "chosen": best.as_dict(), "table": [r.as_dict() for r in rows]}
    if args.json:
        print_json(result)
        return 0
    table = Table(title=f"expected cost per asset-year ({feature_set}, cloud tier of {active.cloud_version})")
    for column in ("threshold", "recall", "missed", "false alarms", "FA / asset-year", "cost / asset-year"):
        table.add_column(column, justify="right")
    for r in rows:
        style = "bold green" if r == best else None
        table.add_row(f"{r.threshold:g}", f"{r.recall:.0%}", str(r.missed_failures), str(r.false_alarms),
                      f"{r.false_alarms_per_asset_year:.2f}", f"{r.annual_cost_per_asset:,.0f}", style=style)
    out.print(table)
    verb = "would write" if args.dry_run else "wrote"
    out.print(f"cheapest: threshold {best.threshold:g} ({best.annual_cost_per_asset:,.0f} per asset-year); {verb} it into {active.cloud_version}")
    return 0


def _policy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--confirm-k", type=int, default=None, help="confirmations needed (default VIGIL_ALERT_CONFIRM_K)")
    p.add_argument("--confirm-n", type=int, default=None, help="of the last n flagged windows (default VIGIL_ALERT_CONFIRM_N)")
    p.add_argument("--quiet-s", type=float, default=None, help="event-time seconds without confirmation that close an episode")


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="run a published protocol through the cascade and report")
    p.add_argument("target", choices=["pumps", "skab", "cwru", "falls"])
    p.add_argument("--pack", help="PRONOSTIA-layout (pumps), CWRU-layout (cwru) or SisFall-layout (falls) .npz")
    p.add_argument("--cv", choices=["subjects"], default=None,
                   help="falls: leave-subjects-out cross-validation on the pack instead of the registry's model")
    p.add_argument("--folds", type=int, default=8, help="falls --cv: folds of whole subjects")
    p.add_argument("--seed", type=int, default=0, help="falls --cv: fold assignment and model seed")
    p.add_argument("--data", help="SKAB data folder (valve1/, valve2/, other/)")
    _policy_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tune", help="choose the cloud threshold by expected cost on a run-to-failure pack")
    p.add_argument("--pack", required=True)
    p.add_argument("--feature-set", default=VIBRATION_FEATURE_SET)
    p.add_argument("--candidates", type=float, nargs="+", default=None)
    p.add_argument("--unplanned-failure", type=float, default=15_000.0)
    p.add_argument("--planned-repair", type=float, default=3_000.0)
    p.add_argument("--false-alarm", type=float, default=500.0, help="cost of one false-alarm inspection")
    p.add_argument("--asset-life-years", type=float, default=1.0, help="service years one record's life stands for")
    p.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    _policy_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tune)
