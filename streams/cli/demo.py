"""`vigil demo`: both cascades end to end on a broker, with a summary and an HTML report."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_demo(args: argparse.Namespace) -> int:
    from vigil.streams.demo.falls import FallDemoOptions
    from vigil.streams.demo.run import DemoOptions, run_demo

    falls = FallDemoOptions(wearers=args.wearers, trials_per_wearer=args.trials_per_wearer,
                            pack=Path(args.falls_pack) if args.falls_pack else None, ok_probability=args.ok_probability, seed=args.seed)
    if args.falls_subjects:
        falls.subjects = tuple(args.falls_subjects)
    return run_demo(DemoOptions(
        falls=falls,
        pumps=args.pumps, faulty=args.faulty, days=args.days, capture_interval_s=args.capture_interval_s,
        pack=Path(args.pack) if args.pack else None, use_registry=args.use_registry, max_seconds=args.max_seconds,
        publish_seconds=args.publish_seconds, retrain_at=args.retrain_at, inject=not args.no_inject,
        seed=args.seed, json=args.json, report_dir=Path(args.report_dir),
    ))


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="both cascades end to end: broker, models, worker, a simulated pump week and wearers; summary and HTML report")
    p.add_argument("--pumps", type=int, default=50)
    p.add_argument("--faulty", type=int, default=3, help="pumps that develop a bearing fault")
    p.add_argument("--days", type=float, default=7.0, help="simulated days of event time")
    p.add_argument("--capture-interval-s", type=float, default=1800.0, help="event time between a pump's 1 s captures")
    p.add_argument("--pack", default=None, help="replay a PRONOSTIA-layout pack instead of the simulator")
    p.add_argument("--use-registry", action="store_true", help="run the registry's active models (VIGIL_MODELS) instead of training")
    p.add_argument("--max-seconds", type=float, default=300.0, help="wall-clock bound for the whole run")
    p.add_argument("--publish-seconds", type=float, default=None, help="pace publishing over this long (default: half the bound)")
    p.add_argument("--wearers", type=int, default=12, help="synthetic wearers through the fall cascade (0: pumps only)")
    p.add_argument("--trials-per-wearer", type=int, default=10, help="synthetic trials per wearer, a quarter of them falls")
    p.add_argument("--falls-pack", default=None, help="replay subjects of a SisFall-layout pack instead of synthetic wearers")
    p.add_argument("--falls-subjects", nargs="+", default=None, help="--falls-pack: the subjects to replay (default SA13 SE04); "
                                                                      "the fall model is trained on the others")
    p.add_argument("--ok-probability", type=float, default=0.2, help="the simulated responder answers \"I'm OK\" this often")
    p.add_argument("--retrain-at", type=float, default=0.3,
                   help="share of the publishing after which the demo retrains on the stream, shadows, compares and promotes "
                        "the candidate (0: keep the first models)")
    p.add_argument("--no-inject", action="store_true",
                   help="leave out the mid-week duty-point step on a fifth of the pumps and the two stuck sensors")
    p.add_argument("--report-dir", default="vigil-report")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_demo)
