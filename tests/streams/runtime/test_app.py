import asyncio
import time

from vigil.streams.runtime.app import pace_empty_fetches


class FetcherAnsweringAtOnce:
    """Stands in for aiokafka's Fetcher: only the method pace_empty_fetches wraps."""

    def __init__(self, has_data: bool) -> None:
        self.has_data = has_data

    async def _proc_fetch_request(self, assignment, node_id, request) -> bool:
        return self.has_data


def paced_call_seconds(has_data: bool, interval_s: float) -> tuple[bool, float]:
    async def run() -> tuple[bool, float]:
        fetcher = FetcherAnsweringAtOnce(has_data)
        pace_empty_fetches(fetcher, interval_s)
        started = time.perf_counter()
        result = await fetcher._proc_fetch_request(None, 0, None)
        return result, time.perf_counter() - started

    return asyncio.run(run())


def test_an_early_empty_fetch_waits_out_the_interval_and_data_does_not_wait():
    assert paced_call_seconds(False, 0.2)[0] is False and paced_call_seconds(False, 0.2)[1] >= 0.19
    assert paced_call_seconds(True, 0.2)[0] is True and paced_call_seconds(True, 0.2)[1] < 0.05


def test_a_cancelled_wait_returns_like_aiokafkas_own_fetch_task():
    # aiokafka's Fetcher.close() cancels its fetch tasks and then awaits them: raising there hung worker shutdown.
    async def run() -> bool:
        fetcher = FetcherAnsweringAtOnce(False)
        pace_empty_fetches(fetcher, 5.0)
        task = asyncio.ensure_future(fetcher._proc_fetch_request(None, 0, None))
        await asyncio.sleep(0.05)
        task.cancel()
        return await task

    assert asyncio.run(run()) is False


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
