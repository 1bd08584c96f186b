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
