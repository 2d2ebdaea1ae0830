"""Receiving never caps throughput: several receives outstanding on a busy queue, never more
asked for than there is room for, and each one's messages released when stop comes first."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from support.conditions import next_poll_turn, wait_until
from test_runner import ScriptedHandler, config

from devstack.fakes import InMemorySource
from worker.pipeline import Outcome, RetryLater
from worker.ports import ReceivedMessage
from worker.runner import MAX_RECEIVES, RECEIVE_BATCH, Runner, RunStats


class SlowRoundTripSource(InMemorySource):
    """Each receive takes its messages at once but answers only when the test allows one more
    answer (a round trip in transit); records how many receives were outstanding at once."""

    def __init__(self) -> None:
        super().__init__()
        self._answers = 0
        self._allowed = asyncio.Event()
        self.outstanding = 0
        self.most_outstanding = 0
        self.asked: list[int] = []

    def allow(self, answers: int) -> None:
        self._answers += answers
        self._allowed.set()

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        self.outstanding += 1
        self.most_outstanding = max(self.most_outstanding, self.outstanding)
        self.asked.append(max_messages)
        try:
            batch = await super().receive(max_messages, wait_seconds)
            while self._answers <= 0:
                self._allowed.clear()
                await self._allowed.wait()
            self._answers -= 1
            return batch
        finally:
            self.outstanding -= 1


ALL = 10**6


async def never_done(message: ReceivedMessage) -> Outcome:
    """A moderation that lasts until the drain gives up on it."""
    await asyncio.Event().wait()
    return RetryLater("unreachable")


def holding_every_message(
    *, max_in_flight: int
) -> tuple[SlowRoundTripSource, Runner, asyncio.Event, asyncio.Task[RunStats]]:
    """A running runner on a busy queue of 200, whose handler holds every message it starts."""
    source = SlowRoundTripSource()
    for index in range(200):
        source.send(f"m{index}")
    runner = Runner(
        source,
        ScriptedHandler(never_done),
        config(burst=False, max_in_flight=max_in_flight, drain_timeout=0),  # no drain wait
    )
    stop = asyncio.Event()
    return source, runner, stop, asyncio.create_task(runner.run(stop))


async def test_a_busy_queue_gets_several_receives_outstanding_at_once() -> None:
    source, _runner, stop, running = holding_every_message(max_in_flight=100)
    await wait_until(lambda: source.outstanding == 1)
    source.allow(1)  # the first receive comes back full: the queue is busy
    await wait_until(lambda: source.outstanding == MAX_RECEIVES)
    assert source.asked == [RECEIVE_BATCH] * (1 + MAX_RECEIVES)
    stop.set()
    source.allow(ALL)
    await asyncio.wait_for(running, timeout=20)


async def test_a_quiet_queue_has_one_receive_outstanding() -> None:
    """An empty queue: the one long poll waits alone, however much room there is."""
    source = SlowRoundTripSource()
    runner = Runner(source, ScriptedHandler(), config(burst=False, max_in_flight=100))
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: source.outstanding == 1)
    source.allow(3)  # three empty answers, each followed by one new receive
    await wait_until(lambda: len(source.asked) == 4)
    assert source.most_outstanding == 1
    stop.set()
    source.allow(ALL)
    await asyncio.wait_for(running, timeout=20)


async def test_receives_never_ask_for_more_than_the_free_room() -> None:
    """25 slots, every message held: exactly 25 received, whatever was in the queue."""
    source = SlowRoundTripSource()
    source.allow(ALL)
    for index in range(200):
        source.send(f"m{index}")
    runner = Runner(
        source,
        ScriptedHandler(never_done),
        config(burst=False, max_in_flight=25, drain_timeout=0),  # held messages: no drain wait
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: len(runner.held()) == 25)
    await wait_until(lambda: source.outstanding == 0)
    assert len(source.in_flight()) == 25
    stop.set()
    stats = await asyncio.wait_for(running, timeout=20)
    assert stats.received == 25


async def test_what_receives_in_transit_asked_for_is_not_asked_for_again() -> None:
    """25 slots: ten held, ten asked for by a receive in transit, so the loop's next turns ask
    for nothing more until that receive answers, and then for the last five."""
    source, runner, stop, running = holding_every_message(max_in_flight=25)
    await wait_until(lambda: source.outstanding == 1)
    source.allow(1)  # a full batch: the queue is busy, more than one receive may be out
    await wait_until(lambda: len(runner.held()) == 10 and source.outstanding == 1)
    await next_poll_turn(runner)  # a later turn of the loop, the same receive still out
    assert source.asked == [10, 10]

    source.allow(ALL)
    await wait_until(lambda: len(runner.held()) == 25)
    assert source.asked == [10, 10, 5]
    stop.set()
    await asyncio.wait_for(running, timeout=20)


async def test_on_stop_every_outstanding_receive_has_its_messages_released() -> None:
    source = SlowRoundTripSource()
    for index in range(200):
        source.send(f"m{index}")
    runner = Runner(
        source,
        ScriptedHandler(never_done),
        config(burst=False, max_in_flight=100, receive_grace=15.0, drain_timeout=0),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    source.allow(1)
    await wait_until(lambda: source.outstanding == MAX_RECEIVES)
    stop.set()
    source.allow(ALL)  # the answers in transit arrive within the grace
    stats = await asyncio.wait_for(running, timeout=20)
    assert stats.received == RECEIVE_BATCH * (1 + MAX_RECEIVES)
    assert source.in_flight() == []  # nothing left hidden: all released
    assert stats.released_on_shutdown == stats.received
