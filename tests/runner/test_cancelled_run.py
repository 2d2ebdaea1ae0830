"""A run cancelled during its drain still deletes a message whose delete was waiting for a
heartbeat extension: cancelling the heartbeat ends that extension, and the delete goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from structlog.testing import capture_logs
from support.conditions import wait_until
from test_runner import ScriptedHandler, ack, config

from devstack.fakes import InMemorySource
from worker.pipeline import Outcome
from worker.ports import ReceivedMessage
from worker.runner import Runner, Stage


class StuckExtensionSource(InMemorySource):
    """Every heartbeat extension (a visibility change above zero) hangs until cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.extending = asyncio.Event()

    async def change_visibility(
        self, changes: Sequence[tuple[ReceivedMessage, int]]
    ) -> Sequence[ReceivedMessage]:
        if all(seconds > 0 for _, seconds in changes):
            self.extending.set()
            await asyncio.Event().wait()
        return await super().change_visibility(changes)


async def test_a_delete_waiting_for_an_extension_still_happens_when_the_run_is_cancelled() -> None:
    source = StuckExtensionSource()
    message_id = source.send("x")

    async def ack_once_extending(message: ReceivedMessage) -> Outcome:
        await source.extending.wait()
        return await ack(message)

    runner = Runner(
        source,
        ScriptedHandler(ack_once_extending),
        config(burst=False, wait_seconds=1, visibility_timeout=1, drain_timeout=30),
    )
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(runner.run(stop))
        await wait_until(lambda: runner.held() == {message_id: Stage.SETTLING})
        stop.set()
        await wait_until(lambda: any(entry["event"] == "draining" for entry in logs))

        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    await wait_until(lambda: source.is_deleted(message_id))
