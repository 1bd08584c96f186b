import pytest


def agent_names(app) -> set[str]:
    return {agent.name for agent in app.agents.values()}


def test_a_worker_runs_the_fall_topology_only_with_an_active_fall_model(models_dir, crafted_fall_model, tmp_path):
    import shutil
    from dataclasses import replace

    from vigil.models.falls import ScreenConfig
    from vigil.models.registry import FALL_TIER, ModelRegistry
    from vigil.streams.falls.agents import load_fall_model
    from vigil.streams.runtime.app import create_app
    from vigil.streams.runtime.settings import Settings

    shutil.copytree(models_dir, tmp_path / "models")  # pump models only
    settings = replace(Settings.from_env({}), broker_hosts=("127.0.0.1:9",), models_dir=tmp_path / "models")
    fall_stages = {"wearable.imu.raw", "fall.candidates", "fall.confirm"}
    pumps_only = create_app(replace(settings, app_id="pumps-only"))
    assert not agent_names(pumps_only) & fall_stages and "pump.features" in agent_names(pumps_only)
    ModelRegistry(settings.models_dir).save(FALL_TIER, crafted_fall_model, {"screen": {**ScreenConfig().__dict__, "peak_g": 2.5}}, activate=True)
    assert fall_stages <= agent_names(create_app(replace(settings, app_id="both")))
    # Workers screen with the configuration the model was trained behind.
    assert load_fall_model(settings.models_dir).screen == ScreenConfig(peak_g=2.5)


def test_one_prefix_namespaces_the_group_the_changelogs_and_the_topics(models_dir):
    from dataclasses import replace

    from vigil.streams.runtime.app import create_app
    from vigil.streams.runtime.settings import Settings

    base = replace(Settings.from_env({}), broker_hosts=("127.0.0.1:9",), models_dir=models_dir)
    site_a = create_app(replace(base, topic_prefix="site-a."), fall_model=False)
    site_b = create_app(replace(base, topic_prefix="site-b."), fall_model=False)
    assert (site_a.conf.id, site_b.conf.id) == ("site-a.vigil", "site-b.vigil")  # the consumer group
    changelogs_a = {table.changelog_topic.get_topic_name() for table in site_a.tables.values()}
    assert changelogs_a and all(name.startswith("site-a.vigil-") for name in changelogs_a)
    assert changelogs_a.isdisjoint(table.changelog_topic.get_topic_name() for table in site_b.tables.values())
    inputs_a = {topic for agent in site_a.agents.values() for topic in agent.channel.topics}
    assert inputs_a and all(topic.startswith("site-a.") for topic in inputs_a)


def test_faust_table_directories_go_under_the_worker_data_dir_not_the_working_directory(models_dir, tmp_path, monkeypatch):
    from dataclasses import replace

    from vigil.streams.runtime.app import create_app
    from vigil.streams.runtime.settings import Settings

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "state" / "worker"  # parents that do not exist yet: Faust only creates the last level
    app = create_app(replace(Settings.from_env({}), broker_hosts=("127.0.0.1:9",), models_dir=models_dir,
                             topic_prefix="site-a.", worker_data_dir=data), fall_model=False)
    assert app.conf.datadir == data / "site-a.vigil" and data.is_dir()
    assert app.conf.tabledir.is_relative_to(data / "site-a.vigil")
    assert not list(tmp_path.glob("*-data"))  # Faust's default, "<app id>-data" in the working directory


def test_the_workers_producer_is_idempotent_with_acks_from_all_replicas(models_dir):
    # A retried produce request whose first attempt was written (its leader died before acknowledging)
    # must not write the outputs twice: the broker drops the retry by producer id and sequence.
    import asyncio
    from dataclasses import replace

    from vigil.streams.runtime.app import create_app
    from vigil.streams.runtime.settings import Settings

    app = create_app(replace(Settings.from_env({}), broker_hosts=("127.0.0.1:9",), models_dir=models_dir), fall_model=False)

    async def built_client():
        client = app.producer._new_producer()  # not started: no connection is made
        return client._txn_manager is not None

    assert asyncio.run(built_client())  # aiokafka keeps a transaction manager (producer id, sequences) only for idempotent producers
    assert app.producer._settings_extra() == {"acks": "all", "enable_idempotence": True}


@pytest.fixture
def worker_consumer(models_dir):
    from dataclasses import replace

    from vigil.streams.runtime.app import create_app
    from vigil.streams.runtime.settings import Settings

    app = create_app(replace(Settings.from_env({}), broker_hosts=("127.0.0.1:9",), models_dir=models_dir), fall_model=False)
    return app.consumer


async def test_offsets_faust_jumped_over_are_not_committed_before_they_come_again(worker_consumer):
    # After a takeover Faust handed out offset 400 first; the guard sought back to the committed 374 and
    # 374..420 were then processed and acknowledged. Counted as a gap as well (Faust's default), 375..400
    # sat twice in the acknowledged list and each commit advanced by one offset.
    from faust.types import TP

    from vigil.streams.runtime.app import _VigilConsumer

    tp = TP("t0.pump.features", 0)
    consumer = worker_consumer
    assert isinstance(consumer, _VigilConsumer)
    consumer._committed_offset[tp] = 374
    await consumer._add_gap(tp, 375, 400)
    consumer._acked[tp].extend(range(374, 421))
    assert consumer._new_offset(tp) == 421

    faust_default = TP("t0.pump.features", 1)
    consumer._committed_offset[faust_default] = 374
    await super(_VigilConsumer, consumer)._add_gap(faust_default, 375, 400)
    consumer._acked[faust_default].extend(range(374, 421))
    assert consumer._new_offset(faust_default) == 376  # what it was: one offset per commit


async def test_a_gap_the_guard_accepted_lets_commits_pass_it(worker_consumer):
    from faust.types import TP

    tp = TP("t0.pump.features", 2)
    consumer = worker_consumer
    consumer._committed_offset[tp] = 10
    consumer._acked[tp].extend([10, 11, 15, 16])
    assert consumer._new_offset(tp) == 12  # stops before the hole
    consumer._committed_offset[tp] = 12  # what the commit of 12 records
    await consumer.add_accepted_gap(tp, 12, 14)
    assert consumer._new_offset(tp) == 17


def test_the_scoring_and_monitoring_roles_split_the_stages_between_two_groups(models_dir, crafted_fall_model, tmp_path):
    import shutil
    from dataclasses import replace

    from vigil.models.registry import FALL_TIER, ModelRegistry
    from vigil.streams.runtime.app import create_app
    from vigil.streams.runtime.settings import Settings

    shutil.copytree(models_dir, tmp_path / "models")
    ModelRegistry(tmp_path / "models").save(FALL_TIER, crafted_fall_model, {}, activate=True)
    base = replace(Settings.from_env({}), broker_hosts=("127.0.0.1:9",), models_dir=tmp_path / "models")
    every, scoring, monitoring = (create_app(replace(base, worker_role=role)) for role in ("all", "scoring", "monitoring"))
    assert agent_names(scoring) | agent_names(monitoring) == agent_names(every)
    assert not agent_names(scoring) & agent_names(monitoring)
    assert {"pump.features", "pump.scores.cloud", "fall.confirm"} <= agent_names(scoring)
    assert {"ops.drift", "ops.drift.fleet", "ops.quality", "ops.quality.fleet", "alerts.labelled"} == agent_names(monitoring)
    # Both roles read pump.scores.cloud, so each needs a group of its own: a group hands every partition of a topic
    # to one of its members, whatever that member subscribed to.
    assert (scoring.conf.id, monitoring.conf.id) == ("vigil", "vigil-monitoring")
    assert all(t.changelog_topic.get_topic_name().startswith("vigil-monitoring-ops-") for t in monitoring.tables.values())
    assert scoring.model_control is not None and monitoring.model_control is None  # no model to swap there
    assert "/pumps/{asset_id}/trend" in scoring.web.views and "/pumps/{asset_id}/trend" not in monitoring.web.views
    assert "/metrics" in monitoring.web.views


def test_an_unknown_worker_role_is_refused_with_the_choices():
    from vigil.streams.runtime.settings import Settings

    with pytest.raises(ValueError, match="VIGIL_WORKER_ROLE must be one of all, scoring, monitoring, got 'alerts'"):
        Settings.from_env({"VIGIL_WORKER_ROLE": "alerts"})


async def test_a_commit_made_while_seeking_to_the_committed_offsets_is_not_recorded_over(worker_consumer, monkeypatch, caplog):
    # Faust resumes the partitions before it seeks them to their committed offsets. Measured in the worker-crash
    # test: a stage committed 373 while the committed offsets were being fetched, the seek then recorded the fetched
    # 314, and since a commit advances from the recorded offset through acknowledged ones (314..372 already
    # committed, never acknowledged again), the partition was never committed again.
    from faust.types import TP

    from vigil.streams.runtime.app import _VigilConsumer

    busy, quiet, fresh = (TP("t0.pump.features", p) for p in range(3))
    consumer = worker_consumer

    async def seek_to_committed() -> dict[TP, int]:
        consumer._committed_offset[busy] = 373  # Faust's commit timer, while the fetch was under way
        consumer._read_offset[busy] = 380
        return {busy: 314, quiet: 50, fresh: 0}

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    with caplog.at_level("INFO", logger="vigil.streams.runtime.app"):
        await consumer.perform_seek()
    [kept] = [r for r in caplog.records if r.msg.startswith("commits made while seeking")]
    assert kept.partitions == {str(busy): {"fetched": 314, "kept": 373}}
    assert {tp: consumer._committed_offset[tp] for tp in (busy, quiet, fresh)} == {busy: 373, quiet: 50, fresh: None}
    assert {tp: consumer._read_offset[tp] for tp in (busy, quiet, fresh)} == {busy: 380, quiet: 50, fresh: 0}
    consumer._acked[busy].extend(range(373, 400))
    assert consumer._new_offset(busy) == 400

    await super(_VigilConsumer, consumer).perform_seek()  # Faust's own: the stale offset recorded, commits stuck
    assert consumer._committed_offset[busy] == 314
    consumer._acked[busy].extend(range(400, 420))
    assert consumer._new_offset(busy) is None
