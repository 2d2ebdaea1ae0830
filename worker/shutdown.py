"""SIGTERM and SIGINT become a stop event, so the worker drains instead of dying mid-message."""

from __future__ import annotations

import asyncio
import contextlib
import signal


def install_stop_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets; call it from inside the running event loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def sleep_unless_stopped(seconds: float, stop: asyncio.Event) -> None:
    """Sleep for ``seconds``, returning early when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
