"""On stop, the unstarted rest of a FIFO group is released as soon as receiving has ended, not
when the drain ends: other groups still being moderated do not hold it back."""

from __future__ import annotations

import asyncio

from support.conditions import wait_until
from test_runner import ScriptedHandler, ack, config

from devstack.fakes import InMemorySource
from worker.pipeline import Outcome
from worker.ports import ReceivedMessage
from worker.runner import Runner


async def test_a_groups_unstarted_rest_is_released_while_another_group_is_still_moderated() -> None:
    source = InMemorySource()
    slow = source.send("a0", group_id="a")
    finished = source.send("b0", group_id="b")
    unstarted = source.send("b1", group_id="b")
    stop = asyncio.Event()
    started: set[str] = set()

    async def behaviour(message: ReceivedMessage) -> Outcome:
        started.add(message.body)
        if message.body == "a0":  # finishes only once b1 is visible again
            await wait_until(lambda: (unstarted, 0) in source.visibility_changes)
        else:
            await stop.wait()
        return await ack(message)

    handler = ScriptedHandler(behaviour)
    runner = Runner(source, handler, config(burst=False, wait_seconds=1, drain_timeout=10))
    running = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: started == {"a0", "b0"})

    stop.set()
    stats = await asyncio.wait_for(running, timeout=20)

    assert sorted(handler.handled) == ["a0", "b0"]
    assert stats.acked == 2
    assert source.is_deleted(slow)
    assert source.is_deleted(finished)
    assert source.visibility_changes == [(unstarted, 0)]
    assert stats.released_on_shutdown == 1
