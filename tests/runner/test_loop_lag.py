"""``moderation_event_loop_lag_seconds``: a blocked event loop shows up in the metric."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY
from support.conditions import wait_until
from test_runner import ScriptedHandler, config

from devstack.fakes import InMemorySource
from worker.loop_lag import watch_loop_lag
from worker.runner import Runner

BLOCK_SECONDS = 0.3


def lag_total() -> float:
    return REGISTRY.get_sample_value("moderation_event_loop_lag_seconds_sum") or 0.0


def lag_samples() -> float:
    return REGISTRY.get_sample_value("moderation_event_loop_lag_seconds_count") or 0.0


async def block_the_loop() -> None:
    time.sleep(BLOCK_SECONDS)  # noqa: ASYNC251 - the point: hold the loop as a slow regex would


async def test_a_blocked_loop_is_observed_as_lag_at_least_as_long_as_the_block() -> None:
    lags: list[float] = []
    watching = asyncio.create_task(watch_loop_lag(0.01, lags.append))
    await wait_until(lambda: len(lags) >= 1)
    await asyncio.create_task(block_the_loop())
    await wait_until(lambda: any(lag >= BLOCK_SECONDS * 0.9 for lag in lags))
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)


async def test_the_runner_feeds_the_lag_metric_while_it_runs() -> None:
    before, samples_before = lag_total(), lag_samples()
    stop = asyncio.Event()
    runner = Runner(
        InMemorySource(), ScriptedHandler(), config(burst=False, loop_lag_interval=0.01)
    )
    running = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: lag_samples() > samples_before)  # the runner's watcher is at work
    await asyncio.create_task(block_the_loop())
    await wait_until(lambda: lag_total() - before >= BLOCK_SECONDS * 0.9)
    stop.set()
    await asyncio.wait_for(running, timeout=20)


async def test_the_lag_watcher_stops_with_the_runner() -> None:
    stop = asyncio.Event()
    stop.set()
    await Runner(InMemorySource(), ScriptedHandler(), config(burst=False)).run(stop)
    watchers = [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__name__", None) == "watch_loop_lag"
    ]
    assert watchers == []
