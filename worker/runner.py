"""The poll loop: bounded concurrency, batched acks, visibility heartbeats and graceful shutdown.

Only the runner turns pipeline outcomes into source calls: ``Ack`` deletes (batched),
``RetryLater`` releases with a delay that grows with the receive count, ``DeadLetter`` copies the
message to the dead-letter queue and then deletes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog

from worker import metrics
from worker.batching import MicroBatcher
from worker.core.errors import SourceError
from worker.pipeline import Ack, DeadLetter, Outcome, RetryLater
from worker.ports import MessageSource, ReceivedMessage
from worker.shutdown import sleep_unless_stopped

log = structlog.get_logger(__name__)

RECEIVE_BATCH: Final = 10  # SQS's maximum per ReceiveMessage
_RECEIVE_ERROR_BACKOFF_MAX: Final = 30.0
_CAPACITY_RECHECK_SECONDS: Final = 1.0


class ReceiveGate(Protocol):
    """What the runner asks before receiving (``EndpointGuard`` satisfies it)."""

    def receive_capacity(self) -> int:
        """How many messages may be in flight now."""
        ...

    async def wait_until_ready(self, stop: asyncio.Event) -> None:
        """Return once receiving makes sense again, or when ``stop`` is set."""
        ...


class Handler(Protocol):
    """What the runner needs from the pipeline (``Moderator`` satisfies it)."""

    async def handle(self, message: ReceivedMessage) -> Outcome:
        """Moderate one message and say what should happen to it."""
        ...


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """How the loop behaves; built from settings at the edge."""

    max_in_flight: int = 64
    visibility_timeout: int = 60
    drain_timeout: float = 30.0
    wait_seconds: int = 20
    burst: bool = False
    release_delay_base: float = 5.0
    release_delay_max: float = 300.0

    def release_delay(self, receive_count: int) -> int:
        """Seconds before a released message comes back: doubling per receive, capped."""
        exponent = max(receive_count - 1, 0)
        return int(min(self.release_delay_base * 2 ** min(exponent, 30), self.release_delay_max))


@dataclass
class RunStats:
    """What one run did, for logs, the demo and tests."""

    received: int = 0
    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    released_on_shutdown: int = 0
    outcomes: list[tuple[ReceivedMessage, Outcome]] = field(default_factory=list)


class Runner:
    """Receives messages, moderates up to ``max_in_flight`` at once and settles each one."""

    def __init__(
        self,
        source: MessageSource,
        handler: Handler,
        config: RunnerConfig,
        *,
        gate: ReceiveGate | None = None,
        on_outcome: Callable[[ReceivedMessage, Outcome], None] | None = None,
    ) -> None:
        self._source = source
        self._gate = gate
        self._handler = handler
        self._config = config
        self._on_outcome = on_outcome
        self._stats = RunStats()
        self._tasks: dict[asyncio.Task[None], list[ReceivedMessage]] = {}
        self._settling: set[str] = set()
        self._stopping = asyncio.Event()
        self._deletes = MicroBatcher(self._delete_batch)
        self._visibility = MicroBatcher(self._visibility_batch)

    async def run(self, stop: asyncio.Event) -> RunStats:
        """Work until ``stop`` is set (or, in burst mode, the queue is empty), then drain."""
        log.info("worker_started", max_in_flight=self._config.max_in_flight)
        self._stopping = stop
        try:
            await self._poll(stop)
        finally:
            await self._drain()
        log.info(
            "worker_stopped",
            received=self._stats.received,
            acked=self._stats.acked,
            retried=self._stats.retried,
            dead_lettered=self._stats.dead_lettered,
        )
        return self._stats

    async def _poll(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            free = await self._free_slots(stop)
            if free is None:
                return
            try:
                batch = await _until_stopped(
                    self._source.receive(min(RECEIVE_BATCH, free), self._config.wait_seconds), stop
                )
            except SourceError as exc:
                failures += 1
                delay = min(2.0 ** min(failures, 10) / 2, _RECEIVE_ERROR_BACKOFF_MAX)
                metrics.RECEIVE_ERRORS.inc()
                log.warning("receive_failed", error=str(exc), retry_in_seconds=delay)
                await sleep_unless_stopped(delay, stop)
                continue
            failures = 0
            if batch is None:
                return
            if stop.is_set():
                self._stats.released_on_shutdown += len(batch)
                await self._release(batch)
                return
            if not batch and self._config.burst and not self._tasks:
                log.info("queue_empty_burst_done")
                return
            self._start(batch)

    async def _free_slots(self, stop: asyncio.Event) -> int | None:
        """Wait until the endpoint is ready and a slot is free; None when stop was requested."""
        while not stop.is_set():
            limit = self._config.max_in_flight
            if self._gate is not None:
                await self._gate.wait_until_ready(stop)
                limit = min(limit, self._gate.receive_capacity())
            free = limit - self._in_flight_count()
            if free > 0:
                return free
            # Re-check now and then even with nothing finishing: the limit moves by itself.
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    [*self._tasks, stopper],
                    timeout=_CAPACITY_RECHECK_SECONDS,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                stopper.cancel()
        return None

    def _in_flight_count(self) -> int:
        return sum(len(messages) for messages in self._tasks.values())

    def _start(self, batch: Sequence[ReceivedMessage]) -> None:
        self._stats.received += len(batch)
        metrics.MESSAGES_RECEIVED.inc(len(batch))
        for group in _ordered_groups(batch):
            task = asyncio.create_task(self._process_group(group))
            self._tasks[task] = group
            task.add_done_callback(self._tasks.pop)

    async def _process_group(self, group: list[ReceivedMessage]) -> None:
        """A FIFO group in order; after a failure, the rest of the group is released.

        On shutdown, messages of the group that have not started yet are released at once.
        """
        for index, message in enumerate(group):
            if index > 0 and self._stopping.is_set():
                self._stats.released_on_shutdown += len(group) - index
                await self._release(group[index:])
                return
            outcome = await self._process(message)
            self._forget(message)
            if isinstance(outcome, RetryLater) and message.group_id is not None:
                rest = group[index + 1 :]
                if rest:
                    log.info("fifo_group_released", group_size=len(rest))
                    await self._release(rest)
                return

    def _forget(self, message: ReceivedMessage) -> None:
        """Drop a settled message from its task's list, so a drain does not release it."""
        current = asyncio.current_task()
        if current is not None and current in self._tasks:
            self._tasks[current] = [m for m in self._tasks[current] if m is not message]

    async def _process(self, message: ReceivedMessage) -> Outcome:
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(
            message_id=message.message_id, receive_count=message.receive_count
        ):
            metrics.IN_FLIGHT.inc()
            heartbeat = asyncio.create_task(self._heartbeat(message))
            try:
                outcome = await self._handle(message)
            finally:
                heartbeat.cancel()
                metrics.IN_FLIGHT.dec()
            self._settling.add(message.receipt_handle)
            try:
                await self._settle(message, outcome)
            finally:
                # Needed only while settling; kept, the set would grow for the process's life.
                self._settling.discard(message.receipt_handle)
            metrics.HANDLE_SECONDS.observe(time.monotonic() - started)
        return outcome

    async def _handle(self, message: ReceivedMessage) -> Outcome:
        try:
            return await self._handler.handle(message)
        except Exception as exc:
            log.exception("handler_failed", error_type=type(exc).__name__)
            return RetryLater(f"internal error: {type(exc).__name__}")

    async def _settle(self, message: ReceivedMessage, outcome: Outcome) -> None:
        if self._on_outcome is not None:
            self._on_outcome(message, outcome)
        self._stats.outcomes.append((message, outcome))
        if isinstance(outcome, Ack):
            self._stats.acked += 1
            metrics.OUTCOMES.labels("ack").inc()
            metrics.VERDICTS.labels(outcome.verdict.verdict).inc()
            await self._delete(message)
        elif isinstance(outcome, DeadLetter):
            await self._dead_letter(message, outcome)
        else:
            self._stats.retried += 1
            metrics.OUTCOMES.labels("retry_later").inc()
            delay = self._config.release_delay(message.receive_count)
            log.info("message_released", reason=outcome.reason, visible_in_seconds=delay)
            await self._change_visibility(message, delay)

    async def _dead_letter(self, message: ReceivedMessage, outcome: DeadLetter) -> None:
        self._stats.dead_lettered += 1
        metrics.OUTCOMES.labels("dead_letter").inc()
        metrics.DEAD_LETTERS.labels(outcome.error_code).inc()
        try:
            moved = await self._source.dead_letter(message, outcome.error_code, outcome.detail)
        except SourceError as exc:
            delay = self._config.release_delay(message.receive_count)
            log.warning("dead_letter_failed", error=str(exc), visible_in_seconds=delay)
            await self._change_visibility(message, delay)
            return
        if not moved:
            log.warning("dead_letter_queue_not_configured", error_code=outcome.error_code)
            return
        log.info("message_dead_lettered", error_code=outcome.error_code)
        await self._delete(message)

    async def _delete(self, message: ReceivedMessage) -> None:
        if not await self._deletes.submit(message):
            log.warning("delete_failed")

    async def _change_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        if not await self._visibility.submit((message, seconds)):
            log.warning("visibility_change_failed", visibility_seconds=seconds)

    async def _heartbeat(self, message: ReceivedMessage) -> None:
        """Keep extending the message's visibility while it is being worked on."""
        timeout = self._config.visibility_timeout
        while True:
            await asyncio.sleep(timeout / 3)
            await self._change_visibility(message, timeout)
            log.debug("visibility_extended", visibility_seconds=timeout)

    async def _delete_batch(self, messages: Sequence[ReceivedMessage]) -> list[bool]:
        failed = {m.receipt_handle for m in await self._source.delete(messages)}
        return [message.receipt_handle not in failed for message in messages]

    async def _visibility_batch(self, changes: Sequence[tuple[ReceivedMessage, int]]) -> list[bool]:
        failed = {m.receipt_handle for m in await self._source.change_visibility(changes)}
        return [message.receipt_handle not in failed for message, _ in changes]

    async def _release(self, messages: Sequence[ReceivedMessage]) -> None:
        """Make messages visible again at once (work that will not be done here)."""
        if not messages:
            return
        failed = await self._source.change_visibility([(message, 0) for message in messages])
        if failed:
            log.warning("release_failed", count=len(failed))

    async def _drain(self) -> None:
        """Finish in-flight work within the drain timeout, then release what is left."""
        if self._tasks:
            log.info("draining", in_flight=self._in_flight_count())
            _, pending = await asyncio.wait(list(self._tasks), timeout=self._config.drain_timeout)
            unfinished = [
                message
                for task in pending
                for message in self._tasks.get(task, [])
                if message.receipt_handle not in self._settling
            ]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unfinished:
                log.warning("drain_timeout_releasing", count=len(unfinished))
                self._stats.released_on_shutdown += len(unfinished)
                await self._release(unfinished)
        await self._deletes.aclose()
        await self._visibility.aclose()


def _ordered_groups(batch: Sequence[ReceivedMessage]) -> list[list[ReceivedMessage]]:
    """Standard-queue messages stand alone; FIFO messages of one group stay together, in order."""
    groups: dict[str, list[ReceivedMessage]] = {}
    singles: list[list[ReceivedMessage]] = []
    for message in batch:
        if message.group_id is None:
            singles.append([message])
        else:
            groups.setdefault(message.group_id, []).append(message)
    return singles + list(groups.values())


async def _until_stopped(
    receive: Coroutine[Any, Any, Sequence[ReceivedMessage]], stop: asyncio.Event
) -> Sequence[ReceivedMessage] | None:
    """Await a receive unless stop is set first; then the long poll is abandoned (None)."""
    receiving = asyncio.ensure_future(receive)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if receiving.done():
        return receiving.result()
    receiving.cancel()
    await asyncio.gather(receiving, return_exceptions=True)
    return None
