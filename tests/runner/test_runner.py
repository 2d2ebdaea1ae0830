"""The runner's loop with the in-memory source: acks, releases, dead letters, limits, shutdown."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs
from support.builders import make_verdict
from support.conditions import wait_until

from devstack.fakes import InMemorySource
from worker.pipeline import Ack, DeadLetter, Outcome, RetryLater
from worker.ports import ReceivedMessage
from worker.runner import Runner, RunnerConfig, RunStats

Behaviour = Callable[[ReceivedMessage], Awaitable[Outcome]]


async def ack(message: ReceivedMessage) -> Outcome:
    return Ack(make_verdict(message.body))


class ScriptedHandler:
    """A handler whose outcome per message is chosen by the test; records order and overlap."""

    def __init__(self, behaviour: Behaviour = ack) -> None:
        self.behaviour = behaviour
        self.handled: list[str] = []
        self.concurrent = 0
        self.max_concurrent = 0

    async def handle(self, message: ReceivedMessage) -> Outcome:
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            outcome = await self.behaviour(message)
        finally:
            self.concurrent -= 1
        self.handled.append(message.body)
        return outcome


class CountingSource(InMemorySource):
    """The in-memory source, also recording the size of every delete call."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.delete_sizes: list[int] = []

    async def delete(self, messages: Sequence[ReceivedMessage]) -> Sequence[ReceivedMessage]:
        self.delete_sizes.append(len(messages))
        return await super().delete(messages)


def config(**changes: object) -> RunnerConfig:
    base: dict[str, object] = {"wait_seconds": 0, "burst": True, "drain_timeout": 5.0}
    return RunnerConfig(**(base | changes))  # type: ignore[arg-type]


async def stop_once_started(
    runner: Runner, started: asyncio.Event, stop: asyncio.Event
) -> RunStats:
    """Run until ``started`` is set, then stop and wait for the run to end (a hang guard only)."""
    running = asyncio.create_task(runner.run(stop))
    await started.wait()
    stop.set()
    return await asyncio.wait_for(running, timeout=20)


async def run(source: InMemorySource, handler: ScriptedHandler, **changes: object) -> RunStats:
    runner = Runner(source, handler, config(**changes))
    return await asyncio.wait_for(runner.run(asyncio.Event()), timeout=20)


async def test_acked_messages_are_deleted_in_batches() -> None:
    source = CountingSource()
    for index in range(25):
        source.send(f"m{index}")
    stats = await run(source, ScriptedHandler())
    assert stats.acked == 25
    assert source.remaining() == 0
    assert sum(source.delete_sizes) == 25
    assert max(source.delete_sizes) == 10  # full batches: the SQS maximum, never above


async def test_a_delete_waiting_for_its_batch_does_not_hold_a_slot() -> None:
    source = CountingSource()
    for index in range(2):
        source.send(f"m{index}")
    handler = ScriptedHandler()
    # One slot, and deletes that wait for a full batch: the second message is moderated while
    # the first one's delete still waits (a decided message takes no slot).
    runner = Runner(source, handler, config(burst=False, max_in_flight=1, delete_linger=3_600))
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))

    await wait_until(lambda: len(handler.handled) == 2)

    assert source.delete_sizes == []
    assert runner.footprint().pending_deletes == 2
    stop.set()
    stats = await asyncio.wait_for(running, timeout=20)
    assert stats.acked == 2
    assert source.delete_sizes == [2]  # one call for both, made by the drain
    assert source.remaining() == 0


async def test_dead_lettered_message_is_copied_with_its_reason_then_deleted() -> None:
    source = InMemorySource()
    message_id = source.send('{"bad": true}')

    async def reject(message: ReceivedMessage) -> Outcome:
        return DeadLetter("schema_violation", "the field 'id' is required")

    stats = await run(source, ScriptedHandler(reject))
    assert stats.dead_lettered == 1
    assert [(d.body, d.error_code) for d in source.dead_letters] == [
        ('{"bad": true}', "schema_violation")
    ]
    assert source.is_deleted(message_id)


async def test_without_a_dead_letter_queue_the_message_is_left_for_redrive() -> None:
    source = InMemorySource(dead_letter_queue=False)
    message_id = source.send("x")

    async def reject(message: ReceivedMessage) -> Outcome:
        return DeadLetter("invalid_json", "the body is not valid JSON")

    with capture_logs() as logs:
        await run(source, ScriptedHandler(reject))
    assert not source.is_deleted(message_id)
    assert any(e["event"] == "dead_letter_queue_not_configured" for e in logs)


async def test_a_failed_dead_letter_copy_keeps_the_message() -> None:
    source = InMemorySource()
    message_id = source.send("x")
    source.fail_next("dead_letter")

    async def reject(message: ReceivedMessage) -> Outcome:
        return DeadLetter("invalid_json", "the body is not valid JSON")

    await run(source, ScriptedHandler(reject), release_delay_base=60)
    assert not source.is_deleted(message_id)
    assert source.dead_letters == []
    assert source.visibility_changes == [(message_id, 60)]


async def test_retry_later_releases_with_a_delay_and_never_deletes() -> None:
    source = InMemorySource()
    message_id = source.send("x")

    async def fail(message: ReceivedMessage) -> Outcome:
        return RetryLater("classifier: down")

    stats = await run(source, ScriptedHandler(fail), release_delay_base=7)
    assert stats.retried == 1
    assert not source.is_deleted(message_id)
    assert source.visibility_changes == [(message_id, 7)]


@pytest.mark.parametrize(
    ("receive_count", "delay"), [(1, 5), (2, 10), (3, 20), (7, 300), (50, 300)]
)
def test_release_delay_doubles_with_each_receive_up_to_a_cap(
    receive_count: int, delay: int
) -> None:
    policy = RunnerConfig(release_delay_base=5, release_delay_max=300)
    assert policy.release_delay(receive_count) == delay


async def test_a_crashing_handler_releases_the_message_and_the_loop_goes_on() -> None:
    source = InMemorySource()
    crashing = source.send("crash")
    fine = source.send("fine")

    async def sometimes_crash(message: ReceivedMessage) -> Outcome:
        if message.body == "crash":
            raise RuntimeError("bug")
        return await ack(message)

    with capture_logs() as logs:
        stats = await run(source, ScriptedHandler(sometimes_crash))
    assert not source.is_deleted(crashing)
    assert source.is_deleted(fine)
    assert stats.retried == 1
    assert any(e["event"] == "handler_failed" for e in logs)


async def test_a_failed_receive_is_logged_and_the_loop_goes_on() -> None:
    source = InMemorySource()
    source.send("x")
    source.fail_next("receive")
    with capture_logs() as logs:
        stats = await run(source, ScriptedHandler())
    assert stats.acked == 1
    assert any(e["event"] == "receive_failed" for e in logs)


class TimedSource(InMemorySource):
    """The in-memory source, also recording the loop time of every receive call."""

    def __init__(self) -> None:
        super().__init__()
        self.receive_times: list[float] = []

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        self.receive_times.append(asyncio.get_running_loop().time())
        return await super().receive(max_messages, wait_seconds)


async def test_failed_receives_back_off_doubling_to_the_cap_and_a_success_starts_over() -> None:
    source = TimedSource()
    source.send("first")
    source.fail_next("receive", times=4)

    async def fail_once_more(message: ReceivedMessage) -> Outcome:
        if message.body == "first":  # after a receive that succeeded, one more failure
            source.fail_next("receive")
            source.send("second")
        return await ack(message)

    with capture_logs() as logs:
        stats = await run(
            source,
            ScriptedHandler(fail_once_more),
            receive_backoff=0.01,
            receive_backoff_max=0.03,
            recheck_interval=3600,  # only the backoff's end may wake the loop for the next receive
        )

    assert stats.acked == 2
    failures = [entry for entry in logs if entry["event"] == "receive_failed"]
    assert failures == [
        {
            "event": "receive_failed",
            "log_level": "warning",
            "error": "SQS ReceiveMessage failed: injected failure",
            "retry_in_seconds": delay,
        }
        for delay in (0.01, 0.02, 0.03, 0.03, 0.01)
    ]
    # The next receive waits at least the delay logged (a lower bound: load cannot break it).
    gaps = [later - earlier for earlier, later in itertools.pairwise(source.receive_times)]
    assert len(gaps) >= 5  # the four failures and the one after "first" were each followed
    assert all(gap >= delay for gap, delay in zip(gaps[:4], (0.01, 0.02, 0.03, 0.03), strict=True))


async def test_each_finished_receive_wakes_the_loop_without_waiting_for_a_recheck() -> None:
    source = InMemorySource()
    for index in range(25):
        source.send(f"m{index}")

    stats = await run(source, ScriptedHandler(), recheck_interval=3600)

    assert stats.acked == 25


async def test_no_more_than_max_in_flight_messages_are_handled_at_once() -> None:
    source = InMemorySource()
    for index in range(30):
        source.send(f"m{index}")

    async def slow(message: ReceivedMessage) -> Outcome:
        await asyncio.sleep(0.01)
        return await ack(message)

    handler = ScriptedHandler(slow)
    stats = await run(source, handler, max_in_flight=4)
    assert stats.acked == 30
    assert handler.max_concurrent == 4


async def test_visibility_is_extended_while_a_message_is_worked_on() -> None:
    source = InMemorySource(visibility_timeout=3)
    message_id = source.send("slow")

    async def until_extended(message: ReceivedMessage) -> Outcome:
        # Held until the heartbeat (every third of the 3 s timeout) has extended it.
        await wait_until(lambda: (message_id, 3) in source.visibility_changes)
        return await ack(message)

    stats = await run(source, ScriptedHandler(until_extended), visibility_timeout=3)
    assert stats.acked == 1
    assert source.visibility_changes == [(message_id, 3)]  # one tick, one extension
    assert source.is_deleted(message_id)


async def test_the_run_is_logged_with_its_limit_at_the_start_and_its_tally_at_the_end() -> None:
    source = InMemorySource()
    for body in ("fine", "later", "broken"):
        source.send(body)

    async def one_of_each(message: ReceivedMessage) -> Outcome:
        if message.body == "later":
            return RetryLater("classifier: down")
        if message.body == "broken":
            return DeadLetter("invalid_json", "the body is not valid JSON")
        return await ack(message)

    with capture_logs() as logs:
        await run(source, ScriptedHandler(one_of_each), max_in_flight=7, release_delay_base=60)

    ends = [entry for entry in logs if entry["event"] in ("worker_started", "worker_stopped")]
    assert ends == [
        {"event": "worker_started", "log_level": "info", "max_in_flight": 7},
        {
            "event": "worker_stopped",
            "log_level": "info",
            "received": 3,
            "acked": 1,
            "retried": 1,
            "dead_lettered": 1,
            "released_on_shutdown": 0,
        },
    ]


def test_a_runner_not_polling_yet_reads_as_having_just_polled() -> None:
    """The health probes read ``last_poll`` from the moment the worker is wired, before the
    poll loop's first turn: it starts as the time the runner was made."""
    before = time.monotonic()
    runner = Runner(InMemorySource(), ScriptedHandler(), config())
    after = time.monotonic()

    assert before <= runner.last_poll <= after


async def test_a_tick_that_finds_nothing_to_extend_does_not_end_the_heartbeat() -> None:
    source = InMemorySource(visibility_timeout=1)

    async def until_extended(message: ReceivedMessage) -> Outcome:
        await wait_until(lambda: (message.message_id, 1) in source.visibility_changes)
        return await ack(message)

    runner = Runner(
        source, ScriptedHandler(until_extended), config(burst=False, visibility_timeout=1)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    # The stimulus, not a measurement: the first tick (a third of a second in) finds no message.
    await asyncio.sleep(0.5)
    message_id = source.send("late")
    await wait_until(lambda: source.is_deleted(message_id))  # extended by a later tick, then acked
    stop.set()
    await asyncio.wait_for(running, timeout=20)

    assert source.visibility_changes[0] == (message_id, 1)


def drain_began(logs: Sequence[Mapping[str, Any]]) -> Callable[[], bool]:
    return lambda: any(entry["event"] == "draining" for entry in logs)


async def test_stop_lets_in_flight_work_finish_and_exits() -> None:
    """The handler ends only once the drain has begun: the drain waits for it, then deletes."""
    source = InMemorySource()
    message_id = source.send("x")
    started = asyncio.Event()

    with capture_logs() as logs:

        async def finishes_during_the_drain(message: ReceivedMessage) -> Outcome:
            started.set()
            await wait_until(drain_began(logs))
            return await ack(message)

        stop = asyncio.Event()
        handler = ScriptedHandler(finishes_during_the_drain)
        runner = Runner(source, handler, config(burst=False, wait_seconds=20))
        stats = await stop_once_started(runner, started, stop)
    assert stats.acked == 1
    assert stats.released_on_shutdown == 0
    assert source.is_deleted(message_id)


async def test_work_unfinished_at_the_drain_timeout_is_released_at_once() -> None:
    source = InMemorySource()
    message_id = source.send("stuck")
    started = asyncio.Event()

    async def stuck(message: ReceivedMessage) -> Outcome:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    stop = asyncio.Event()
    runner = Runner(source, ScriptedHandler(stuck), config(burst=False, drain_timeout=0.2))
    stats = await stop_once_started(runner, started, stop)
    assert not source.is_deleted(message_id)
    assert (message_id, 0) in source.visibility_changes
    assert stats.released_on_shutdown == 1


class EndlessPollSource(InMemorySource):
    """A source whose long poll never ends by itself (only a cancel ends it), so a runner that
    waited for it on stop would hang; it notes when the poll began and whether it was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.receiving = asyncio.Event()
        self.cancelled = False

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        self.receiving.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


# DESIGN.md's contract: "an idle worker exits within 2 s". An idle runner, once stopped, waits
# only for the receive grace before it abandons its long poll; the test asserts that mechanism
# (the poll is cancelled, the grace is under the contract), not a measured time.
IDLE_EXIT_CONTRACT_SECONDS = 2.0
# Only a guard against a hang: the poll above never ends, so a runner that waited for it on
# stop would never return. Not a performance figure.
HANG_GUARD_SECONDS = 20.0


def test_the_receive_grace_fits_the_idle_exit_contract() -> None:
    assert RunnerConfig().receive_grace < IDLE_EXIT_CONTRACT_SECONDS


async def test_an_idle_worker_abandons_its_long_poll_on_stop() -> None:
    source = EndlessPollSource()
    stop = asyncio.Event()
    runner = Runner(source, ScriptedHandler(), config(burst=False, wait_seconds=20))
    running = asyncio.create_task(runner.run(stop))
    await source.receiving.wait()
    with capture_logs() as logs:
        stop.set()
        stats = await asyncio.wait_for(running, timeout=HANG_GUARD_SECONDS)
    assert source.cancelled
    assert stats.received == 0
    assert [entry["event"] for entry in logs].count("receive_abandoned_on_stop") == 1


async def test_fifo_group_is_handled_in_order() -> None:
    source = InMemorySource()
    for index in range(5):
        source.send(f"a{index}", group_id="a")

    async def slow_first(message: ReceivedMessage) -> Outcome:
        await asyncio.sleep(0.05 if message.body == "a0" else 0)
        return await ack(message)

    handler = ScriptedHandler(slow_first)
    await run(source, handler)
    assert handler.handled == ["a0", "a1", "a2", "a3", "a4"]


async def test_after_a_fifo_failure_the_rest_of_the_group_is_released_unprocessed() -> None:
    source = InMemorySource()
    ids = [source.send(json.dumps(index), group_id="g") for index in range(4)]

    async def second_fails(message: ReceivedMessage) -> Outcome:
        if message.body == "1" and message.receive_count == 1:
            return RetryLater("classifier: down")
        return await ack(message)

    handler = ScriptedHandler(second_fails)
    runner = Runner(source, handler, config(burst=True, release_delay_base=0))
    await asyncio.wait_for(runner.run(asyncio.Event()), timeout=10)
    assert handler.handled[:2] == ["0", "1"]
    assert (ids[2], 0) in source.visibility_changes
    assert (ids[3], 0) in source.visibility_changes
    assert all(source.is_deleted(message_id) for message_id in ids)


async def test_on_stop_unstarted_fifo_messages_are_released_at_once() -> None:
    source = InMemorySource()
    ids = [source.send(f"g{index}", group_id="g") for index in range(3)]
    started = asyncio.Event()
    stop = asyncio.Event()

    async def finishes_after_stop(message: ReceivedMessage) -> Outcome:
        started.set()
        await stop.wait()
        return await ack(message)

    handler = ScriptedHandler(finishes_after_stop)
    runner = Runner(source, handler, config(burst=False, wait_seconds=20))
    stats = await stop_once_started(runner, started, stop)
    assert handler.handled == ["g0"]
    assert source.is_deleted(ids[0])
    assert [(ids[1], 0), (ids[2], 0)] == source.visibility_changes
    assert stats.released_on_shutdown == 2
