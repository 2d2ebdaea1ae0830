"""What the heartbeat logs: each extension with its size and timeout, and each failed one, refused
or raised, with how many leases it concerned (the heartbeat carries on after either)."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping, Sequence
from typing import Any

from structlog.testing import capture_logs
from support.conditions import wait_until
from test_runner import ScriptedHandler, ack, config

from devstack.fakes import InMemorySource
from worker.pipeline import Outcome
from worker.ports import ReceivedMessage
from worker.runner import Runner

VISIBILITY = 2  # a heartbeat every 2/3 s


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def run_until(source: InMemorySource, condition: Any) -> None:
    """Two messages held together until ``condition()`` holds, then acked and the run ended."""
    source.send("a")
    source.send("b")

    async def held(message: ReceivedMessage) -> Outcome:
        await wait_until(condition)
        return await ack(message)

    runner = Runner(source, ScriptedHandler(held), config(visibility_timeout=VISIBILITY))
    await asyncio.wait_for(runner.run(asyncio.Event()), timeout=20)


async def test_an_extension_is_logged_with_how_many_leases_and_for_how_long() -> None:
    source = InMemorySource(visibility_timeout=VISIBILITY)
    with capture_logs() as logs:
        await run_until(source, lambda: len(source.visibility_changes) >= 2)

    assert events(logs, "visibility_extended")[0] == {
        "event": "visibility_extended",
        "log_level": "debug",
        "count": 2,
        "visibility_seconds": VISIBILITY,
    }
    assert events(logs, "visibility_extension_failed") == []


async def test_a_refused_extension_is_logged_with_how_many_were_refused() -> None:
    source = InMemorySource(visibility_timeout=VISIBILITY)
    source.fail_next("change_visibility")  # the first heartbeat's call: both entries refused
    with capture_logs() as logs:
        await run_until(source, lambda: len(source.visibility_changes) >= 2)

    assert events(logs, "visibility_extension_failed") == [
        {"event": "visibility_extension_failed", "log_level": "warning", "count": 2}
    ]


class RaisingOnceSource(InMemorySource):
    """The first visibility change raises (an error the adapter did not translate)."""

    def __init__(self) -> None:
        super().__init__(visibility_timeout=VISIBILITY)
        self.raised = False

    async def change_visibility(
        self, changes: Sequence[tuple[ReceivedMessage, int]]
    ) -> Sequence[ReceivedMessage]:
        if not self.raised:
            self.raised = True
            raise RuntimeError("connection reset by peer")
        return await super().change_visibility(changes)


async def test_an_extension_that_raises_is_logged_and_the_next_tick_extends_again() -> None:
    source = RaisingOnceSource()
    with capture_logs() as logs:
        await run_until(source, lambda: len(source.visibility_changes) >= 2)

    assert events(logs, "visibility_extension_failed") == [
        {
            "event": "visibility_extension_failed",
            "log_level": "warning",
            "error": "connection reset by peer",
            "count": 2,
        }
    ]
    assert sorted(seconds for _, seconds in source.visibility_changes[:2]) == [
        VISIBILITY,
        VISIBILITY,
    ]
