"""`vigil retrain pumps|falls`: retrain from the stream, judge against the model in force, then promote or shadow."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from rich.table import Table

from vigil.streams.cli.common import console, duration_s, out, print_json, stop_event, time_ms
from vigil.streams.runtime.settings import Settings


def cmd_retrain(args: argparse.Namespace) -> int:
    from vigil.models.retraining import RetrainBounds
    from vigil.streams.lifecycle.retrain import retrain_falls, retrain_pumps, wait_for_trigger

    settings = Settings.from_env()
    if args.topology == "falls":
        if not args.pack:
            raise ValueError("`vigil retrain falls` needs --pack: the SisFall-layout pack the active falls model was trained on")
        with console.status("retraining stage 2") as status:
            report = retrain_falls(settings, args.pack, who=args.who, progress=lambda step: status.update(step))
        if args.json:
            print_json(report)
        else:
            for name in ("active", "candidate"):
                j = report[f"{name}_judgement"]
                out.print(f"{name} {report[name]}: sensitivity {j['sensitivity']}, specificity {j['specificity']}, "
                          f"{j['false_alarms']} held-out ADL trials fired on")
            out.print(f"[bold]{report['decision']}[/bold]: {'; '.join(report['reasons'])} "
                      f"({report['lineage']['dismissed']} dismissed confirmations, {report['wall_s']} s)")
        return 0
    bounds = replace(RetrainBounds(), **{k: v for k, v in {"min_windows_per_asset": args.min_windows, "min_assets": args.min_assets}.items()
                                           if v is not None})
    every_s = duration_s(args.every) if args.every else None
    following = bool(args.on_drift or args.on_missed_failure)
    stop = stop_event() if every_s or following else None
    while True:
        if following:
            scopes = None if not args.on_drift else ("fleet", "asset") if args.on_drift == "any" else ("fleet",)
            waiting_for = ([f"a {' or '.join(scopes)} feature-drift finding on ops.drift"] if scopes else []) + \
                          (["a missed failure on ops.failures"] if args.on_missed_failure else [])
            with console.status(f"waiting for {' or '.join(waiting_for)} ..."):
                trigger = wait_for_trigger(settings, stop.is_set, drift_scopes=scopes, missed_failures=args.on_missed_failure)
            if trigger is None:
                return 0
            kind, record = trigger
            if kind == "drift":
                console.print(f"drift finding {record['finding_id']} opened: "
                              f"{', '.join(f['feature'] for f in record['features'])}; retraining")
            else:
                console.print(f"failure {record['failure_id']} of {record['asset_id']} ({record['fault']}) was missed by "
                              f"{record['model_version']}; retraining at once")
        try:
            with console.status("retraining") as status:
                report = retrain_pumps(settings, since_ms=time_ms(args.since), until_ms=time_ms(args.until), judge_pack=args.judge,
                                       bounds=bounds, who=args.who, progress=lambda step: status.update(step),
                                       offsets=offset_ranges(args.offsets) if args.offsets else None)
        except ValueError as exc:
            if not following:
                raise
            console.print(f"[yellow]{exc}; waiting for the next finding[/yellow]")  # a follower outlives one refusal
            continue
        _print(report, args)
        if following:
            continue
        if every_s is None or stop is None or stop.wait(every_s):
            return 0


def offset_ranges(text: str) -> dict[int, tuple[int, int]]:
    """``0:100-500,1:0-400`` -> {0: (100, 500), 1: (0, 400)}: per partition of pump.features, first and last offset.

    >>> offset_ranges("0:100-500, 1:0-400")
    {0: (100, 500), 1: (0, 400)}
    >>> offset_ranges("0:500-100")
    Traceback (most recent call last):
    ...
    ValueError: --offsets 0:500-100: the first offset is after the last
    """
    ranges: dict[int, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition, sep, span = part.partition(":")
        first, dash, last = span.partition("-")
        if not (sep and dash and partition.isdigit() and first.isdigit() and last.isdigit()):
            raise ValueError(f"--offsets {part}: say PARTITION:FIRST-LAST, e.g. 0:100-500")
        if int(first) > int(last):
            raise ValueError(f"--offsets {part}: the first offset is after the last")
        ranges[int(partition)] = (int(first), int(last))
    if not ranges:
        raise ValueError("--offsets names no range")
    return ranges


def _print(report: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print_json(report)
        return
    checks = report["checks"]
    out.print(f"read {checks['windows_read']} windows of {report['lineage']['topic']} (offsets {report['lineage']['offsets']}); "
              f"kept {checks['windows_kept']} of {len(checks['assets_kept'])} assets, left out {checks['windows_in_alert_episodes']} "
              f"in alert episodes, {len(checks['streams_too_short'])} short streams, "
              f"{len(checks['assets_over_deadletter_share'])} assets over the dead-letter share")
    if "candidate_judgement" in report:
        table = Table(title=f"judged on {report['judged_on']}")
        for column in ("pair", "edge", "cloud", "recall", "false alarms", "median lead h"):
            table.add_column(column)
        for name in ("active", "candidate"):
            j = report[f"{name}_judgement"]
            table.add_row(name, j["models"]["edge"], j["models"]["cloud"], f"{j['recall']:.3f}", str(j["false_alarms"]),
                          str(j["median_lead_hours"]))
        out.print(table)
    if "stream_judgement" in report:
        judged = report["stream_judgement"]
        table = Table(title=f"judged on the stream: {judged['active']['failures']} reported failures, "
                            f"{judged['active']['quiet_episodes']} episodes labelled nothing-found")
        for column in ("pair", "edge", "cloud", "recall", "detected", "false alarms", "windows replayed"):
            table.add_column(column)
        for name in ("active", "candidate"):
            j = judged[name]
            table.add_row(name, j["models"]["edge"], j["models"]["cloud"], "-" if j["recall"] is None else f"{j['recall']:.3f}",
                          str(j["detected"]), str(j["false_alarms"]), str(j["windows_replayed"]))
        out.print(table)
    out.print(f"[bold]{report['decision']}[/bold]: {'; '.join(report['reasons'])} ({report['wall_s']} s)")


def register(sub: Any) -> None:
    p = sub.add_parser("retrain", help="retrain from the stream; promote the candidate if it passes the gate, else shadow it")
    p.add_argument("topology", choices=["pumps", "falls"],
                   help="pumps: from pump.features; falls: stage 2 with the dismissed confirmations of fall.outcomes")
    p.add_argument("--pack", default=None, help="falls: the SisFall-layout pack the active model was trained on (its other "
                                                "subjects are held out for judging)")
    p.add_argument("--since", default=None, help="event time of the first window: a duration before now (7d) or an ISO date-time")
    p.add_argument("--until", default=None, help="event time after the last window, as --since")
    p.add_argument("--offsets", default=None,
                   help="train on these offsets of pump.features only: PARTITION:FIRST-LAST[,...] (other partitions left out)")
    p.add_argument("--judge", default=None, help="run-to-failure pack (.npz) of held-back failures to judge both pairs on (the "
                                                 "failures and nothing-found labels maintenance reported are judged on as well)")
    p.add_argument("--every", default=None, help="run again after this long (30m, 12h, 7d) until Ctrl-C")
    p.add_argument("--on-drift", nargs="?", const="fleet", choices=["fleet", "any"], default=None,
                   help="run each time a feature-drift finding opens on ops.drift (fleet findings; 'any': pumps' too), until Ctrl-C")
    p.add_argument("--on-missed-failure", action="store_true",
                   help="run each time ops.failures judges a reported failure MISSED (with --on-drift: on either), until Ctrl-C")
    p.add_argument("--min-windows", type=int, default=None, help="healthy windows per stream needed (default 60)")
    p.add_argument("--min-assets", type=int, default=None, help="assets needed (default 3)")
    p.add_argument("--who", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retrain)
