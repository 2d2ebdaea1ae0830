"""Runner paths no test used to reach (issue 10): failures while settling, stop with every slot
busy, the drain sparing what is already settling, and receiving held to the gate's capacity."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from prometheus_client import REGISTRY
from structlog.testing import capture_logs
from support.conditions import wait_until
from test_runner import ScriptedHandler, ack, config, run

from devstack.fakes import InMemorySource
from worker.core.errors import SourceError
from worker.pipeline import DeadLetter, Outcome, RetryLater
from worker.ports import ReceivedMessage
from worker.runner import Runner, Stage


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def retry_later(message: ReceivedMessage) -> Outcome:
    return RetryLater("classifier: down")


async def dead_letter(message: ReceivedMessage) -> Outcome:
    return DeadLetter("schema_violation", "the field 'id' is required")


async def test_a_failed_delete_is_logged_and_the_message_stays_on_the_queue() -> None:
    """SQS refused the delete: harmless, the message comes back and is published again."""
    source = InMemorySource()
    message_id = source.send("x")
    source.fail_next("delete")

    with capture_logs() as logs:
        stats = await run(source, ScriptedHandler())

    assert stats.acked == 1
    assert len(events(logs, "delete_failed")) == 1
    assert not source.is_deleted(message_id)
    assert source.in_flight() == [message_id]  # back when its visibility timeout ends


async def test_a_failed_release_after_retry_later_is_logged_with_its_delay() -> None:
    source = InMemorySource()
    message_id = source.send("x")
    source.fail_next("change_visibility")

    with capture_logs() as logs:
        stats = await run(source, ScriptedHandler(retry_later), release_delay_base=7)

    assert stats.retried == 1
    (failed,) = events(logs, "visibility_change_failed")
    assert failed["visibility_seconds"] == 7
    assert source.visibility_changes == []  # the one change was refused
    assert not source.is_deleted(message_id)


async def test_a_failed_dead_letter_copy_releases_the_message_instead_of_deleting_it() -> None:
    """No copy in the dead-letter queue: deleting would lose the message, so it comes back."""
    source = InMemorySource()
    message_id = source.send('{"bad": true}')
    source.fail_next("dead_letter")

    with capture_logs() as logs:
        await run(source, ScriptedHandler(dead_letter), release_delay_base=9)

    (failed,) = events(logs, "dead_letter_failed")
    assert failed["visible_in_seconds"] == 9
    assert source.dead_letters == []
    assert not source.is_deleted(message_id)
    assert source.visibility_changes == [(message_id, 9)]


class StuckHandler(ScriptedHandler):
    """Every message waits until ``finish`` is set; ``started`` counts those under way."""

    def __init__(self) -> None:
        self.finish = asyncio.Event()
        self.started = 0

        async def stuck(message: ReceivedMessage) -> Outcome:
            self.started += 1
            await self.finish.wait()
            return await ack(message)

        super().__init__(stuck)


async def test_a_failed_release_on_shutdown_is_logged() -> None:
    source = InMemorySource()
    message_id = source.send("stuck")
    handler = StuckHandler()
    runner = Runner(source, handler, config(burst=False, drain_timeout=0, wait_seconds=1))
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: handler.started == 1)
    source.fail_next("change_visibility")

    with capture_logs() as logs:
        stop.set()
        stats = await asyncio.wait_for(running, timeout=20)

    assert stats.released_on_shutdown == 1
    (failed,) = events(logs, "release_failed")
    assert failed["count"] == 1
    assert source.in_flight() == [message_id]  # still hidden: its visibility timeout returns it


async def test_stop_while_every_slot_is_busy_ends_the_run_without_another_receive() -> None:
    """Waiting for a free slot watches stop too: the run drains and ends, nothing more taken."""
    source = InMemorySource()
    ids = [source.send(f"m{index}") for index in range(3)]
    handler = StuckHandler()
    runner = Runner(source, handler, config(burst=False, max_in_flight=2, wait_seconds=1))
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: handler.started == 2)

    stop.set()
    handler.finish.set()
    stats = await asyncio.wait_for(running, timeout=20)

    assert stats.received == 2
    assert stats.acked == 2
    assert source.receive_counts()[ids[2]] == 0


async def test_stop_wakes_a_poll_loop_that_waits_for_room() -> None:
    """Every slot busy, no receive out, no recheck for an hour: the stop alone ends the polling,
    and the drain begins while the messages are still being handled."""
    source = InMemorySource()
    for index in range(3):
        source.send(f"m{index}")
    handler = StuckHandler()
    runner = Runner(
        source, handler, config(burst=False, max_in_flight=2, wait_seconds=1, recheck_interval=3600)
    )
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(runner.run(stop))
        await wait_until(lambda: handler.started == 2)

        stop.set()
        await wait_until(lambda: any(entry["event"] == "draining" for entry in logs))
        handler.finish.set()
        stats = await asyncio.wait_for(running, timeout=20)

    assert stats.acked == 2


class SlowToCancelHandler(StuckHandler):
    """Like ``StuckHandler``, but a cancelled message takes a few loop turns to wind down (a
    handler closing its connection, say)."""

    async def handle(self, message: ReceivedMessage) -> Outcome:
        try:
            return await super().handle(message)
        except asyncio.CancelledError:
            for _ in range(20):
                await asyncio.sleep(0)
            raise


def in_flight_gauge() -> float:
    return REGISTRY.get_sample_value("moderation_in_flight") or 0.0


async def test_a_drain_that_times_out_is_logged_whole_and_leaves_nothing_counted_in_flight() -> (
    None
):
    source = InMemorySource()
    ids = [source.send(f"m{index}") for index in range(2)]
    handler = SlowToCancelHandler()  # never finishes: the drain gives up on both
    runner = Runner(source, handler, config(burst=False, max_in_flight=2, drain_timeout=0.05))
    before = in_flight_gauge()
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(runner.run(stop))
        await wait_until(lambda: handler.started == 2)
        stop.set()
        stats = await asyncio.wait_for(running, timeout=20)

    drain = [e for e in logs if e["event"] in ("draining", "drain_timeout_releasing")]
    assert drain == [
        {"event": "draining", "log_level": "info", "in_flight": 2},
        {"event": "drain_timeout_releasing", "log_level": "warning", "count": 2},
    ]
    assert stats.released_on_shutdown == 2
    assert sorted(source.visibility_changes) == sorted((message_id, 0) for message_id in ids)
    assert in_flight_gauge() == before  # the cancelled handlers were waited for, to their end


async def test_a_burst_ends_on_an_empty_queue_saying_so() -> None:
    with capture_logs() as logs:
        stats = await run(InMemorySource(), ScriptedHandler())

    assert stats.received == 0
    assert {"event": "queue_empty_burst_done", "log_level": "info"} in logs


class FailingLateReceiveSource(InMemorySource):
    """A receive under way at stop that fails when its answer arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.receiving = asyncio.Event()
        self.answer = asyncio.Event()

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        self.receiving.set()
        await self.answer.wait()
        raise SourceError("SQS ReceiveMessage failed: connection reset")


async def test_a_receive_that_fails_while_the_worker_stops_does_not_fail_the_run() -> None:
    source = FailingLateReceiveSource()
    runner = Runner(source, ScriptedHandler(), config(burst=False, receive_grace=15.0))
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await source.receiving.wait()

    stop.set()
    source.answer.set()
    stats = await asyncio.wait_for(running, timeout=20)

    assert stats.received == 0


class HeldDeleteSource(InMemorySource):
    """Deletes wait until ``allow_deletes`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.allow_deletes = asyncio.Event()

    async def delete(self, messages: Sequence[ReceivedMessage]) -> Sequence[ReceivedMessage]:
        await self.allow_deletes.wait()
        return await super().delete(messages)


async def test_the_drain_does_not_release_a_message_whose_delete_is_under_way() -> None:
    """At the drain timeout only unsettled messages are released; one being deleted is spared
    (releasing it too would hand a published message to another worker)."""
    source = HeldDeleteSource()
    settling = source.send("done")
    stuck = source.send("stuck")

    async def finish_one(message: ReceivedMessage) -> Outcome:
        if message.body == "stuck":
            await asyncio.Event().wait()
        return await ack(message)

    runner = Runner(
        source, ScriptedHandler(finish_one), config(burst=False, drain_timeout=0, wait_seconds=1)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: runner.held() == {settling: Stage.SETTLING, stuck: Stage.MODERATING})
    stop.set()
    await wait_until(lambda: (stuck, 0) in source.visibility_changes)
    source.allow_deletes.set()
    stats = await asyncio.wait_for(running, timeout=20)

    assert source.visibility_changes == [(stuck, 0)]
    assert source.is_deleted(settling)
    assert stats.released_on_shutdown == 1


class FixedGate:
    """A receive gate that always allows ``capacity`` messages in flight."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    def receive_capacity(self) -> int:
        return self.capacity

    def idle_slots(self) -> int:
        return self.capacity

    def on_capacity(self, wake: Callable[[], None]) -> None:
        """The capacity never changes, so there is nothing to wake the runner for."""

    async def wait_until_ready(self, stop: asyncio.Event) -> None:
        return None


class RecordingSource(InMemorySource):
    """Records the ``max_messages`` of every receive."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        self.asked.append(max_messages)
        return await super().receive(max_messages, wait_seconds)


async def test_receiving_is_capped_by_the_gates_capacity_not_only_max_in_flight() -> None:
    """Messages the endpoint cannot take yet are not hoarded (hidden) by this worker."""
    source = RecordingSource()
    for index in range(12):
        source.send(f"m{index}")
    handler = ScriptedHandler()
    runner = Runner(source, handler, config(max_in_flight=10), gate=FixedGate(3))

    stats = await asyncio.wait_for(runner.run(asyncio.Event()), timeout=20)

    assert stats.acked == 12
    assert max(source.asked) == 3
