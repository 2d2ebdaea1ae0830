"""Each held message's lifecycle: retained state, heartbeats (FIFO included), settling order."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from support.conditions import wait_until
from test_runner import ScriptedHandler, ack, config

from devstack.fakes import InMemorySource, SourceCall
from worker.pipeline import DeadLetter, Outcome, RetryLater
from worker.ports import ReceivedMessage
from worker.runner import Footprint, Runner, RunStats, Stage

IDLE = Footprint(leases=0, group_tasks=0, pending_deletes=0, pending_visibility_changes=0)


async def mixed_outcomes(message: ReceivedMessage) -> Outcome:
    """Every kind of settling: acks, dead letters, and a release before a later ack."""
    number = int(message.body)
    if number % 7 == 0:
        return DeadLetter("schema_violation", "the field 'id' is required")
    if number % 5 == 0 and message.receive_count == 1:
        return RetryLater("classifier: down")
    return await ack(message)


async def test_nothing_the_runner_holds_grows_with_the_messages_it_handled() -> None:
    """After each wave of messages settles the runner is back to holding nothing at all."""
    source = InMemorySource()
    runner = Runner(
        source,
        ScriptedHandler(mixed_outcomes),
        config(burst=False, wait_seconds=1, release_delay_base=0, max_in_flight=32),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    sent = 0
    for _wave in range(3):
        for _ in range(1_000):
            source.send(str(sent))
            sent += 1
        await wait_until(lambda: source.remaining() == 0)
        await wait_until(lambda: runner.footprint() == IDLE)
        assert runner.held() == {}
    stop.set()
    stats = await asyncio.wait_for(running, timeout=20)
    assert stats.acked + stats.dead_lettered == sent
    assert runner.footprint() == IDLE


def test_run_stats_are_counters_only() -> None:
    """RunStats keeps numbers, never the messages or verdicts themselves."""
    assert {field.type for field in dataclasses.fields(RunStats)} == {"int"}


async def test_fifo_messages_waiting_behind_a_slow_head_are_kept_hidden() -> None:
    """The whole group gets heartbeats while its head is moderated, so none is taken again."""
    visibility = 1
    source = InMemorySource(visibility_timeout=visibility)
    ids = [source.send(f"g{index}", group_id="g") for index in range(3)]
    waiting = ids[1:]

    def extensions_of(message_id: str) -> int:
        return source.visibility_changes.count((message_id, visibility))

    async def slow_head(message: ReceivedMessage) -> Outcome:
        if message.body == "g0":
            # Held well past the receive's own visibility timeout.
            await wait_until(lambda: all(extensions_of(m) >= 4 for m in waiting))
        return await ack(message)

    handler = ScriptedHandler(slow_head)
    stop = asyncio.Event()
    runner = Runner(
        source, handler, config(burst=False, wait_seconds=1, visibility_timeout=visibility)
    )
    running = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: source.remaining() == 0)
    stop.set()
    await asyncio.wait_for(running, timeout=20)
    assert handler.handled == ["g0", "g1", "g2"]
    assert source.receive_counts() == dict.fromkeys(ids, 1)
    assert source.lapsed_calls() == []


class HeldExtensionSource(InMemorySource):
    """Holds every visibility extension (``seconds == extension``) until ``resume`` is set."""

    def __init__(self, extension: int) -> None:
        super().__init__(visibility_timeout=extension)
        self.extension = extension
        self.extension_started = asyncio.Event()
        self.resume = asyncio.Event()

    async def change_visibility(
        self, changes: Sequence[tuple[ReceivedMessage, int]]
    ) -> Sequence[ReceivedMessage]:
        if any(seconds == self.extension for _, seconds in changes):
            self.extension_started.set()
            await self.resume.wait()
        return await super().change_visibility(changes)


async def test_an_extension_in_flight_lands_before_the_release_that_settles_the_message() -> None:
    """A heartbeat under way when a message settles never lands after (and re-hides) it."""
    extension, release_delay = 3, 60
    source = HeldExtensionSource(extension)
    message_id = source.send("x")

    async def fail_once_extended(message: ReceivedMessage) -> Outcome:
        await source.extension_started.wait()
        return RetryLater("classifier: down")

    runner = Runner(
        source,
        ScriptedHandler(fail_once_extended),
        # No linger: a release that did not wait would reach the source within a few loop turns.
        config(
            burst=False,
            wait_seconds=1,
            visibility_timeout=extension,
            release_delay_base=release_delay,
            batch_linger=0,
        ),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: runner.held().get(message_id) is Stage.SETTLING)
    for _ in range(50):  # loop turns, not time: ample for an unordered release to get through
        await asyncio.sleep(0)
    source.resume.set()
    await wait_until(lambda: message_id not in runner.held())
    stop.set()
    await asyncio.wait_for(running, timeout=20)
    handle = f"{message_id}/1"
    assert source.calls_for(handle) == [
        SourceCall("change_visibility", handle, extension, lapsed=False),
        SourceCall("change_visibility", handle, release_delay, lapsed=False),
    ]


class HeldDeleteSource(InMemorySource):
    """Holds every delete until ``may_delete()`` is true."""

    def __init__(self, visibility_timeout: int) -> None:
        super().__init__(visibility_timeout=visibility_timeout)
        self.may_delete = lambda: True

    async def delete(self, messages: Sequence[ReceivedMessage]) -> Sequence[ReceivedMessage]:
        await wait_until(self.may_delete)
        return await super().delete(messages)


async def test_a_settling_message_gets_no_new_heartbeat() -> None:
    """While a message's delete is under way, heartbeat ticks extend others but not it."""
    visibility = 1
    source = HeldDeleteSource(visibility)
    slow = source.send("slow")
    quick = source.send("quick")

    def ticks() -> int:
        return source.visibility_changes.count((slow, visibility))

    source.may_delete = lambda: ticks() >= 2

    async def slow_until_quick_is_deleted(message: ReceivedMessage) -> Outcome:
        if message.body == "slow":
            await wait_until(lambda: source.is_deleted(quick))
        return await ack(message)

    runner = Runner(
        source,
        ScriptedHandler(slow_until_quick_is_deleted),
        config(burst=False, wait_seconds=1, visibility_timeout=visibility),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: source.remaining() == 0)
    stop.set()
    await asyncio.wait_for(running, timeout=20)
    calls = source.calls_for(f"{quick}/1")
    assert [(call.operation, call.seconds) for call in calls] == [("delete", None)]
