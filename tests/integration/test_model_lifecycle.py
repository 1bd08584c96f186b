"""Promote, roll back and refuse models on a running `vigil worker`, through `vigil models` and models.control."""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, replace

import pytest

from tests.fixtures.broker import consume_all
from tests.fixtures.models import BASELINE_WINDOWS
from tests.integration.test_cli import vigil
from vigil.models.registry import EDGE_TIER, ModelRegistry
from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.lifecycle.artifacts import artifact_chunks
from vigil.streams.pumps.edge import EdgeStage
from vigil.streams.pumps.offline import OfflinePumpPipeline
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.stage import RawMessage
from vigil.streams.runtime.topics import (
    MODELS_ARTIFACTS,
    MODELS_CONTROL,
    MODELS_DEADLETTER,
    OPS_EVENTS,
    PUMP_FEATURES,
    PUMP_SCORES_EDGE,
    PUMP_SCORES_EDGE_SHADOW,
    SCHEMA_OF_TOPIC,
    ensure_topics,
)

pytestmark = pytest.mark.broker

PUMPS, STEPS = 3, 100
PHASES = (0, 40, 60, 80, 100)  # steps per phase: v1 (baseline + scored), v2, v1 again, v1 after refused changes
SWITCH_TIMEOUT_S = 30.0


@pytest.fixture
def windows(simulated_fleet):
    """Feature windows of 3 healthy pumps, vibration and process streams, in event-time order."""
    return OfflinePumpPipeline().feed((r.kind, r.key, r.value) for r in simulated_fleet(pumps=PUMPS, steps=STEPS, seed=17)).features


@pytest.fixture
def registries(two_edge_versions, tmp_path):
    """The operator's registry and a worker's, on machines that share no disk: the worker has v1 (its active edge
    model) but not v2, which it must fetch from models.artifacts; nothing but models.control changes what it serves."""
    registry, v1, v2 = two_edge_versions
    worker_root = tmp_path / "worker-models"
    shutil.copytree(registry.root, worker_root)
    shutil.rmtree(worker_root / EDGE_TIER / v2)
    return registry, ModelRegistry(worker_root), v1, v2


def offline_scores(registry, version, windows, codec):
    """{(asset, stream, seq): score} of a version over all windows, in one offline pass (edge state does not
    depend on the model, so a window's score depends only on the version that scored it)."""
    messages = [RawMessage(PUMP_FEATURES, 0, i, w["asset_id"].encode(), codec.encode(PUMP_FEATURES, SCHEMA_OF_TOPIC[PUMP_FEATURES], w))
                for i, w in enumerate(windows)]
    outputs = EdgeStage(codec, registry.load(EDGE_TIER, version)[0], version).process(messages, {}).outputs
    return {(o["asset_id"], o["stream"], o["seq"]): o["score"] for o in outputs}


def step_of(window, first_seq):
    return window["seq"] - first_seq[(window["asset_id"], window["stream"])]


@dataclass
class LifecycleRun:
    """A worker's settings (its own registry), the operator's CLI environment, the windows cut into PHASES, and a sender."""

    settings: Settings
    cli_env: dict[str, str]
    first_seq: dict[tuple[str, str], int]
    phases: list[list[dict]]
    producer: RecordProducer
    codec: AvroCodec

    def send(self, batch):
        topic = self.settings.topic(PUMP_FEATURES)
        for w in batch:
            self.producer.send_raw(PUMP_FEATURES, w["asset_id"].encode(), self.codec.encode(topic, SCHEMA_OF_TOPIC[PUMP_FEATURES], w))
        self.producer.flush()


@pytest.fixture
def run(broker_settings, registries, windows, codec):
    operator, worker_registry, _, _ = registries
    settings = replace(broker_settings, models_dir=worker_registry.root, baseline_windows=BASELINE_WINDOWS)
    ensure_topics(settings)
    first_seq = {}
    for w in windows:
        first_seq.setdefault((w["asset_id"], w["stream"]), w["seq"])
    phases = [[w for w in windows if lo <= step_of(w, first_seq) < hi] for lo, hi in zip(PHASES, PHASES[1:])]
    return LifecycleRun(settings, replace(settings, models_dir=operator.root).to_env(), first_seq, phases,
                        RecordProducer(settings, codec), codec)


def test_promote_and_rollback_switch_a_running_worker_and_bad_changes_are_refused(run, registries, windows, start_worker, codec,
                                                                                  broker):
    operator, worker_registry, v1, v2 = registries
    settings, cli_env, first_seq, phases, producer, send = run.settings, run.cli_env, run.first_seq, run.phases, run.producer, run.send

    def scores_so_far(expected):
        return consume_all(settings, PUMP_SCORES_EDGE, expected, timeout_s=90,
                           decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[PUMP_SCORES_EDGE]))

    def events(expected, timeout_s=SWITCH_TIMEOUT_S):
        return [v for _, v in consume_all(settings, OPS_EVENTS, expected, timeout_s=timeout_s,
                                          decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[OPS_EVENTS]))]

    worker = start_worker(settings)
    send(phases[0])
    assert len(scores_so_far(len(phases[0]))) == len(phases[0]), worker.log()

    promoted = vigil("models", "promote", "edge", v2, "--why", "fitted on the newer fleet", "--who", "ana", "--json", env=cli_env)
    assert promoted.returncode == 0, promoted.stderr
    change = json.loads(promoted.stdout)
    assert (change["version"], change["previous_version"], change["epoch"]) == (v2, v1, 1)
    switched = events(1)
    assert [(e["kind"], e["version"], e["detail"]) for e in switched] == [("model_switched", v2, f"active {v1} -> {v2}")], worker.log()
    assert worker_registry.files(EDGE_TIER, v2) == operator.files(EDGE_TIER, v2)  # fetched from models.artifacts
    send(phases[1])

    rolled = vigil("models", "rollback", "edge", "--why", "v2 flags too much", "--who", "ben", "--json", env=cli_env)
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["version"] == v1
    assert [e["kind"] for e in events(2)] == ["model_switched"] * 2
    send(phases[2])

    # Records the CLI would refuse, written straight to the topic: the worker must refuse them too.
    control_topic = settings.topic(MODELS_CONTROL)
    good = {**change, "epoch": 10}
    for bad in ({**good, "version": "edge-20990101T000000000000-deadbeef"}, {**good, "epoch": 11, "sha256": "b" * 64},
                {**good, "epoch": 12, "share": 2.0}):
        producer.send_raw(MODELS_CONTROL, b"pumps|edge|active", codec.encode(control_topic, SCHEMA_OF_TOPIC[MODELS_CONTROL], bad))
    producer.send_raw(MODELS_CONTROL, b"pumps|edge|active", b"\x07 not a change")
    # A version whose chunks on models.artifacts were altered after their metadata was written.
    payload, metadata = operator.files(EDGE_TIER, v2)
    forged = v2.replace("edge-", "edge-forged-")
    forged_meta = json.dumps({**json.loads(metadata), "version": forged}).encode()
    chunks_topic = settings.topic(MODELS_ARTIFACTS)
    for key, chunk in artifact_chunks(EDGE_TIER, forged, payload[:-1] + b"\x00", forged_meta, json.loads(metadata)["sha256"]):
        producer.send_raw(MODELS_ARTIFACTS, key, codec.encode(chunks_topic, SCHEMA_OF_TOPIC[MODELS_ARTIFACTS], chunk))
    producer.send_raw(MODELS_CONTROL, b"pumps|edge|active",
                      codec.encode(control_topic, SCHEMA_OF_TOPIC[MODELS_CONTROL], {**good, "epoch": 13, "version": forged}))
    producer.flush()
    findings = events(7)[2:]
    assert [(e["kind"], e["reason"], e["serving_version"]) for e in findings] == [
        ("control_rejected", "unknown_version", v1), ("model_refused", "sha256_mismatch", v1),
        ("control_rejected", "share_out_of_range", v1), ("control_rejected", "undecodable", None),
        ("model_refused", "integrity", v1)]
    assert "not on" in findings[0]["detail"] and "hash to" in findings[-1]["detail"]
    assert not (worker_registry.root / EDGE_TIER / forged).exists()
    letters = [v for _, v in consume_all(settings, MODELS_DEADLETTER, 3, timeout_s=10,
                                         decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[MODELS_DEADLETTER]))]
    assert sorted(d["reason"] for d in letters) == ["share_out_of_range", "undecodable", "unknown_version"]
    send(phases[3])

    scored = [v for _, v in scores_so_far(len(windows))]
    assert worker.process.poll() is None, worker.log()
    # Every window scored exactly once, across both switches.
    counts = Counter((s["asset_id"], s["stream"], s["seq"]) for s in scored)
    assert len(counts) == len(windows) and set(counts.values()) == {1}
    # Each phase by the version in force, with that version's own scores.
    expected = {v: offline_scores(operator, v, windows, codec) for v in (v1, v2)}
    version_of_phase = {0: v1, 1: v2, 2: v1, 3: v1}
    for s in scored:
        phase = next(i for i, (lo, hi) in enumerate(zip(PHASES, PHASES[1:])) if lo <= s["seq"] - first_seq[(s["asset_id"], s["stream"])] < hi)
        assert s["model_version"] == version_of_phase[phase], (phase, s["asset_id"], s["seq"])
        assert s["score"] == expected[s["model_version"]][(s["asset_id"], s["stream"], s["seq"])]
    assert sum(expected[v1][k] != expected[v2][k] for k in expected[v1] if expected[v1][k] is not None) > 0.9 * len(phases[1])

    # The audit trail, in order, with who and why; the worker's metric names the version it serves.
    history = vigil("models", "history", "edge", "--json", env=cli_env)
    assert history.returncode == 0, history.stderr
    assert [(h["action"], h["from"], h["to"], h["who"], h["why"]) for h in json.loads(history.stdout)] == [
        ("promote", v1, v2, "ana", "fitted on the newer fleet"), ("rollback", v2, v1, "ben", "v2 flags too much")]

    def serving_edge(w, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while True:  # the web server comes up after models.control is read
            try:
                metrics = w.metrics()
                break
            except OSError:
                assert time.monotonic() < deadline and w.process.poll() is None, w.log()
                time.sleep(0.5)
        samples = {k: v for k, v in metrics.items() if k.startswith("vigil_model_serving{") and 'alias="active"' in k
                   and 'tier="edge"' in k}
        return {k.split('version="')[1].rstrip('"}'): v for k, v in samples.items()}

    assert serving_edge(worker) == {v1: 1.0, v2: 0.0}

    # After a worker and a broker restart: the same history, and a new worker serves what models.control says.
    worker.stop()
    broker.restart()
    assert json.loads(vigil("models", "history", "edge", "--json", env=cli_env).stdout) == json.loads(history.stdout)
    replacement = start_worker(settings)
    # It replays models.control from the beginning before its first batch: the same switches and refusals, in order.
    replayed = events(14, timeout_s=60)[7:]
    assert len({e["worker"] for e in replayed}) == 1 and replayed[0]["worker"] != switched[0]["worker"]
    assert [(e["kind"], e["reason"]) for e in replayed] == [("model_switched", "switched")] * 2 + [
        (e["kind"], e["reason"]) for e in findings]
    assert serving_edge(replacement) == {v1: 1.0, v2: 0.0}


def test_a_promotion_made_while_no_worker_runs_takes_effect_when_one_starts(broker_settings, registries, windows,
                                                                            start_worker, codec):
    operator, worker_registry, v1, v2 = registries
    settings = replace(broker_settings, models_dir=worker_registry.root, baseline_windows=BASELINE_WINDOWS)
    cli_env = replace(settings, models_dir=operator.root).to_env()
    promoted = vigil("models", "promote", "edge", v2, "--why", "before the night shift", "--json", env=cli_env)
    assert promoted.returncode == 0, promoted.stderr
    assert operator.active_version(EDGE_TIER) == v2 and worker_registry.active_version(EDGE_TIER) == v1
    # The CLI refuses what a worker would, before writing anything.
    for args, message in ((["promote", "edge", "edge-nope", "--why", "x"], "no version 'edge-nope'"),
                          (["promote", "turbine", v2, "--why", "x"], "unknown tier"),
                          (["promote", "edge", v2, "--why", " "], "say why"),
                          (["promote", "edge", v2, "--why", "again"], f"already {v2}")):
        out = vigil("models", *args, env=cli_env)
        assert out.returncode == 2 and message in out.stderr, out.stderr
    worker = start_worker(settings)
    first = [w for w in windows if w["seq"] - windows[0]["seq"] < BASELINE_WINDOWS + 5]
    producer = RecordProducer(settings, codec)
    topic = settings.topic(PUMP_FEATURES)
    for w in first:
        producer.send_raw(PUMP_FEATURES, w["asset_id"].encode(), codec.encode(topic, SCHEMA_OF_TOPIC[PUMP_FEATURES], w))
    producer.flush()
    scored = [v for _, v in consume_all(settings, PUMP_SCORES_EDGE, len(first), timeout_s=90,
                                        decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[PUMP_SCORES_EDGE]))]
    assert len(scored) == len(first), worker.log()
    # The worker applied models.control before its first batch: nothing was scored by the registry's v1.
    assert {s["model_version"] for s in scored} == {v2}
    switched = [v for _, v in consume_all(settings, OPS_EVENTS, 1, timeout_s=SWITCH_TIMEOUT_S,
                                          decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[OPS_EVENTS]))]
    assert [(e["kind"], e["version"]) for e in switched] == [("model_switched", v2)], worker.log()


def test_shadow_and_canary_on_a_running_worker_then_the_canary_becomes_active(run, registries, windows, start_worker, codec):
    from vigil.models.lifecycle import canary_position

    operator, worker_registry, v1, v2 = registries
    settings, cli_env, phases, send = run.settings, run.cli_env, run.phases, run.send
    phase_of = {(w["asset_id"], w["stream"], w["seq"]): i for i, phase in enumerate(phases) for w in phase}
    events_seen = 0

    def change(*args, events=1):
        """Runs `vigil models ARGS --json` and waits for the worker's ``events`` ops events about it."""
        nonlocal events_seen
        out = vigil("models", *args, "--json", env=cli_env)
        assert out.returncode == 0, out.stderr
        expected = events_seen + events
        found = [v for _, v in consume_all(settings, OPS_EVENTS, expected, timeout_s=SWITCH_TIMEOUT_S,
                                           decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[OPS_EVENTS]))]
        assert len(found) >= expected, found
        events_seen = len(found)
        return json.loads(out.stdout), found

    def read(topic_name, expected, timeout_s=90):
        return [v for _, v in consume_all(settings, topic_name, expected, timeout_s=timeout_s,
                                          decode=lambda b: codec.decode(b, SCHEMA_OF_TOPIC[topic_name]))]

    worker = start_worker(settings)
    send(phases[0])
    assert len(read(PUMP_SCORES_EDGE, len(phases[0]))) == len(phases[0]), worker.log()

    change("promote", "edge", v2, "--as", "shadow", "--why", "watch v2 on live data")
    send(phases[1])
    # The canary takes exactly one of the three pumps: a share between the first and second pump's hash position.
    positions = sorted((canary_position(a), a) for a in {w["asset_id"] for w in windows})
    share = (positions[0][0] + positions[1][0]) / 2
    canary_pump = positions[0][1]
    change("promote", "edge", v2, "--as", "canary", "--share", f"{share:.6f}", "--why", "one pump first")
    send(phases[2])
    served = read(PUMP_SCORES_EDGE, len(windows) - len(phases[3]))
    compared = vigil("models", "compare", "edge", "--json", env=cli_env)
    assert compared.returncode == 0, compared.stderr
    report = json.loads(compared.stdout)

    _, found = change("promote", "edge", v2, "--why", "the canary held", events=2)
    retired = change("retire", "edge", "--as", "shadow", "--why", "v2 is active now")[1]
    send(phases[3])
    served = read(PUMP_SCORES_EDGE, len(windows))
    shadowed = read(PUMP_SCORES_EDGE_SHADOW, len(phases[1]) + len(phases[2]), timeout_s=20)
    assert worker.process.poll() is None, worker.log()

    counts = Counter((s["asset_id"], s["stream"], s["seq"]) for s in served)
    assert len(counts) == len(windows) and set(counts.values()) == {1}
    expected = {v: offline_scores(operator, v, windows, codec) for v in (v1, v2)}
    for s in served:
        phase = phase_of[(s["asset_id"], s["stream"], s["seq"])]
        version = v2 if phase == 3 or (phase == 2 and s["asset_id"] == canary_pump) else v1
        assert s["model_version"] == version, (phase, s["asset_id"], s["seq"])
        assert s["score"] == expected[version][(s["asset_id"], s["stream"], s["seq"])]
    # The shadow scored phases 1 and 2 (every window, whichever model served it), nothing before or after.
    assert sorted((s["asset_id"], s["stream"], s["seq"]) for s in shadowed) == sorted(k for k, p in phase_of.items() if p in (1, 2))
    assert all(s["model_version"] == v2 and s["score"] == expected[v2][(s["asset_id"], s["stream"], s["seq"])] for s in shadowed)

    # compare: the shadow paired with every served window of phases 1-2, the canary's pump counted under v2.
    scored_12 = [k for k, p in phase_of.items() if p in (1, 2) and expected[v1][k] is not None]
    assert report["shadow"]["windows_compared"] == len(scored_12)
    assert report["shadow"]["shadow_versions"] == [v2] and report["shadow"]["score_pearson"] is not None
    assert set(report["by_version"]) == {v1, v2} and report["by_version"][v2]["assets"] == 1
    assert report["in_force"]["canary"]["version"] == v2 and report["in_force"]["shadow"]["version"] == v2

    history = json.loads(vigil("models", "history", "edge", "--json", env=cli_env).stdout)
    assert [(h["alias"], h["action"], h["to"]) for h in history] == [
        ("shadow", "promote", v2), ("canary", "promote", v2), ("active", "promote", v2), ("canary", "retire", v2),
        ("shadow", "retire", v2)]
    assert [e["kind"] for e in found[-2:]] == ["model_switched", "model_retired"]
    assert retired[-1]["kind"] == "model_retired"
