"""How late the event loop wakes up: a blocked loop starves heartbeats, so operators must see it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from worker import metrics


async def watch_loop_lag(
    interval: float, observe: Callable[[float], None] = metrics.EVENT_LOOP_LAG.observe
) -> None:
    """Sleep ``interval`` seconds again and again, observing how much later than asked it woke.

    Runs until cancelled. Anything that holds the loop (a slow regex, a synchronous call) delays
    the wake-up by as long as it held it.
    """
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        observe(max(loop.time() - due, 0.0))
