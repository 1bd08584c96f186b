"""The ``vigil`` command: broker, worker, produce, respond, train, models, evaluate, tune, topics, alerts, demo."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streams.cli_models import add_model_commands, add_train_options
from streams.settings import BrokerNotConfigured, Settings

console = Console(stderr=True)


def _stop_event() -> threading.Event:
    """Set on SIGINT or SIGTERM, so long commands end cleanly and stop what they started."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def cmd_broker(args: argparse.Namespace) -> int:
    from streams.broker import EmbeddedBroker

    data_dir = Path(args.data_dir)
    broker = EmbeddedBroker(port=args.port, data_dir=data_dir, host=args.host)
    stop = _stop_event()
    with broker:
        if args.json:
            print(json.dumps({"bootstrap": broker.bootstrap, "url": broker.url, "pid": broker.pid, "data_dir": str(data_dir)}), flush=True)
        else:
            print(f"embedded Kafka broker (noida-db) on {broker.bootstrap}, data in {data_dir}", flush=True)
            print(f"export VIGIL_BROKER={broker.url}", flush=True)
            print("Ctrl-C stops it.", flush=True)
        while not stop.wait(0.5):
            if broker.process is None or broker.process.poll() is not None:
                console.print(f"[red]broker exited unexpectedly[/red]: {broker.log_tail()}")
                return 1
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    created = ensure_topics(settings)
    print(json.dumps({"created": created}) if args.json else f"created {len(created)} topics: {', '.join(created) or '-'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from faust import Worker

    from streams.app import create_app
    from streams.logs import logging_config
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    if args.web_port is not None:
        from dataclasses import replace

        settings = replace(settings, web_port=args.web_port)
    ensure_topics(settings)
    app = create_app(settings)
    worker = Worker(app, loglevel=args.loglevel, logging_config=logging_config(args.loglevel, args.log_format))
    worker.execute_from_commandline()
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from streams.train import train_edge_simulated

    settings = Settings.from_env()
    if args.baseline_windows:
        settings = replace(settings, baseline_windows=args.baseline_windows)
    if args.tier == "falls":
        from streams.cli_models import cmd_train_falls

        return cmd_train_falls(args, settings)
    if args.tier == "pumps":
        if bool(args.pack) == bool(args.simulate):
            console.print("[red]error:[/red] give exactly one of --pack PATH or --simulate")
            return 2
        from streams.cli_models import cmd_train_pumps

        return cmd_train_pumps(args, settings)
    if not args.simulate:
        console.print("[red]error:[/red] `vigil train edge` trains on simulation only (--simulate); use `vigil train pumps --pack` for packs")
        return 2
    with Progress(TextColumn("simulating healthy fleet"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=args.json) as progress:
        task = progress.add_task("train", total=args.windows)
        version, metrics = train_edge_simulated(
            settings, pumps=args.pumps, windows=args.windows, seed=args.seed, on_step=lambda i, n: progress.update(task, completed=i)
        )
    if args.json:
        print(json.dumps({"version": version, "models_dir": str(settings.models_dir), "metrics": metrics}))
    else:
        console.print(f"trained and activated edge model [bold]{version}[/bold] in {settings.models_dir}")
        for name, m in metrics.items():
            console.print(f"  {name}: {m['training_windows']} windows from {m['streams']} streams, threshold {m['threshold']:.3f}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from streams.codec import codec_from_settings
    from streams.producer import RecordProducer, publish_pack, publish_simulation
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    ensure_topics(settings)
    producer = RecordProducer(settings, codec_from_settings(settings.schema_registry))
    stop = _stop_event()
    if args.target == "falls":
        return _produce_falls(args, producer, stop)
    if args.simulate:
        from models.simulate import FleetSimulator, make_fleet

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
        from models.packs import iter_pack

        stats = publish_pack(producer, iter_pack(args.pack), speed=args.speed, should_stop=stop.is_set)
    stats["delivered"] = producer.delivered
    print(json.dumps(stats) if args.json else f"published {stats['records']} records ({producer.delivered} delivered)")
    return 0


def _produce_falls(args: argparse.Namespace, producer: Any, stop: threading.Event) -> int:
    from dataclasses import asdict

    from streams.falls.replay import pack_wearers, publish_wearers, simulated_wearers

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
    from streams.codec import codec_from_settings
    from streams.falls.responder import Responder, ResponderPolicy
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    ensure_topics(settings)
    policy = ResponderPolicy(ok_probability=args.ok_probability, help_probability=args.help_probability, delay_s=args.delay_s, seed=args.seed)
    stop = _stop_event()
    until = time.monotonic() + args.max_seconds if args.max_seconds else None
    responder = Responder(settings, codec_from_settings(settings.schema_registry), policy)

    def show(answer: dict[str, Any]) -> None:
        if not args.json:
            console.print(f"{answer['wearer_id']}: answered {answer['response']} to {answer['request_id']}")

    stats = responder.run(lambda: stop.is_set() or (until is not None and time.monotonic() > until), from_beginning=args.from_beginning,
                          on_answer=show)
    print(json.dumps(stats) if args.json else f"requests {stats['requests']}: OK {stats['OK']}, HELP {stats['HELP']}, no answer {stats['silent']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import DemoOptions, run_demo
    from streams.demo_falls import FallDemoOptions

    falls = FallDemoOptions(wearers=args.wearers, trials_per_wearer=args.trials_per_wearer,
                            pack=Path(args.falls_pack) if args.falls_pack else None, ok_probability=args.ok_probability, seed=args.seed)
    if args.falls_subjects:
        falls.subjects = tuple(args.falls_subjects)
    return run_demo(DemoOptions(
        falls=falls,
        pumps=args.pumps, faulty=args.faulty, days=args.days, capture_interval_s=args.capture_interval_s,
        pack=Path(args.pack) if args.pack else None, use_registry=args.use_registry, max_seconds=args.max_seconds,
        publish_seconds=args.publish_seconds,
        seed=args.seed, json=args.json, report_dir=Path(args.report_dir),
    ))


def cmd_alerts_tail(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from streams.alerts_tail import format_alert, tail_alerts
    from streams.codec import codec_from_settings

    settings = Settings.from_env()
    out = Console(highlight=False)
    stop = _stop_event()

    def show(alert: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(alert), flush=True)
        else:
            out.print(format_alert({**alert, "asset_id": escape(alert["asset_id"]), "kind": escape(alert["kind"])}))

    tail_alerts(
        settings, codec_from_settings(settings.schema_registry), show, from_beginning=args.from_beginning,
        max_alerts=args.max, idle_timeout_s=args.timeout_s, should_stop=stop.is_set,
        on_undecodable=lambda reason: console.print(f"[yellow]skipped a record that is not an Alert[/yellow]: {reason}", soft_wrap=True),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Pump health and fall detection on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run the embedded Kafka broker (noida-db) until Ctrl-C")
    p.add_argument("--port", type=int, default=9092, help="Kafka port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--data-dir", default=".vigil/broker")
    p.add_argument("--json", action="store_true", help="print the address as JSON")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("worker", help="run the stream agents (start more workers to scale out)")
    p.add_argument("--web-port", type=int, default=None, help="port of /metrics (default VIGIL_WEB_PORT or 6066)")
    p.add_argument("--loglevel", default="info")
    p.add_argument("--log-format", choices=["json", "text"], default="json")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("topics", help="create vigil's topics on the configured broker")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("train", help="train models into the registry: both pump tiers (pumps), the edge tier alone (edge), "
                                      "or fall-detection stage 2 (falls, from a SisFall-layout pack)")
    p.add_argument("tier", choices=["pumps", "edge", "falls"])
    p.add_argument("--subjects", nargs="+", default=None, help="falls: train on these subjects of the pack only")
    p.add_argument("--simulate", action="store_true", help="train on a simulated healthy fleet (pumps, edge) or synthetic wearers (falls)")
    add_train_options(p)
    p.add_argument("--pumps", type=int, default=16)
    p.add_argument("--windows", type=int, default=150, help="windows per pump (1 s each)")
    p.add_argument("--baseline-windows", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)

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

    add_model_commands(sub)

    p = sub.add_parser("alerts", help="read the alerts topic")
    alerts_sub = p.add_subparsers(dest="alerts_command", required=True)
    p = alerts_sub.add_parser("tail", help="follow alerts as they are published (Ctrl-C stops)")
    p.add_argument("--from-beginning", action="store_true", help="start from the oldest alert kept, not from now")
    p.add_argument("--max", type=int, default=None, help="stop after this many alert records")
    p.add_argument("--timeout-s", type=float, default=None, help="stop after this long with nothing new")
    p.add_argument("--json", action="store_true", help="one JSON object per alert record")
    p.set_defaults(func=cmd_alerts_tail)

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
    p.add_argument("--report-dir", default="vigil-report")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except BrokerNotConfigured as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    except (ValueError, LookupError, RuntimeError) as exc:
        # Missing models, bad packs and tampered artifacts are the user's to fix: say what, not a traceback.
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
