"""`vigil demo`: embedded broker (unless VIGIL_BROKER is set), a trained edge model, one worker,
a simulated fleet with a few bad records, and a table per pump at the end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.settings import Settings

console = Console(stderr=True)


@dataclass
class DemoOptions:
    pumps: int = 12
    steps: int = 150
    max_seconds: float = 120.0
    seed: int = 7
    json: bool = False
    malformed_fraction: float = 0.01
    duplicate_fraction: float = 0.01


@dataclass
class PumpTally:
    records: int = 0
    dead_letters: int = 0
    commissioning: int = 0
    scored: int = 0
    score_sum: float = 0.0
    score_max: float = 0.0
    flagged: int = 0
    fault: str | None = None

    def as_row(self, asset_id: str) -> dict[str, Any]:
        return {
            "pump": asset_id,
            "simulated_fault": self.fault or "",
            "records": self.records,
            "dead_letters": self.dead_letters,
            "windows_scored": self.scored,
            "mean_edge_score": round(self.score_sum / self.scored, 4) if self.scored else None,
            "max_edge_score": round(self.score_max, 4) if self.scored else None,
            "flagged_windows": self.flagged,
        }


@dataclass
class OutputWatcher:
    """Consumes pump.scores.edge and pump.deadletter in a thread and tallies them per pump."""

    settings: Settings
    tallies: dict[str, PumpTally] = field(default_factory=lambda: defaultdict(PumpTally))
    edge_records: int = 0
    dead_letter_records: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "OutputWatcher":
        self._thread = threading.Thread(target=self._run, name="demo-watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import Consumer

        from streams.codec import codec_from_settings
        from streams.topics import PUMP_DEADLETTER, PUMP_SCORES_EDGE

        codec = codec_from_settings(self.settings.schema_registry)
        consumer = Consumer(
            self.settings.confluent_config(
                **{"group.id": f"{self.settings.app_id}-demo-watcher", "auto.offset.reset": "earliest", "enable.auto.commit": False,
                   "fetch.wait.max.ms": 100, "log.connection.close": False}
            )
        )
        edge_topic, dead_topic = self.settings.topic(PUMP_SCORES_EDGE), self.settings.topic(PUMP_DEADLETTER)
        consumer.subscribe([edge_topic, dead_topic])
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(500, timeout=0.2):
                    if msg.error():
                        continue
                    if msg.topic() == edge_topic:
                        self._edge(codec.decode(msg.value(), "vigil.pumps.EdgeScore"))
                    else:
                        letter = codec.decode(msg.value(), "vigil.common.DeadLetter")
                        asset = letter["asset_id"] or (letter["key"] or b"?").decode(errors="replace")
                        self.tallies[asset.removeprefix("not-")].dead_letters += 1
                        self.dead_letter_records += 1
        finally:
            consumer.close()

    def _edge(self, score: dict[str, Any]) -> None:
        self.edge_records += 1
        tally = self.tallies[score["asset_id"]]
        if score["state"] == "COMMISSIONING":
            tally.commissioning += 1
            return
        if score["stream"].startswith("vibration/"):
            tally.scored += 1
            tally.score_sum += score["score"]
            tally.score_max = max(tally.score_max, score["score"])
            tally.flagged += int(score["flagged"])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    from streams.broker import free_port

    env = {**os.environ, **settings.to_env()}
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(free_port()), "--loglevel", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    finally:
        log.close()


def _stop_process(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run_demo(options: DemoOptions) -> int:
    from models.simulate import FleetSimulator, make_fleet
    from streams.broker import EmbeddedBroker
    from streams.codec import codec_from_settings
    from streams.producer import RecordProducer, publish_simulation
    from streams.topics import ensure_topics
    from streams.train import train_edge_simulated

    started = time.monotonic()
    deadline = started + options.max_seconds
    settings = Settings.from_env()
    workdir = Path(".vigil")
    workdir.mkdir(exist_ok=True)
    with ExitStack() as stack:
        if settings.broker_hosts is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="vigil-demo-"))
            broker = stack.enter_context(EmbeddedBroker(data_dir=Path(tmp) / "broker"))
            settings = settings.with_broker(broker.bootstrap)
            console.print(f"embedded broker on [bold]{broker.bootstrap}[/bold] (set VIGIL_BROKER to use your own Kafka)")
        else:
            run = time.strftime("%Y%m%d%H%M%S")
            settings = replace(settings, app_id=f"vigil-demo-{run}", topic_prefix=f"{settings.topic_prefix}demo-{run}.")
            console.print(f"using Kafka at {settings.bootstrap_servers}, topics prefixed {settings.topic_prefix}")
        settings = replace(settings, partitions=min(settings.partitions, 4), retention_ms=3_600_000)

        console.print("training the edge model on a simulated healthy fleet ...")
        version, _ = train_edge_simulated(settings, pumps=12, windows=120, seed=options.seed + 1000)
        console.print(f"edge model [bold]{version}[/bold] active")
        ensure_topics(settings)

        log_path = workdir / "demo-worker.log"
        log_path.unlink(missing_ok=True)
        worker = _start_worker(settings, log_path)
        stack.callback(_stop_process, worker)
        watcher = OutputWatcher(settings).start()
        stack.callback(watcher.stop)

        fleet = make_fleet(options.pumps, seed=options.seed, horizon_s=float(options.steps))
        for spec in fleet:
            watcher.tallies[spec.asset_id].fault = spec.fault
        simulator = FleetSimulator(fleet, seed=options.seed, chunk_s=1.0)
        producer = RecordProducer(settings, codec_from_settings(settings.schema_registry))
        produce_budget_s = max(10.0, 0.4 * (deadline - time.monotonic()))
        rate = options.pumps * 2 * options.steps / produce_budget_s

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=options.json
        ) as progress:
            produced = progress.add_task("simulated seconds published", total=options.steps)
            scored = progress.add_task("windows through the edge tier", total=None)

            def on_step(step: int, stats: dict[str, Any]) -> None:
                progress.update(produced, completed=step)
                progress.update(scored, completed=watcher.edge_records)

            stats = publish_simulation(
                producer, simulator, options.steps, rate_per_s=rate, malformed_fraction=options.malformed_fraction,
                duplicate_fraction=options.duplicate_fraction, seed=options.seed, on_step=on_step,
                should_stop=lambda: time.monotonic() > deadline or worker.poll() is not None,
            )
            expected = stats["vibration"] + stats["process"]
            progress.update(scored, total=expected)
            while watcher.edge_records < expected and time.monotonic() < deadline and worker.poll() is None:
                progress.update(scored, completed=watcher.edge_records)
                time.sleep(0.2)
            progress.update(scored, completed=watcher.edge_records)
        time.sleep(0.5)  # let the last dead letters arrive
        watcher.stop()
        if worker.poll() is not None:
            console.print(f"[red]the worker exited with {worker.returncode}; see {log_path}[/red]")
            return 1

    malformed = sum(stats["malformed"].values())
    rows = []
    for spec in fleet:
        tally = watcher.tallies[spec.asset_id]
        tally.records = stats["per_asset"].get(spec.asset_id, 0)
        rows.append(tally.as_row(spec.asset_id))
    summary = {
        "pumps": len(rows),
        "records_published": stats["records"],
        "malformed_injected": malformed,
        "duplicates_injected": stats["duplicates"],
        "dead_letters": watcher.dead_letter_records,
        "windows_expected": expected,
        "edge_scores": watcher.edge_records,
        "elapsed_s": round(time.monotonic() - started, 1),
        "per_pump": rows,
    }
    complete = watcher.edge_records >= expected and watcher.dead_letter_records >= malformed
    summary["complete"] = complete
    if options.json:
        print(json.dumps(summary))
    else:
        _print_table(summary)
    return 0 if complete else 1


def _print_table(summary: dict[str, Any]) -> None:
    out = Console()
    table = Table(title="vigil demo: edge tier per pump (vibration windows)")
    for column, justify in [("pump", "left"), ("simulated fault", "left"), ("records", "right"), ("dead letters", "right"),
                            ("scored", "right"), ("mean score", "right"), ("max score", "right"), ("flagged", "right")]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in summary["per_pump"]:
        style = "bold red" if r["simulated_fault"] else None
        table.add_row(
            r["pump"], r["simulated_fault"], str(r["records"]), str(r["dead_letters"]), str(r["windows_scored"]),
            "-" if r["mean_edge_score"] is None else f"{r['mean_edge_score']:.3f}",
            "-" if r["max_edge_score"] is None else f"{r['max_edge_score']:.3f}",
            str(r["flagged_windows"]), style=style,
        )
    out.print(table)
    out.print(
        f"{summary['records_published']} records published ({summary['malformed_injected']} malformed, "
        f"{summary['duplicates_injected']} duplicates injected); {summary['dead_letters']} dead letters; "
        f"{summary['edge_scores']} of {summary['windows_expected']} windows through the edge tier; {summary['elapsed_s']} s"
    )
    if not summary["complete"]:
        out.print("[yellow]the run hit its time bound before every window was scored[/yellow]")
