"""Waiting on a condition (never a fixed sleep to let things happen)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from worker.runner import Runner

# Only bounds a broken run; no test measures it.
CONDITION_TIMEOUT = 20.0


async def wait_until(condition: Callable[[], bool], *, within: float = CONDITION_TIMEOUT) -> None:
    """Poll ``condition()`` while the event loop keeps running, until it holds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


async def next_poll_turn(runner: Runner) -> None:
    """Until the runner's poll loop has begun another turn."""
    turn = runner.last_poll
    await wait_until(lambda: runner.last_poll > turn)
