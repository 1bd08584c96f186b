"""The fall topology in `vigil demo`: wearers published beside the pumps, a simulated responder, and a tally.

By default the wearers are SYNTHETIC (``models.wearer_sim``), and so is the
stage-2 model the demo trains; ``--falls-pack`` replays subjects of a
SisFall-layout pack instead, with a model trained on the pack's other
subjects. A responder simulator answers each confirmation request "I'm OK"
with a set probability; the rest go unanswered and become emergency alerts
once the confirmation window has passed. Every alert and dismissal is
checked against the trial it came from.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vigil.streams.falls.replay import TrialSpan, WearerTrial
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import (
    ALERTS,
    FALL_CANDIDATES,
    FALL_CONFIRM_REQUEST,
    FALL_DEADLETTER,
    FALL_OUTCOMES,
    FALL_SUSPECTED,
    SCHEMA_OF_TOPIC,
)

FALL_LATENCY_STAGES = (
    "wearable.imu.raw -> fall.candidates",
    "fall.candidates -> fall.suspected",
    "fall.suspected -> fall.confirm_request",
    "unanswered deadline -> alert",
)


@dataclass
class FallDemoOptions:
    wearers: int = 12
    trials_per_wearer: int = 10
    fall_fraction: float = 0.25
    pack: Path | None = None
    subjects: tuple[str, ...] = ("SA13", "SE04")  # replayed from a pack; the model is trained on the others
    trials_per_subject: int | None = 30
    ok_probability: float = 0.2
    answer_delay_s: float = 2.0
    seed: int = 7

    def validate(self) -> None:
        if self.pack is None and (self.wearers < 0 or self.trials_per_wearer < 1):
            raise ValueError(f"need wearers >= 0 and trials per wearer >= 1, got {self.wearers} and {self.trials_per_wearer}")
        if not 0 <= self.ok_probability <= 1:
            raise ValueError(f"the answer probability must be in [0, 1], got {self.ok_probability}")

    @property
    def enabled(self) -> bool:
        return self.pack is not None or self.wearers > 0


def prepare_fall_model(options: FallDemoOptions, settings: Settings, use_registry: bool) -> str:
    """Make sure ``settings.models_dir`` has the active fall model the worker will run; a line saying which."""
    from vigil.streams.falls.agents import load_fall_model

    if use_registry:
        active = load_fall_model(settings.models_dir)
        if active is None:
            raise ValueError(f"no active fall model in {settings.models_dir}; train one with `vigil train falls --pack PATH` "
                             "(or --simulate), or run the demo without --use-registry")
        return f"the registry's active fall model {active.version}"
    if options.pack is not None:
        from vigil.streams.falls.offline import load_candidates
        from vigil.streams.falls.training import save_fall_model

        data = load_candidates(options.pack)
        trained = sorted(set(data.subject.tolist()) - set(options.subjects))
        version, _ = save_fall_model(settings, data, trained, options.pack, seed=options.seed)
        return f"fall model {version}, trained on {len(trained)} subjects of {options.pack.name} (not the replayed {', '.join(options.subjects)})"
    from vigil.streams.falls.training import train_falls_simulated

    version, info = train_falls_simulated(settings, seed=options.seed + 1000)
    return f"fall model {version}, trained on {info['falls'] + info['adl']} synthetic trials"


def demo_wearers(options: FallDemoOptions) -> tuple[dict[str, list[WearerTrial]], float, str]:
    from vigil.streams.falls.replay import pack_wearers, simulated_wearers

    if options.pack is not None:
        wearers, fs_hz = pack_wearers(options.pack, options.subjects, options.trials_per_subject, seed=options.seed)
        n = sum(len(t) for t in wearers.values())
        return wearers, fs_hz, f"{options.pack.name}: subjects {', '.join(options.subjects)} as wearers, {n} trials"
    wearers = simulated_wearers(options.wearers, options.trials_per_wearer, options.fall_fraction, seed=options.seed)
    return wearers, 200.0, (f"{options.wearers} synthetic wearers, {options.trials_per_wearer} trials each "
                            f"({options.fall_fraction:.0%} falls)")


@dataclass
class FallWatcher:
    """Tallies the fall topology's outputs as they are written; the demo's one consumer (``DemoWatcher``)
    reads the topics and hands the records to ``handlers()``."""

    sent_ms: dict[tuple[str, int], float] = field(default_factory=dict)  # (wearer, chunk seq) -> handed to the producer
    written: dict[str, dict[Any, float]] = field(default_factory=lambda: {"candidate": {}, "suspected": {}, "request": {}})
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # alert id -> latest record
    alert_lag_ms: list[float] = field(default_factory=list)
    candidate_source: dict[tuple[str, int], int] = field(default_factory=dict)  # (wearer, candidate seq) -> chunk seq
    counts: Counter = field(default_factory=Counter)
    dead_letters: Counter = field(default_factory=Counter)
    on_request: Callable[[dict[str, Any]], None] | None = None

    def record_sent(self, record: dict[str, Any]) -> None:
        self.sent_ms[(record["wearer_id"], record["seq"])] = time.time() * 1000.0

    def handlers(self) -> dict[str, tuple[str, Callable[[dict[str, Any], float], None]]]:
        """Logical topic -> (schema, handler(record, Kafka timestamp ms))."""
        pairs = {FALL_CANDIDATES: self._candidate, FALL_SUSPECTED: self._suspected, FALL_CONFIRM_REQUEST: self._request,
                 FALL_OUTCOMES: self._outcome, ALERTS: self._alert, FALL_DEADLETTER: self._dead_letter}
        return {topic: (SCHEMA_OF_TOPIC[topic], handler) for topic, handler in pairs.items()}

    def _candidate(self, r: dict[str, Any], written: float) -> None:
        self.counts["candidates"] += 1
        self.written["candidate"][(r["wearer_id"], r["seq"])] = written
        self.candidate_source[(r["wearer_id"], r["seq"])] = r["source_seq"]

    def _suspected(self, r: dict[str, Any], written: float) -> None:
        self.counts["suspected"] += 1
        self.written["suspected"][(r["wearer_id"], r["seq"])] = written

    def _request(self, r: dict[str, Any], written: float) -> None:
        self.requests[r["request_id"]] = r
        self.written["request"][(r["wearer_id"], r["seq"])] = written
        if self.on_request is not None:
            self.on_request(r)

    def _outcome(self, r: dict[str, Any], written: float) -> None:
        self.outcomes[r["request_id"]] = r

    def _alert(self, r: dict[str, Any], written: float) -> None:
        if not r["kind"].startswith("fall."):
            return
        if r["alert_id"] not in self.alerts and r["state"] == "OPEN":
            request = self.requests.get(r["alert_id"])
            if request is not None and written >= request["deadline_ts_ms"]:
                self.alert_lag_ms.append(written - request["deadline_ts_ms"])
        self.alerts[r["alert_id"]] = r

    def _dead_letter(self, r: dict[str, Any], written: float) -> None:
        self.dead_letters[r["reason"]] += 1

    def latency_ms(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {stage: [] for stage in FALL_LATENCY_STAGES}
        for key, written in self.written["candidate"].items():
            sent = self.sent_ms.get((key[0], self.candidate_source[key]))
            if sent is not None:
                out["wearable.imu.raw -> fall.candidates"].append(written - sent)
        for key, written in self.written["suspected"].items():
            if key in self.written["candidate"]:
                out["fall.candidates -> fall.suspected"].append(written - self.written["candidate"][key])
        for key, written in self.written["request"].items():
            if key in self.written["suspected"]:
                out["fall.suspected -> fall.confirm_request"].append(written - self.written["suspected"][key])
        out["unanswered deadline -> alert"] = list(self.alert_lag_ms)
        return out


class FallDemo:
    """Publishes the wearers (paced over the demo's publishing time), answers as their devices, and tallies.

    The responder is fed the requests the demo's watcher reads, instead of consuming them itself.
    """

    def __init__(self, options: FallDemoOptions, settings: Settings, codec: AvroCodec) -> None:
        from vigil.streams.falls.responder import Responder, ResponderPolicy

        self.options, self.settings, self.codec = options, settings, codec
        self.wearers, self.fs_hz, self.description = demo_wearers(options)
        self.responder = Responder(settings, codec, ResponderPolicy(ok_probability=options.ok_probability,
                                                                    delay_s=options.answer_delay_s, seed=options.seed))
        self.watcher = FallWatcher(on_request=self.responder.offer)
        self.stats: dict[str, Any] | None = None
        self.spans: list[TrialSpan] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def total_chunks(self) -> int:
        step = int(round(self.fs_hz))  # 1 s chunks
        return sum(-(-len(t.acc_g) // step) for trials in self.wearers.values() for t in trials)

    def start(self, publish_seconds: float, should_stop: Callable[[], bool]) -> None:
        from vigil.streams.devtools.producer import RecordProducer
        from vigil.streams.falls.replay import publish_wearers

        rate = self.total_chunks / max(5.0, publish_seconds)

        def publish() -> None:
            producer = RecordProducer(self.settings, self.codec)
            stats = publish_wearers(producer, self.wearers, fs_hz=self.fs_hz, rate_per_s=rate,
                                    should_stop=lambda: should_stop() or self._stop.is_set(), on_sent=self.watcher.record_sent)
            producer.close()
            self.spans = stats.pop("spans")
            self.stats = stats

        self._threads = [threading.Thread(target=publish, name="fall-publisher", daemon=True),
                         threading.Thread(target=self.responder.answer_until, args=(self._stop.is_set,), name="fall-responder", daemon=True)]
        for thread in self._threads:
            thread.start()

    def caught_up(self, metrics: dict[str, float]) -> bool:
        """Everything published has been screened and classified, and every request has been settled."""
        if self.stats is None:
            return False
        screened = metrics.get('vigil_records_in_total{stage="wearable.imu.raw"}', 0.0) >= self.stats["records"]
        classified = metrics.get('vigil_records_in_total{stage="fall.candidates"}', 0.0) >= self.watcher.counts["candidates"]
        asked = metrics.get('vigil_records_in_total{stage="fall.confirm"}', 0.0) >= self.watcher.counts["suspected"]
        settled = len(self.watcher.requests) >= self.watcher.counts["suspected"] and set(self.watcher.requests) <= set(self.watcher.outcomes)
        return screened and classified and asked and settled

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def summary(self) -> dict[str, Any]:
        w = self.watcher
        spans = self.spans

        def trial(wearer: str, ts_ms: int) -> TrialSpan | None:
            return next((s for s in spans if s.wearer_id == wearer and s.holds(ts_ms)), None)

        alerts = []
        for a in sorted(w.alerts.values(), key=lambda a: a["opened_ts_ms"]):
            span = trial(a["asset_id"], a["opened_ts_ms"])
            outcome = w.outcomes.get(a["alert_id"], {}).get("outcome", "")
            alerts.append({"alert_id": a["alert_id"], "wearer": a["asset_id"], "state": a["state"], "reason": outcome,
                           "trial": span.activity if span else "?", "source": span.source if span else "?",
                           "is_fall": span.is_fall if span else None, "probability": round(a["edge_score"], 3)})
        suspected_trials = {(s.wearer_id, s.start_ts_ms) for r in w.requests.values() if (s := trial(r["wearer_id"], r["impact_ts_ms"]))}
        falls = [s for s in spans if s.is_fall]
        adl = [s for s in spans if not s.is_fall]
        outcome_counts = Counter(o["outcome"] for o in w.outcomes.values())
        dismissed_falls = sum(1 for o in w.outcomes.values() if o["outcome"] == "DISMISSED" and (s := trial(o["wearer_id"], o["impact_ts_ms"])) and s.is_fall)
        return {
            "source": self.description,
            "wearers": len(self.wearers),
            "trials": len(spans), "fall_trials": len(falls), "adl_trials": len(adl),
            "falls_suspected": sum((s.wearer_id, s.start_ts_ms) in suspected_trials for s in falls),
            "adl_suspected": sum((s.wearer_id, s.start_ts_ms) in suspected_trials for s in adl),
            "funnel": {
                "accelerometer chunks": self.stats["records"] if self.stats else 0,
                "stage 1: candidates": w.counts["candidates"],
                "stage 2: suspected falls": w.counts["suspected"],
                "confirmation requests": len(w.requests),
                "emergency alerts": len(w.alerts),
            },
            "outcomes": {"dismissed (wearer said OK)": outcome_counts["DISMISSED"], "no answer: alert": outcome_counts["EMERGENCY_NO_RESPONSE"],
                         "help asked: alert": outcome_counts["EMERGENCY_HELP"]},
            "dismissed_real_falls": dismissed_falls,
            "responder": dict(self.responder.stats),
            "alerts": alerts,
            "dead_letters": dict(w.dead_letters),
        }
