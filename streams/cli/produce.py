"""`vigil produce` and `vigil respond`: raw records onto the broker, and a simulated wearer's answers."""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vigil.streams.cli.common import console, stop_event
from vigil.streams.runtime.settings import Settings


def cmd_produce(args: argparse.Namespace) -> int:
    from vigil.streams.devtools.producer import RecordProducer, publish_pack, publish_simulation
    from vigil.streams.runtime.codec import codec_from_settings
    from vigil.streams.runtime.topics import ensure_topics

    settings = Settings.from_env()
    ensure_topics(settings)
    producer = RecordProducer(settings, codec_from_settings(settings.schema_registry))
    stop = stop_event()
    if args.target == "falls":
        return _produce_falls(args, producer, stop)
    if args.simulate:
        from vigil.models.simulate import FleetSimulator, make_fleet

        steps = args.steps
        fleet = make_fleet(args.simulate, seed=args.seed, horizon_s=(steps or 3600) * args.chunk_s)
        simulator = FleetSimulator(fleet, seed=args.seed, chunk_s=args.chunk_s)
        with Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=args.json) as progress:
            task = progress.add_task("steps", total=steps)
            stats = publish_simulation(
                producer, simulator, steps, rate_per_s=args.rate, malformed_fraction=args.malformed_fraction,
                duplicate_fraction=args.duplicate_fraction, seed=args.seed,
                on_step=lambda i, s: progress.update(task, completed=i), should_stop=stop.is_set,
            )
        stats["faulty"] = {s.asset_id: s.fault for s in fleet if s.fault}
    else:
        from vigil.models.packs import iter_pack

        stats = publish_pack(producer, iter_pack(args.pack), speed=args.speed, should_stop=stop.is_set)
    stats["delivered"] = producer.delivered
    print(json.dumps(stats) if args.json else f"published {stats['records']} records ({producer.delivered} delivered)")
    return 0


def _produce_falls(args: argparse.Namespace, producer: Any, stop: threading.Event) -> int:
    from dataclasses import asdict

    from vigil.streams.falls.replay import pack_wearers, publish_wearers, simulated_wearers

    if args.pack:
        wearers, fs_hz = pack_wearers(args.pack, args.subjects, args.trials, seed=args.seed)
    else:
        wearers, fs_hz = simulated_wearers(args.simulate, args.trials or 12, seed=args.seed), 200.0
    total = sum(len(t) for t in wearers.values())
    with Progress(TextColumn("publishing wearers"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=args.json) as progress:
        task = progress.add_task("records", total=None)
        stats = publish_wearers(producer, wearers, fs_hz=fs_hz, speed=args.speed, rate_per_s=args.rate, should_stop=stop.is_set,
                                on_sent=lambda r: progress.advance(task))
    spans = stats.pop("spans")
    if args.truth:
        Path(args.truth).write_text(json.dumps([asdict(s) for s in spans], indent=1))
    stats["delivered"] = producer.delivered
    if args.json:
        print(json.dumps(stats))
    else:
        print(f"published {stats['records']} chunks: {stats['wearers']} wearers, {stats['trials']} of {total} trials "
              f"({stats['falls']} falls, {stats['adl']} ADL)" + (f"; trial spans in {args.truth}" if args.truth else ""))
    return 0


def cmd_respond(args: argparse.Namespace) -> int:
    from vigil.streams.falls.responder import Responder, ResponderPolicy
    from vigil.streams.runtime.codec import codec_from_settings
    from vigil.streams.runtime.topics import ensure_topics

    settings = Settings.from_env()
    ensure_topics(settings)
    policy = ResponderPolicy(ok_probability=args.ok_probability, help_probability=args.help_probability, delay_s=args.delay_s, seed=args.seed)
    stop = stop_event()
    until = time.monotonic() + args.max_seconds if args.max_seconds else None
    responder = Responder(settings, codec_from_settings(settings.schema_registry), policy)

    def show(answer: dict[str, Any]) -> None:
        if not args.json:
            console.print(f"{answer['wearer_id']}: answered {answer['response']} to {answer['request_id']}")

    stats = responder.run(lambda: stop.is_set() or (until is not None and time.monotonic() > until), from_beginning=args.from_beginning,
                          on_answer=show)
    print(json.dumps(stats) if args.json else f"requests {stats['requests']}: OK {stats['OK']}, HELP {stats['HELP']}, no answer {stats['silent']}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("produce", help="publish raw records: pump captures, or wearers' accelerometer chunks")
    p.add_argument("target", choices=["pumps", "falls"])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--simulate", type=int, metavar="N", help="simulate N pumps, or N synthetic wearers (falls)")
    source.add_argument("--pack", help="replay a PRONOSTIA- or CWRU-layout .npz pack, or a SisFall-layout one (falls: a wearer per subject)")
    p.add_argument("--subjects", nargs="+", default=None, help="falls --pack: these subjects only")
    p.add_argument("--trials", type=int, default=None, help="falls: trials per wearer (default: all of a pack subject's; 12 simulated)")
    p.add_argument("--truth", default=None, help="falls: write each published trial's wearer, event-time span and label to this JSON file")
    p.add_argument("--steps", type=int, default=None, help="chunks per pump (default: until Ctrl-C)")
    p.add_argument("--chunk-s", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=0.0, help="records per second (0: as fast as possible)")
    p.add_argument("--speed", type=float, default=0.0, help="replay speed-up over event time (0: as fast as possible)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--malformed-fraction", type=float, default=0.0, help="inject malformed copies of this fraction of chunks")
    p.add_argument("--duplicate-fraction", type=float, default=0.0, help="re-send this fraction of chunks")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("respond", help="simulate wearers' devices: answer fall confirmation requests (until Ctrl-C)")
    p.add_argument("--ok-probability", type=float, default=0.5, help="answer \"I'm OK\" with this probability")
    p.add_argument("--help-probability", type=float, default=0.0, help="answer HELP with this probability (otherwise: no answer)")
    p.add_argument("--delay-s", type=float, default=2.0, help="seconds before answering")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--from-beginning", action="store_true", help="also answer requests sent before it started (first run of its group)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_respond)
