"""Broker failover on a three-node Apache Kafka (KRaft) cluster, with a `vigil worker` running.

Under load (an idempotent acks=all producer of vibration chunks), the active controller is SIGKILLed and
restarted, then the leader of a raw-topic partition (not the controller). Producer and worker carry on;
afterwards every acknowledged chunk has produced its feature window and its edge score, once, and no cloud
score is on its topic twice.

The scenario and its measurements live in loadtest/bench_failover.py (``python -m loadtest.bench_failover``
reports the interruptions); this test asserts what must hold. noida-db runs one node, so no cluster: skipped.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from loadtest.bench_failover import analyse, failure_report, run_failover
from tests.fixtures.models import BASELINE_WINDOWS
from vigil.streams.devtools.broker import NOIDA_DB
from vigil.streams.devtools.kafka import KafkaCluster
from vigil.streams.runtime.settings import Settings

pytestmark = pytest.mark.broker

PUMPS = 8  # over 4 partitions: every partition carries records
RATE_PER_S = 40.0  # half-second chunks: ~2,000-2,500 records over the ~60 s the two kills take


@pytest.fixture
def three_node_cluster(broker_name, tmp_path):
    if broker_name == NOIDA_DB:
        pytest.skip("the session broker is noida-db, which runs one node: a failover needs a three-node Apache Kafka "
                    "cluster (Java 17+ and Maven, or a warm jar cache)")
    cluster = KafkaCluster(nodes=3, data_dir=tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def test_sigkilled_controller_and_partition_leader_lose_and_duplicate_nothing(three_node_cluster, models_dir, start_worker):
    cluster = three_node_cluster
    settings = replace(
        Settings.from_env({}),
        broker_hosts=tuple(cluster.bootstrap.split(",")),
        app_id="failover",
        topic_prefix="failover.",
        partitions=4,
        replication=3,  # min.insync.replicas 2: a write survives one node down
        retention_ms=600_000,
        session_timeout_s=10.0,
        heartbeat_interval_s=1.0,
        models_dir=models_dir,
        baseline_windows=BASELINE_WINDOWS,
    )
    assert settings.effective_min_insync_replicas == 2
    run = run_failover(cluster, settings, start_worker, kinds=("controller", "leader"), pumps=PUMPS, rate_per_s=RATE_PER_S,
                       say=print)
    result = analyse(run)
    report = failure_report(result)
    print(report)  # shown with a failure, or with -rP

    # Both kinds of kill happened mid-stream: records were handed to the producer before each kill and after its restart.
    assert [k.kind for k in run.kills] == ["controller", "leader"], report
    assert run.kills[0].controller and not run.kills[1].controller, report
    for kill in run.kills:
        assert any(s.handed < kill.killed_at for s in run.journal), report
        assert any(s.handed > kill.restarted_at for s in run.journal), report
        assert kill.recovered_at is not None, f"output did not resume after the {kill.kind} kill:\n{report}"

    # Neither the producer nor the worker died; the producer got every record acknowledged.
    assert run.producer_failure is None, report
    assert run.reader_failure is None, report
    assert run.worker_alive_at_end, report
    assert result["records"]["not_acked"] == 0 and not run.producer_failed, report
    assert result["records"]["acked"] >= 1000, report

    # Every acknowledged chunk produced its window and its edge score, exactly once.
    windows = result["windows"]
    assert windows["expected"] >= 400, report
    assert (windows["features_lost"], windows["scores_lost"]) == (0, 0), report
    assert (windows["features_unexpected"], windows["scores_unexpected"]) == (0, 0), report
    assert (windows["features_duplicated"], windows["scores_duplicated"]) == (0, 0), report
    # Further downstream too: the cloud tier's scores (it scores only some windows, so only duplicates are counted).
    assert windows["cloud_scores"] > 0 and windows["cloud_scores_duplicated"] == 0, report
    assert result["worker"]["metrics"].get('vigil_seq_gaps_total{stage="pump.vibration.raw"}', 0) == 0, report
