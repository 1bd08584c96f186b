"""`vigil demo`, the main job: the pump cascade and the fall cascade on a broker, a simulated week in a few minutes.

It starts the embedded broker (unless VIGIL_BROKER is set), trains both tiers
on a simulated healthy fleet (or takes the registry's active models), starts
two workers (the scoring path, and the monitoring stages in a group of their
own), and publishes a simulated fleet: by default 50 pumps, 3 of which
develop bearing faults, one 1 s vibration capture and one process sample per
pump every 30 minutes of event time for 7 days, with a few malformed and
re-sent records mixed in. ``--pack`` replays a PRONOSTIA-layout pack instead.
Beside the pumps, synthetic wearers (or, with ``--falls-pack``, SisFall
subjects) go through the fall cascade, with a simulated responder answering
the confirmation requests (``streams.demo_falls``).

While it runs it shows how far the cascade has got; at the end it prints
the alerts with their lead before the simulated failure, the cascade funnel,
dead letters, per-stage latency and throughput, and writes an HTML report
with plots to ./vigil-report/.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vigil.streams.demo.falls import FallDemo, FallDemoOptions, prepare_fall_model
from vigil.streams.demo.lifecycle import DemoModelChange
from vigil.streams.demo.monitoring import DemoMonitoring, InjectedChange
from vigil.streams.demo.report import DAY_MS, HOUR_MS
from vigil.streams.demo.watch import DemoWatcher
from vigil.streams.runtime.settings import Settings

console = Console(stderr=True)
PACK_STEP_RECORDS = 64


@dataclass
class DemoOptions:
    pumps: int = 50
    faulty: int = 3
    days: float = 7.0
    capture_interval_s: float = 1800.0
    pack: Path | None = None
    use_registry: bool = False
    max_seconds: float = 300.0
    # Publishing is paced over this share of the time bound (or over publish_seconds), so
    # latencies measure the cascade rather than a backlog the demo itself created.
    publish_share: float = 0.5
    publish_seconds: float | None = None
    # Share of the publishing after which the demo retrains, shadows and compares; it promotes the candidate
    # half-way through the rest (streams/demo/lifecycle.py). 0: no model change.
    retrain_at: float = 0.3
    # A duty-point step on a fifth of the healthy pumps mid-week and two stuck sensors (simulated fleet only).
    inject: bool = True
    seed: int = 7
    json: bool = False
    report_dir: Path = Path("vigil-report")
    malformed_fraction: float = 0.002
    duplicate_fraction: float = 0.002
    falls: FallDemoOptions = field(default_factory=FallDemoOptions)

    def validate(self) -> None:
        self.falls.validate()
        if self.pack is None:
            if self.pumps < 1 or not 0 <= self.faulty <= self.pumps:
                raise ValueError(f"need pumps >= 1 and 0 <= faulty <= pumps, got {self.pumps} and {self.faulty}")
            if self.days * 86400.0 < 4 * self.capture_interval_s:
                raise ValueError(f"--days {self.days} holds fewer than 4 captures at --capture-interval-s {self.capture_interval_s}")
        if not 0 <= self.retrain_at < 1:
            raise ValueError(f"--retrain-at must be in [0, 1), got {self.retrain_at}")
        if self.max_seconds <= 0:
            raise ValueError(f"--max-seconds must be > 0, got {self.max_seconds}")
        if self.publish_seconds is not None and not 0 < self.publish_seconds < self.max_seconds:
            raise ValueError(f"--publish-seconds must be in (0, --max-seconds), got {self.publish_seconds}")


@dataclass(frozen=True)
class DemoAsset:
    asset_id: str
    fault: str | None
    failure_ts_ms: int | None


@dataclass
class DemoSource:
    """What the demo publishes: its assets, the records in steps, and how many there are."""

    description: str
    assets: list[DemoAsset]
    steps: Iterator[list[Any]]
    total_steps: int
    total_records: int
    start_ms: int
    end_ms: int
    injected: list[InjectedChange] = field(default_factory=list)


def simulated_source(options: DemoOptions) -> DemoSource:
    from vigil.models.simulate import DEFAULT_START_TS_MS, FleetSimulator, inject_changes, make_fleet

    horizon_s = options.days * 86400.0
    n_steps = int(horizon_s // options.capture_interval_s)
    fleet = make_fleet(options.pumps, seed=options.seed, n_faulty=options.faulty, horizon_s=horizon_s)
    injected: list[InjectedChange] = []
    if options.inject and round(0.2 * options.pumps) + 2 <= options.pumps - options.faulty:
        fleet, injections = inject_changes(fleet, duty_share=0.2, duty_at_s=0.5 * horizon_s, stuck=2, stuck_at_s=0.6 * horizon_s,
                                           seed=options.seed)
        injected = [InjectedChange(i.asset_id, i.change, DEFAULT_START_TS_MS + int(i.at_s * 1000), i.detail) for i in injections]
    simulator = FleetSimulator(fleet, seed=options.seed, chunk_s=1.0, interval_s=options.capture_interval_s)
    failure = DEFAULT_START_TS_MS + int(horizon_s * 1000)
    assets = [DemoAsset(s.asset_id, s.fault, failure if s.fault else None) for s in fleet]
    changes = (f"; mid-week a duty-point step on {sum(c.change == 'duty_point' for c in injected)} pumps and "
               f"{sum(c.change == 'stuck_sensor' for c in injected)} stuck sensors") if injected else ""
    return DemoSource(
        f"{options.pumps} simulated pumps ({options.faulty} developing bearing faults), "
        f"{options.days:g} days, a capture every {options.capture_interval_s / 60:g} min{changes}",
        assets, simulator.steps(n_steps), n_steps, 2 * n_steps * len(fleet), DEFAULT_START_TS_MS, failure, injected,
    )


def pack_source(path: Path) -> DemoSource:
    from vigil.models.packs import iter_pronostia
    from vigil.models.simulate import SimulatedRecord
    from vigil.streams.pumps.run_to_failure import pack_lives

    lives = pack_lives(path)
    total = 2 * sum(life.windows for life in lives.values())  # two channels per snapshot

    def steps() -> Iterator[list[Any]]:
        batch: list[Any] = []
        for chunk in iter_pronostia(path):
            batch.append(SimulatedRecord("vibration", chunk.asset_id, chunk.as_record()))
            if len(batch) == PACK_STEP_RECORDS:
                yield batch
                batch = []
        if batch:
            yield batch

    assets = [DemoAsset(name, "run to failure", life.end_ms) for name, life in lives.items()]
    return DemoSource(
        f"{path.name}: {len(lives)} bearings run to failure, {total} snapshots x channels", assets, steps(),
        math.ceil(total / PACK_STEP_RECORDS), total, min(l.start_ms for l in lives.values()), max(l.end_ms for l in lives.values()),
    )


def sparse_capture_policy(capture_interval_s: float) -> dict[str, float]:
    """Alert settings for one capture every ``capture_interval_s``: 4 of the last 6 flagged windows
    confirmed, all within six captures, and an episode closed after six captures without a confirmation.

    Measured on the default week (50 pumps, offline replay of the same cloud scores): the k-of-n
    count with no time limit opened 29 episodes on 10 healthy pumps, stray confirmations days apart
    adding up; with these settings 2 episodes on 1 healthy pump, and the same lead on the 3 faulty ones.
    """
    return {"alert_confirm_k": 4, "alert_confirm_n": 6, "alert_confirm_within_s": 6 * capture_interval_s,
            "alert_quiet_s": 6 * capture_interval_s}


def prepare_models(options: DemoOptions, settings: Settings, workdir: Path) -> tuple[Settings, str]:
    """Settings pointing at the models the worker will run (and, for a pack, its asset catalog); a line saying which."""
    from vigil.models.registry import ModelRegistry
    from vigil.streams.pumps.training import load_pump_models, save_pump_models

    if options.pack is not None:
        from vigil.streams.pumps.run_to_failure import pack_lives, protocol_asset_mapping

        # The pack's windowing and each bearing's commissioning length, as the evaluation protocol sets them.
        assets_file = workdir / "assets.json"
        assets_file.write_text(json.dumps(protocol_asset_mapping(pack_lives(options.pack)), indent=1))
        settings = replace(settings, assets_file=assets_file)
    if options.use_registry:
        active = load_pump_models(settings.models_dir)
        return settings, f"the registry's active models: edge {active.edge_version}, cloud {active.cloud_version}"
    settings = replace(settings, models_dir=workdir / "models")
    if options.pack is not None:
        from vigil.streams.pumps.training import train_run_to_failure

        with console.status(f"training both tiers on the first 30 % of each life in {options.pack.name} ..."):
            models = train_run_to_failure(options.pack)
        edge, cloud = save_pump_models(ModelRegistry(settings.models_dir), models)
        return settings, f"trained on {options.pack.name}: edge {edge}, cloud {cloud}"
    from vigil.streams.pumps.training import train_pumps_simulated

    with console.status("training both tiers on a simulated healthy fleet ..."):
        edge, cloud, _ = train_pumps_simulated(settings, seed=options.seed + 1000, capture_interval_s=options.capture_interval_s)
    return settings, f"trained on a simulated healthy fleet: edge {edge}, cloud {cloud}"


def _start_worker(settings: Settings, log_path: Path, web_port: int, role: str = "all") -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.to_env()}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "vigil", "worker", "--role", role, "--web-port", str(web_port), "--loglevel", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )


def _stop_process(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc); None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _cpu_seconds_of(pids: list[int]) -> float:
    return sum(_cpu_seconds(pid) or 0.0 for pid in pids)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _scrape(*webs: str) -> dict[str, float] | None:
    """The workers' samples, summed over workers (each stage runs in one of them); None while one does not answer."""
    from vigil.streams.runtime.metrics import scrape_metrics

    total: dict[str, float] = {}
    for web in webs:
        try:
            samples = scrape_metrics(f"{web}/metrics")
        except OSError:
            return None
        for name, value in samples.items():
            total[name] = total.get(name, 0.0) + value
    return total


def _wait_until_worker_joined(settings: Settings, worker: subprocess.Popen[bytes], deadline: float) -> float | None:
    """Seconds until the worker's consumer group is stable with the raw topics' partitions assigned (None: not by the deadline).

    The fleet starts publishing after this, so the latency figures describe the running stream, not the
    worker's start-up (imports, joining the group, table recovery: 10-20 s on a loaded 2-core machine).
    """
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    from vigil.streams.runtime.topics import PUMP_VIBRATION_RAW

    admin = AdminClient(settings.confluent_config(log_level=0))
    raw, group_id = settings.topic(PUMP_VIBRATION_RAW), settings.worker_group_id
    started = time.monotonic()
    while time.monotonic() < deadline and worker.poll() is None:
        try:
            group = admin.describe_consumer_groups([group_id], request_timeout=5)[group_id].result(timeout=10)
        except Exception:  # the coordinator is not ready yet: ask again
            group = None
        if group is not None and group.state == ConsumerGroupState.STABLE:
            assigned = {tp.partition for m in group.members for tp in m.assignment.topic_partitions if tp.topic == raw}
            if len(assigned) == settings.partitions:
                return time.monotonic() - started
        time.sleep(0.5)
    return None


def _caught_up(watcher: DemoWatcher, expected_windows: int, samples: dict[str, float], raw_records: int = 0) -> bool:
    """Every window scored by both tiers, and the alert, trend, drift and quality stages have consumed all of it."""
    c = watcher.counts
    if c["edge"] < expected_windows or c["cloud"] < c["scored"]:
        return False
    alerts_in = samples.get('vigil_records_in_total{stage="pump.scores.cloud"}', 0.0)
    trends_in = samples.get('vigil_records_in_total{stage="pump.trends"}', 0.0)
    drift_in = samples.get('vigil_records_in_total{stage="ops.drift"}', 0.0)
    quality_in = samples.get('vigil_records_in_total{stage="ops.quality"}', 0.0)
    return (alerts_in >= c["cloud"] and trends_in >= c["edge"] + c["alert_records"] and drift_in >= c["cloud"]
            and quality_in >= raw_records)


def run_demo(options: DemoOptions) -> int:
    from vigil.streams.devtools.broker import start_dev_broker
    from vigil.streams.devtools.noida import free_port
    from vigil.streams.devtools.producer import RecordProducer, publish_steps
    from vigil.streams.runtime.codec import codec_from_settings
    from vigil.streams.runtime.topics import ensure_topics

    options.validate()
    started = time.monotonic()
    deadline = started + options.max_seconds
    settings = Settings.from_env()
    workdir = Path(".vigil") / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        broker_pids: list[int] = []
        if settings.broker_hosts is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="vigil-demo-"))
            with console.status("starting the development broker ..."):
                broker, choice = start_dev_broker(data_dir=Path(tmp) / "broker",
                                                  notify=lambda line: console.print(f"[yellow]{line}[/yellow]", soft_wrap=True))
            stack.callback(broker.close)
            broker_name = choice.name
            broker_pids = [pid for pid in getattr(broker, "pids", [getattr(broker, "pid", None)]) if pid]
            settings = settings.with_broker(broker.bootstrap)
            console.print(f"{broker_name} on [bold]{broker.bootstrap}[/bold] (set VIGIL_BROKER to use your own Kafka)")
        else:
            broker_name = "external"
            run = time.strftime("%Y%m%d%H%M%S")
            settings = replace(settings, app_id=f"vigil-demo-{run}", topic_prefix=f"{settings.topic_prefix}demo-{run}.")
            console.print(f"using Kafka at {settings.bootstrap_servers}, topics prefixed {settings.topic_prefix}")
        # A week replayed in minutes: broker time says nothing about the simulated devices' clocks.
        settings = replace(settings, partitions=min(settings.partitions, 4), retention_ms=3_600_000, quality_clock_checks=0)
        if options.pack is None:
            settings = replace(settings, **sparse_capture_policy(options.capture_interval_s))

        settings, models_line = prepare_models(options, settings, workdir)
        console.print(f"models: {models_line}")
        if options.falls.enabled:
            with console.status("preparing the fall model ..."):
                falls_line = prepare_fall_model(options.falls, settings, options.use_registry)
            console.print(f"falls: {falls_line}")
            models_line += f"; {falls_line}"
        source = pack_source(options.pack) if options.pack is not None else simulated_source(options)
        console.print(f"source: {source.description}")
        ensure_topics(settings)

        # Two workers, as an operator would deploy them: the scoring path, and the monitoring stages in their own group.
        # In one worker the monitoring stages queued the alert path behind them: raw -> pump.scores.cloud p99 86 s
        # against 0.46-0.56 s split (2 cores, Apache Kafka 4.4, docs/operations.md).
        log_path, monitoring_log = workdir / "worker.log", workdir / "worker-monitoring.log"
        web, monitoring_web = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
        workers: dict[str, subprocess.Popen[bytes]] = {}
        for role, log, url in (("scoring", log_path, web), ("monitoring", monitoring_log, monitoring_web)):
            log.unlink(missing_ok=True)
            workers[role] = _start_worker(settings, log, int(url.rsplit(":", 1)[1]), role)
            stack.callback(_stop_process, workers[role])
        worker = workers["scoring"]

        def workers_exited() -> bool:
            return any(w.poll() is not None for w in workers.values())

        codec = codec_from_settings(settings.schema_registry)
        falls = FallDemo(options.falls, settings, codec) if options.falls.enabled else None
        watcher = DemoWatcher(settings, codec, extra=falls.watcher.handlers() if falls is not None else {}).start()
        stack.callback(watcher.stop)
        model_change = DemoModelChange(settings, codec, retrain_at=options.retrain_at,
                                       promote_at=options.retrain_at + (1 - options.retrain_at) / 2)
        with console.status("waiting for the workers to join their groups ..."):
            joined_s = _wait_until_worker_joined(replace(settings, worker_role="scoring"), worker, deadline)
            monitoring_joined_s = _wait_until_worker_joined(replace(settings, worker_role="monitoring"), workers["monitoring"], deadline)
        if joined_s is not None and monitoring_joined_s is not None:
            console.print(f"scoring worker joined its group in {joined_s:.1f} s, the monitoring worker {monitoring_joined_s:.1f} s after")
        producer = RecordProducer(settings, codec)
        broker_cpu_start, cascade_started = _cpu_seconds_of(broker_pids), time.monotonic()
        publish_s = options.publish_seconds or options.publish_share * (deadline - time.monotonic())
        rate = source.total_records / max(5.0, publish_s)
        if falls is not None:
            console.print(f"wearers: {falls.description}")
            falls.start(publish_s, should_stop=lambda: time.monotonic() > deadline or workers_exited())
            stack.callback(falls.stop)

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(), console=console, disable=options.json,
        ) as progress:
            published = progress.add_task("published", total=source.total_steps, detail="")
            cascade = progress.add_task("through the cascade", total=None, detail="")

            def show(step: int | None = None, stats: Any = None) -> None:
                c = watcher.counts
                day = max(0.0, (watcher.latest_event_ms - source.start_ms) / DAY_MS)
                if step is not None:
                    progress.update(published, completed=step)
                    model_change.on_step(step, source.total_steps)
                fall_detail = ""
                if falls is not None:
                    fw = falls.watcher
                    fall_detail = (f" · falls: candidates {fw.counts['candidates']}, suspected {fw.counts['suspected']}, "
                                   f"dismissed {sum(o['outcome'] == 'DISMISSED' for o in fw.outcomes.values())}, alerts {len(fw.alerts)}")
                progress.update(cascade, completed=c["edge"], detail=(
                    f"event day {day:.1f} · flagged {c['flagged']} · confirmed {c['confirmed']} · "
                    f"alerts {len(watcher.episodes)} · dead letters {sum(watcher.dead_letters.values())}{fall_detail}"))

            stats = publish_steps(
                producer, source.steps, rate_per_s=rate, malformed_fraction=options.malformed_fraction,
                duplicate_fraction=options.duplicate_fraction, seed=options.seed, on_step=show, on_sent=watcher.record_sent,
                should_stop=lambda: time.monotonic() > deadline or workers_exited(),
            )
            producer.close()  # flushed; its connections would outlive the broker and complain
            expected = stats["vibration"] + stats["process"]
            malformed = sum(stats["malformed"].values())
            progress.update(cascade, total=expected)
            complete = False
            while time.monotonic() < deadline and not workers_exited() and watcher.error is None:
                show()
                samples = _scrape(web, monitoring_web) if sum(watcher.dead_letters.values()) >= malformed else None
                if samples is not None and _caught_up(watcher, expected, samples, stats["records"]) and (falls is None or falls.caught_up(samples)):
                    complete = True
                    break
                time.sleep(0.5)
            show()
        if workers_exited() or watcher.error is not None:
            exited = ", ".join(f"the {role} worker exited with {w.returncode}" for role, w in workers.items() if w.poll() is not None)
            console.print(f"[red]the demo stopped early: {watcher.error or exited}; see {log_path} and {monitoring_log}[/red]")
            return 1
        cpu_s, monitoring_cpu_s = _cpu_seconds(worker.pid), _cpu_seconds(workers["monitoring"].pid)
        cascade_s = time.monotonic() - cascade_started
        if model_change.enabled:
            with console.status("finishing the model change and counting each version's windows ..."):
                model_change.finish(timeout_s=max(30.0, deadline - time.monotonic()))
                lifecycle_summary = model_change.summary()
        else:
            lifecycle_summary = {}
        monitoring_summary: dict[str, Any] = {}
        if complete:
            with console.status("the maintenance crew labels the alerts and reports failures; reading the findings ..."):
                monitoring = DemoMonitoring(settings, codec, source.injected)
                failures = {a.asset_id: (a.fault, a.failure_ts_ms) for a in source.assets if a.fault}
                monitoring.resolve_alerts(watcher.episodes.values(), failures, timeout_s=max(30.0, deadline - time.monotonic()))
                first_alert: dict[str, int] = {}
                for e in watcher.episodes.values():
                    first_alert[e.asset_id] = min(e.opened_ts_ms, first_alert.get(e.asset_id, e.opened_ts_ms))
                monitoring.report_failures([(a, fault, at) for a, (fault, at) in failures.items() if at is not None],
                                           watcher.serving_version_at,
                                           unannounced=monitoring.unannounced_failure(source.assets, first_alert, source.start_ms,
                                                                                      source.end_ms),
                                           timeout_s=max(30.0, deadline - time.monotonic()))
                monitoring.wait_for_fleet_stages(lambda: _scrape(web, monitoring_web), timeout_s=max(30.0, deadline - time.monotonic()))
                monitoring_summary = {**monitoring.summary(source.start_ms, source.end_ms), "event_start_ms": source.start_ms}
        broker_cpu_s = _cpu_seconds_of(broker_pids) - broker_cpu_start if broker_pids else None
        trends = {a.asset_id: _trend_or_none(f"{web}/pumps/{a.asset_id}/trend") for a in source.assets}
        watcher.stop()
        if falls is not None:
            falls.stop()

    latency_ms = watcher.latency_ms()
    summary = summarize(options, source, stats, watcher, trends, latency_ms, complete=complete,
                        elapsed_s=time.monotonic() - started, worker_cpu_s=cpu_s, monitoring_cpu_s=monitoring_cpu_s)
    summary.update(lifecycle_summary)
    summary.update(monitoring_summary)
    summary["broker"] = broker_name
    summary["worker_joined_s"] = None if joined_s is None else round(joined_s, 1)
    summary["monitoring_worker_joined_s"] = None if monitoring_joined_s is None else round(monitoring_joined_s, 1)
    # Share of one core the broker used while records flowed (publishing until caught up).
    summary["broker_cpu_share"] = round(broker_cpu_s / cascade_s, 3) if broker_cpu_s is not None and cascade_s > 0 else None
    fall_latency_ms = falls.watcher.latency_ms() if falls is not None else {}
    if falls is not None:
        summary["falls"] = {**falls.summary(), "latency": {stage: _percentiles(s) for stage, s in fall_latency_ms.items()}}
    from vigil.streams.demo.report import write_report

    index = write_report(build_report(summary, source, watcher, trends, latency_ms, models_line, fall_latency_ms), options.report_dir)
    summary["report"] = str(index)
    if options.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return 0 if complete else 1


def _trend_or_none(url: str) -> dict[str, Any] | None:
    try:
        return _get_json(url)
    except OSError:
        return None  # the pump has no trend on the worker (none of its records got through)


def _percentiles(samples: list[float]) -> dict[str, Any]:
    from vigil.streams.demo.report import percentile

    return {"n": len(samples), "p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)}


def summarize(
    options: DemoOptions,
    source: DemoSource,
    stats: dict[str, Any],
    watcher: DemoWatcher,
    trends: dict[str, dict[str, Any] | None],
    latency_ms: dict[str, list[float]],
    *,
    complete: bool,
    elapsed_s: float,
    worker_cpu_s: float | None,
    monitoring_cpu_s: float | None = None,
) -> dict[str, Any]:
    """Everything the console summary, the JSON output and the report show."""
    c = watcher.counts
    failure = {a.asset_id: a for a in source.assets}
    alerts = []
    for e in sorted(watcher.episodes.values(), key=lambda e: e.opened_ts_ms):
        asset = failure.get(e.asset_id)
        lead_h = None
        if asset is not None and asset.failure_ts_ms is not None and e.opened_ts_ms <= asset.failure_ts_ms:
            lead_h = round((asset.failure_ts_ms - e.opened_ts_ms) / HOUR_MS, 2)
        alerts.append({
            "alert_id": e.alert_id, "asset_id": e.asset_id, "fault": asset.fault if asset else None,
            "opened_day": round((e.opened_ts_ms - source.start_ms) / DAY_MS, 2),
            "closed": e.closed_ts_ms is not None, "severity": e.severity, "diagnosis": e.diagnosis, "lead_h": lead_h,
        })
    faulty = [a.asset_id for a in source.assets if a.fault]
    alerted = {a["asset_id"] for a in alerts}
    first_alert = {}
    for a in alerts:
        first_alert.setdefault(a["asset_id"], a)
    window_s = None
    if watcher.first_sent_ms is not None and watcher.last_output_ms > watcher.first_sent_ms:
        window_s = (watcher.last_output_ms - watcher.first_sent_ms) / 1000.0
    raw = stats["vibration"] + stats["process"]
    return {
        "source": source.description,
        "assets": len(source.assets),
        "faulty": faulty,
        "detected": sorted(alerted & set(faulty)),
        "false_alarm_assets": sorted(alerted - set(faulty)),
        "lead_hours": {a: first_alert[a]["lead_h"] for a in faulty if a in first_alert},
        "alerts": alerts,
        "records_published": stats["records"],
        "malformed_injected": sum(stats["malformed"].values()),
        "duplicates_injected": stats["duplicates"],
        "dead_letters": dict(watcher.dead_letters),
        "funnel": {
            "raw records": raw, "windows": c["windows"], "scored": c["scored"], "flagged": c["flagged"],
            "confirmed": c["confirmed"], "alerts": len(watcher.episodes),
        },
        "cloud_fraction": round(c["cloud_evaluated"] / c["scored"], 4) if c["scored"] else None,
        "latency": {stage: _percentiles(s) for stage, s in latency_ms.items()},
        "throughput": {
            "raw_records_per_s": round(raw / window_s, 1) if window_s else None,
            "worker_cpu_s": round(worker_cpu_s, 1) if worker_cpu_s is not None else None,
            "raw_records_per_worker_cpu_s": round(raw / worker_cpu_s, 1) if worker_cpu_s else None,
            # The monitoring worker (ops.* stages), counted apart: the per-worker rate above is the scoring path's.
            "monitoring_worker_cpu_s": round(monitoring_cpu_s, 1) if monitoring_cpu_s is not None else None,
            "raw_records_per_monitoring_cpu_s": round(raw / monitoring_cpu_s, 1) if monitoring_cpu_s else None,
        },
        "trends_served": sum(t is not None for t in trends.values()),
        "elapsed_s": round(elapsed_s, 1),
        "complete": complete,
    }


def build_report(summary: dict[str, Any], source: DemoSource, watcher: DemoWatcher, trends: dict[str, Any],
                 latency_ms: dict[str, list[float]], models_line: str, fall_latency_ms: dict[str, list[float]] | None = None) -> Any:
    from vigil.streams.demo.report import AlertSpan, DemoReport, FallSection, PumpTrace

    spans: dict[str, list[AlertSpan]] = {}
    for e in watcher.episodes.values():
        spans.setdefault(e.asset_id, []).append(AlertSpan(e.alert_id, e.opened_ts_ms, e.closed_ts_ms, e.severity.lower()))
    pumps = []
    for asset in source.assets:
        trend = trends.get(asset.asset_id) or {"buckets": [], "threshold": None}
        pumps.append(PumpTrace(
            asset.asset_id, asset.fault, asset.failure_ts_ms,
            [b["hour_start_ms"] for b in trend["buckets"]], [b["edge_score_mean"] for b in trend["buckets"]],
            trend.get("threshold"), spans.get(asset.asset_id, []),
        ))
    lat = summary["latency"]
    rows = [
        ("source", summary["source"]),
        ("models", models_line),
        ("detected", f"{len(summary['detected'])} of {len(summary['faulty'])} faulty pumps"),
        ("false-alarm pumps", str(len(summary["false_alarm_assets"]))),
        ("lead before failure", ", ".join(f"{a}: {h} h" for a, h in summary["lead_hours"].items()) or "-"),
        ("records published", f"{summary['records_published']} ({summary['malformed_injected']} malformed, "
                              f"{summary['duplicates_injected']} re-sent)"),
        ("dead letters", ", ".join(f"{r}: {n}" for r, n in sorted(summary["dead_letters"].items())) or "none"),
        ("windows reaching the cloud tier", f"{summary['cloud_fraction']:.1%}" if summary["cloud_fraction"] is not None else "-"),
        ("end-to-end latency p50 / p99", _p50_p99(lat["end to end: raw -> pump.scores.cloud"])),
        ("throughput", f"{summary['throughput']['raw_records_per_s']} raw records/s; "
                       f"{summary['throughput']['raw_records_per_worker_cpu_s']} per scoring-worker CPU-second, "
                       f"{summary['throughput']['raw_records_per_monitoring_cpu_s']} per monitoring-worker CPU-second"),
        ("elapsed", f"{summary['elapsed_s']} s" + ("" if summary["complete"] else " (time bound hit before the cascade caught up)")),
    ]
    alert_rows = [{
        "alert": a["alert_id"], "pump": a["asset_id"], "simulated fault": a["fault"] or "none (false alarm)",
        "opened (day)": a["opened_day"], "lead before failure (h)": "-" if a["lead_h"] is None else a["lead_h"],
        "severity": a["severity"], "diagnosis": a["diagnosis"], "closed": "yes" if a["closed"] else "no",
    } for a in summary["alerts"]]
    falls = None
    if "falls" in summary:
        f = summary["falls"]
        falls = FallSection(
            summary=[(k, v) for k, v in fall_lines(f)],
            funnel=list(f["funnel"].items()),
            latency_ms=fall_latency_ms or {},
            alert_rows=[{"alert": a["alert_id"], "wearer": a["wearer"], "why": a["reason"], "trial": a["source"],
                         "really a fall": {True: "yes", False: "no (false alarm)", None: "?"}[a["is_fall"]],
                         "stage-2 probability": a["probability"], "state": a["state"]} for a in f["alerts"]],
        )
    return DemoReport(
        title="vigil demo: pump and fall cascades",
        falls=falls,
        models=model_section(summary, source),
        monitoring=monitoring_tables(summary) if "drift_findings" in summary else {},
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        summary=rows,
        funnel=list(summary["funnel"].items()),
        latency_ms=latency_ms,
        pumps=pumps,
        alert_rows=alert_rows,
        notes=[
            "Latency is wall-clock time from an input record being written to its output being written (Kafka record "
            "timestamps), not event time: the demo compresses simulated days into minutes.",
            "Health is each pump's hourly mean edge-tier anomaly score, served by the worker at /pumps/{id}/trend; the "
            "dashed line is the edge flag threshold, shaded spans are alert episodes, the vertical line the simulated failure.",
            "The simulated fleet is synthetic (models/simulate.py): bearing defects grow exponentially from onset to failure.",
            "Synthetic wearers (models/wearer_sim.py) are simulated signals, not recordings; so is the fall model trained on them. "
            "The responder simulator answers each confirmation request \"I'm OK\" with a fixed probability, whatever happened.",
        ],
    )


def model_section(summary: dict[str, Any], source: DemoSource) -> Any:
    """The report's model-change section from the summary's retrain, switches and versions; None without a change."""
    from vigil.streams.demo.report import ModelSection

    if "model_switches" not in summary:
        return None
    retrain, shadow = summary.get("retrain"), summary.get("shadow_comparison")

    def day(ts_ms: int | None) -> str:
        return "-" if ts_ms is None else f"{(ts_ms - source.start_ms) / DAY_MS:.2f}"

    rows = [("retrained on", "-" if retrain is None else f"{retrain['windows_kept']} healthy windows of {retrain['assets_kept']} pumps "
                                                        f"from {retrain['lineage']['topic']} in {retrain['wall_s']} s"),
            ("candidate", "-" if retrain is None else f"edge {retrain['candidate']['edge']}, cloud {retrain['candidate']['cloud']}"),
            ("decision", "-" if retrain is None else f"{retrain['decision']}: {'; '.join(retrain['reasons'])}"),
            ("shadow against active (edge)", "-" if not shadow else
             f"{shadow['windows_compared']} windows, flags agree on {shadow['flag_agreement']}, score Spearman {shadow['score_spearman']}"),
            ("windows scored twice / never", f"{summary['windows_scored_twice']} / {summary['windows_unscored']} (every window of "
                                             "pump.features against pump.scores.edge, by asset, stream and seq)")]
    if summary.get("model_change_error"):
        rows.append(("error", summary["model_change_error"]))
    switches = [{"tier": m["tier"], "alias": m["alias"], "what": m["kind"].replace("model_", ""), "from": m["from"] or "-",
                 "to": m["to"] or "-", "worker": m["worker"], "switch (s)": m["switch_s"]} for m in summary["model_switches"]]
    versions = [{"edge version": v, "windows": r["windows"], "first window (day)": day(r["first_ts_ms"]),
                 "last window (day)": day(r["last_ts_ms"])}
                for v, r in sorted(summary["versions_scored"].items(), key=lambda item: item[1]["first_ts_ms"] or 0)]
    return ModelSection(rows, switches, versions)


def monitoring_tables(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The monitoring findings as titled tables of rows, for the console and the report (days of the simulated week)."""
    start_ms = summary["event_start_ms"]

    def day(ms: int | None) -> str:
        return "-" if ms is None else f"{(ms - start_ms) / DAY_MS:.2f}"

    found = {r["asset_id"]: r for r in summary["time_to_finding"]}
    def hours(value: float | None) -> Any:
        return "-" if value is None else value

    injected = [{"pump": c["asset_id"], "change": c["detail"], "from (day)": day(c["at_ms"]),
                 "named after (h)": hours(found[c["asset_id"]]["hours_to_finding"]),
                 "by": found[c["asset_id"]]["found_by"] or "not named",
                 "fleet finding after (h)": hours(found[c["asset_id"]]["hours_to_fleet_finding"])} for c in summary["injected"]]
    drift = [{"scope": f["scope"], "kind": f["kind"], "feature set": f["feature_set"], "window": f["window"],
              "features (KL)": ", ".join(f"{n} {kl}" for n, kl in sorted(f["named"].items(), key=lambda kv: -kv[1])[:4]) or "-",
              "pumps": f["asset_id"] if f["scope"] == "asset" else (
                  f"{len(f['assets'])}: {', '.join(f['assets'][:6])}{' ...' if len(f['assets']) > 6 else ''}" if f["assets"]
                  else "the fleet as a whole (no pump's own window drifted)"),
              "opened (day)": day(f["opened_ms"]), "closed (day)": day(f["closed_ms"])} for f in summary["drift_findings"]]
    quality = [{"scope": f["scope"], "device": f["asset_id"] if f["scope"] == "asset" else f"{len(f['assets'])} devices",
                "stream": f.get("stream", "-"), "check": f["named"], "opened (day)": day(f["opened_ms"]),
                "closed (day)": day(f["closed_ms"])} for f in summary["quality_findings"]]
    realised = [{"model (edge/cloud)": r["model_version"], "episodes": r["episodes"], "labelled": r["labelled"],
                 "fault found": r["fault_found"], "nothing found": r["nothing_found"],
                 "precision": "-" if r["precision"] is None else f"{r['precision']:.2f}",
                 "false alarms per asset-year": "-" if r["false_alarms_per_asset_year"] is None else f"{r['false_alarms_per_asset_year']:.1f}",
                 "median lead (h)": "-" if r["median_lead_time_h"] is None else f"{r['median_lead_time_h']:.1f}",
                 "missed failures": summary.get("missed_failures", {}).get(r["model_version"], 0)}
                for r in summary["realised"]]
    failures = [{"pump": f["asset_id"], "failed (day)": day(f["failure_ts_ms"]), "fault": f["fault"], "verdict": f["verdict"],
                 "lead (h)": "-" if f["lead_time_h"] is None else f"{f['lead_time_h']:.1f}", "model (edge/cloud)": f["model_version"],
                 "warning alerts": ", ".join(f["alert_ids"]) or "-"} for f in summary.get("failures", [])]
    missed = sum(f["verdict"] == "MISSED" for f in summary.get("failures", []))
    return {"injected changes and the first finding naming each pump": injected,
            f"drift findings (ops.drift): {len(drift)}": drift,
            f"data-quality findings (ops.quality): {len(quality)}": quality,
            "realised performance per model version (alerts labelled by the simulated crew)": realised,
            f"failures the crew reported, judged on ops.failures: {missed} missed of {len(failures)}": failures}


def fall_lines(f: dict[str, Any]) -> list[tuple[str, str]]:
    """The fall topology's summary as (label, text) rows, for the console and the report."""
    o = f["outcomes"]
    return [
        ("wearers", f["source"]),
        ("trials", f"{f['trials']}: {f['fall_trials']} falls, {f['adl_trials']} ADL"),
        ("falls suspected", f"{f['falls_suspected']} of {f['fall_trials']} fall trials"),
        ("ADL trials suspected", f"{f['adl_suspected']} of {f['adl_trials']}"),
        ("settled", f"{o['dismissed (wearer said OK)']} dismissed by the wearer ({f['dismissed_real_falls']} of them real falls), "
                    f"{o['no answer: alert']} unanswered -> alert, {o['help asked: alert']} help asked -> alert"),
        ("dead letters", ", ".join(f"{r}: {n}" for r, n in sorted(f["dead_letters"].items())) or "none"),
        ("latency p50 / p99", "; ".join(f"{stage} {_p50_p99(p)}" for stage, p in f["latency"].items())),
    ]


def _p50_p99(p: dict[str, Any]) -> str:
    if not p["n"]:
        return "-"
    return f"{p['p50_ms']:.0f} / {p['p99_ms']:.0f} ms"


def print_summary(summary: dict[str, Any]) -> None:
    out = Console()
    alerts = Table(title=f"alerts: {len(summary['detected'])} of {len(summary['faulty'])} faulty pumps detected, "
                         f"{len(summary['false_alarm_assets'])} false-alarm pumps")
    for column in ("pump", "simulated fault", "opened (day)", "lead before failure", "severity", "diagnosis"):
        alerts.add_column(column)
    for a in summary["alerts"]:
        alerts.add_row(a["asset_id"], a["fault"] or "[red]none (false alarm)[/red]", f"{a['opened_day']:.2f}",
                       "-" if a["lead_h"] is None else f"{a['lead_h']:.1f} h", a["severity"], a["diagnosis"] or "-")
    out.print(alerts)
    funnel = Table(title="cascade funnel")
    funnel.add_column("stage")
    funnel.add_column("count", justify="right")
    funnel.add_column("of previous", justify="right")
    previous = None
    for stage, count in summary["funnel"].items():
        funnel.add_row(stage, str(count), f"{count / previous:.1%}" if previous else "")
        previous = count
    latency = Table(title="latency (input written -> output written)")
    for column in ("stage", "n", "p50", "p99"):
        latency.add_column(column, justify="left" if column == "stage" else "right")
    for stage, p in summary["latency"].items():
        latency.add_row(stage, str(p["n"]), "-" if p["p50_ms"] is None else f"{p['p50_ms']:.0f} ms", "-" if p["p99_ms"] is None else f"{p['p99_ms']:.0f} ms")
    out.print(funnel)
    out.print(latency)
    t = summary["throughput"]
    out.print(
        f"{summary['records_published']} records published ({summary['malformed_injected']} malformed, {summary['duplicates_injected']} re-sent); "
        f"dead letters: {', '.join(f'{r} {n}' for r, n in sorted(summary['dead_letters'].items())) or 'none'}; "
        f"throughput {t['raw_records_per_s']} raw records/s, {t['raw_records_per_worker_cpu_s']} per scoring-worker CPU-second "
        f"({t['raw_records_per_monitoring_cpu_s']} per monitoring-worker CPU-second); "
        f"{summary['elapsed_s']} s in all; broker {summary['broker']}"
        + (f" used {summary['broker_cpu_share']:.0%} of a core" if summary.get("broker_cpu_share") is not None else "")
    )
    if "falls" in summary:
        f = summary["falls"]
        falls = Table(title=f"fall cascade: {len(f['alerts'])} emergency alerts")
        for column in ("wearer", "trial", "really a fall", "why", "stage-2 probability"):
            falls.add_column(column)
        for a in f["alerts"]:
            falls.add_row(a["wearer"], a["source"], {True: "yes", False: "[red]no (false alarm)[/red]", None: "?"}[a["is_fall"]],
                          a["reason"] or a["state"], f"{a['probability']:.3f}")
        out.print(falls)
        rows = Table(title="fall funnel")
        rows.add_column("")
        rows.add_column("")
        for stage, count in f["funnel"].items():
            rows.add_row(stage, str(count))
        for label, text in fall_lines(f):
            rows.add_row(label, text)
        out.print(rows)
    if "model_switches" in summary:
        switches = Table(title=f"model change: {len(summary['model_switches'])} switches; windows scored twice "
                               f"{summary['windows_scored_twice']}, never {summary['windows_unscored']}")
        for column in ("tier", "alias", "what", "from", "to", "switch"):
            switches.add_column(column)
        for m in summary["model_switches"]:
            switches.add_row(m["tier"], m["alias"], m["kind"].replace("model_", ""), m["from"] or "-", m["to"] or "-", f"{m['switch_s']:.2f} s")
        out.print(switches)
        if summary.get("model_change_error"):
            out.print(f"[yellow]model change: {summary['model_change_error']}[/yellow]")
    if "drift_findings" in summary:
        for title, rows in monitoring_tables(summary).items():
            table = Table(title=title)
            for column in (rows[0] if rows else {"": ""}):
                table.add_column(column)
            for row in rows:
                table.add_row(*(str(v) for v in row.values()))
            out.print(table)
    out.print(f"report: [bold]{summary.get('report')}[/bold]")
    if not summary["complete"]:
        out.print("[yellow]the run hit its time bound before the cascade caught up; the numbers cover what got through[/yellow]")
