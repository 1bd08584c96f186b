import asyncio
import time

from streams.app import pace_empty_fetches


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
