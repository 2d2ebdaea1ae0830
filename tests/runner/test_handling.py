"""Handling one message: its id and receive count are bound for every log line meanwhile, a
handler that raises becomes a retry named after the error, the handling time is measured, and a
started message no longer counts as waiting for a slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import REGISTRY
from structlog.testing import capture_logs
from support.conditions import next_poll_turn, wait_until
from test_receiving import never_done
from test_runner import ScriptedHandler, ack, run
from test_unprotected_paths import FixedGate, RecordingSource

from devstack.fakes import InMemorySource
from worker.pipeline import Outcome, RetryLater
from worker.ports import ReceivedMessage
from worker.runner import Runner, RunnerConfig


async def test_the_message_id_and_receive_count_are_bound_while_it_is_handled() -> None:
    source = InMemorySource()
    message_id = source.send("x")
    bound: list[dict[str, Any]] = []

    async def record_context(message: ReceivedMessage) -> Outcome:
        bound.append(structlog.contextvars.get_contextvars())
        return await ack(message)

    before = structlog.contextvars.get_contextvars()
    await run(source, ScriptedHandler(record_context))

    assert bound == [before | {"message_id": message_id, "receive_count": 1}]
    assert structlog.contextvars.get_contextvars() == before  # unbound once handled


async def test_a_handler_that_raises_is_logged_and_the_message_retried_under_the_errors_name() -> (
    None
):
    source = InMemorySource()
    source.send("x")

    async def broken(message: ReceivedMessage) -> Outcome:
        raise KeyError("verdict")

    with capture_logs() as logs:
        stats = await run(source, ScriptedHandler(broken), release_delay_base=3)

    assert stats.retried == 1
    [failed] = [entry for entry in logs if entry["event"] == "handler_failed"]
    assert failed["error_type"] == "KeyError"
    assert failed["exc_info"] is True
    [released] = [entry for entry in logs if entry["event"] == "message_released"]
    assert released["reason"] == "internal error: KeyError"


def handle_seconds() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("moderation_handle_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("moderation_handle_seconds_sum") or 0.0
    return count, total


async def test_the_handling_time_observed_is_no_longer_than_the_run() -> None:
    source = InMemorySource()
    source.send("x")
    count_before, sum_before = handle_seconds()

    began = time.monotonic()
    await run(source, ScriptedHandler())
    run_seconds = time.monotonic() - began

    count_after, sum_after = handle_seconds()
    assert count_after - count_before == 1
    assert 0 <= sum_after - sum_before <= run_seconds


async def test_messages_keep_coming_through_a_gate_with_room_for_one() -> None:
    """Once started, a message leaves the count of those waiting for a slot, so the room it
    took comes back after it is settled."""
    source = InMemorySource()
    for index in range(3):
        source.send(f"m{index}")
    handler = ScriptedHandler()
    runner = Runner(
        source,
        handler,
        RunnerConfig(wait_seconds=0, burst=True, drain_timeout=5.0),
        gate=FixedGate(1),
    )

    stats = await asyncio.wait_for(runner.run(asyncio.Event()), timeout=20)

    assert handler.handled == ["m0", "m1", "m2"]
    assert stats.acked == 3


async def test_unstarted_messages_released_give_their_room_back_to_the_gate() -> None:
    """A FIFO group's rest, released before it started, leaves the count of messages waiting
    for a slot: receives stay within the gate's capacity, and once idle ask for all of it."""
    source = RecordingSource()
    for index in range(3):
        source.send(f"g{index}", group_id="g")

    async def head_fails_once(message: ReceivedMessage) -> Outcome:
        if message.body == "g0" and message.receive_count == 1:
            return RetryLater("classifier: down")
        return await ack(message)

    runner = Runner(
        source,
        ScriptedHandler(head_fails_once),
        RunnerConfig(wait_seconds=0, burst=True, drain_timeout=5.0, release_delay_base=0),
        gate=FixedGate(3),
    )

    stats = await asyncio.wait_for(runner.run(asyncio.Event()), timeout=20)

    assert stats.acked == 3
    assert max(source.asked) == 3
    assert source.asked[-1] == 3  # the receive that found the queue empty, nothing held


async def test_messages_waiting_in_a_fifo_group_keep_their_room_when_more_are_received() -> None:
    """Four messages wait behind their group's head; a later batch adds to them (it does not
    replace their count), so what is received but not started stays within the gate's five."""
    source = RecordingSource()
    for index in range(5):
        source.send(f"a{index}", group_id="a")
    for group in "bc":
        source.send(f"{group}0", group_id=group)
    runner = Runner(
        source,
        ScriptedHandler(never_done),  # every started message is held: nothing frees room
        RunnerConfig(wait_seconds=0, burst=False, max_in_flight=100, drain_timeout=0),
        gate=FixedGate(5),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))

    await wait_until(lambda: len(runner.held()) == 7)
    stop.set()
    await asyncio.wait_for(running, timeout=20)

    assert source.asked[0] == 5
    assert max(source.asked[1:]) == 1  # the room left beside the four waiting behind a0


class BusyGate(FixedGate):
    """Room for ``capacity`` messages, but no idle slot until ``idle`` is raised."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.idle = 0
        self._wake: list[Callable[[], None]] = []

    def idle_slots(self) -> int:
        return self.idle

    def on_capacity(self, wake: Callable[[], None]) -> None:
        self._wake.append(wake)

    def free_a_slot(self) -> None:
        self.idle = 1
        for wake in self._wake:
            wake()


async def test_a_receive_for_less_than_a_batch_waits_for_an_idle_slot() -> None:
    """Room for five, but every endpoint slot busy: no receive yet; one slot idle: five."""
    source = RecordingSource()
    for index in range(20):
        source.send(f"m{index}")
    gate = BusyGate(5)
    runner = Runner(
        source,
        ScriptedHandler(never_done),
        RunnerConfig(wait_seconds=0, burst=False, drain_timeout=0),
        gate=gate,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await next_poll_turn(runner)
    await next_poll_turn(runner)  # two turns of the poll loop, and still nothing asked for
    assert source.asked == []

    gate.free_a_slot()
    await wait_until(lambda: len(runner.held()) == 5)
    stop.set()
    await asyncio.wait_for(running, timeout=20)

    assert source.asked == [5]


class StopOnceHolding(FixedGate):
    """Sets ``stop`` the first time the runner asks for room while it holds a message: after
    the message's group was started, before that group's first step has run."""

    def __init__(self, runner_holds: Callable[[], bool], stop: asyncio.Event) -> None:
        super().__init__(10)
        self._runner_holds = runner_holds
        self._stop = stop

    def receive_capacity(self) -> int:
        if self._runner_holds():
            self._stop.set()
        return self.capacity


async def test_a_message_started_just_before_the_stop_is_moderated_not_released() -> None:
    source = InMemorySource()
    message_id = source.send("m0")
    handler = ScriptedHandler()
    stop = asyncio.Event()
    runner: Runner
    gate = StopOnceHolding(lambda: bool(runner.held()), stop)
    runner = Runner(source, handler, RunnerConfig(wait_seconds=0, burst=False), gate=gate)

    stats = await asyncio.wait_for(runner.run(stop), timeout=20)

    assert handler.handled == ["m0"]
    assert (stats.acked, stats.released_on_shutdown) == (1, 0)
    assert source.is_deleted(message_id)
