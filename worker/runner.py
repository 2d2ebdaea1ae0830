"""The poll loop: bounded concurrency, batched acks, visibility heartbeats and graceful shutdown.

Only the runner turns pipeline outcomes into source calls: ``Ack`` deletes (batched),
``RetryLater`` releases with a delay that grows with the receive count, ``DeadLetter`` copies the
message to the dead-letter queue and then deletes it.

Every message received is held as one ``Lease`` until it is settled, and walks its stages in
order: received (held, perhaps waiting behind its FIFO group) → moderating → settling → done.
The runner keeps leases only while they are held, so nothing it keeps grows with the number of
messages handled. Three things walk the leases:

- the heartbeat: one task for the whole runner extends every lease not yet settling, every third
  of the visibility timeout, so FIFO messages waiting behind their group stay hidden too;
- settling: a lease first stops taking heartbeats, then waits for the extension in flight (if
  any) to land, and only then deletes or releases, so a late heartbeat never re-hides it;
- shutdown: whatever is still held when the drain ends, or arrives from a receive during
  shutdown, is released at once (visibility 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog

from worker import metrics
from worker.batching import MicroBatcher
from worker.core.errors import SourceError
from worker.loop_lag import watch_loop_lag
from worker.pipeline import Ack, DeadLetter, Outcome, RetryLater
from worker.ports import MessageSource, ReceivedMessage

log = structlog.get_logger(__name__)

RECEIVE_BATCH: Final = 10  # SQS's maximum per ReceiveMessage
# Receives outstanding at once: enough to keep a few hundred messages a second coming over a
# 20 ms round trip, few enough that a quiet queue sees only a handful of long polls.
MAX_RECEIVES: Final = 6


class ReceiveGate(Protocol):
    """What the runner asks before receiving (``EndpointGuard`` satisfies it)."""

    def receive_capacity(self) -> int:
        """How many more messages may be taken now (besides those not yet started)."""
        ...

    def idle_slots(self) -> int:
        """Endpoint slots free now with no message waiting for them."""
        ...

    def on_capacity(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` whenever ``receive_capacity()`` may have grown."""
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
    # On stop, how long a receive already in flight may still finish: a response on its way
    # carries messages that SQS has hidden, and they are released rather than stranded.
    receive_grace: float = 0.5
    # How long a visibility change (a release) waits for others to share its call.
    batch_linger: float = 0.02
    # How long a delete waits for others to share its call. A delete is not on any verdict's
    # path (it follows the publish), so it can wait for a full batch of ten at a modest rate;
    # the cost is a wider window in which a crash redelivers an already published message.
    delete_linger: float = 0.25
    loop_lag_interval: float = 0.5
    # After a failed receive, no new one for this long, doubling with each failure in a row
    # up to ``receive_backoff_max``; a receive that succeeds starts the count again.
    receive_backoff: float = 1.0
    receive_backoff_max: float = 30.0
    # With nothing happening, the poll loop looks at its room again this often: the endpoint's
    # limit moves by itself (every other change wakes the loop at once).
    recheck_interval: float = 1.0

    def release_delay(self, receive_count: int) -> int:
        """Seconds before a released message comes back: doubling per receive, capped."""
        exponent = max(receive_count - 1, 0)
        return int(min(self.release_delay_base * 2 ** min(exponent, 30), self.release_delay_max))

    @property
    def heartbeat_interval(self) -> float:
        """A third of the visibility timeout: a lease held just after a tick is extended by the
        next one, with two thirds of its timeout to spare for the call itself."""
        return self.visibility_timeout / 3


@dataclass
class RunStats:
    """Counters of what one run did, for logs, the demo and tests (nothing here grows with the
    messages handled)."""

    received: int = 0
    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    released_on_shutdown: int = 0


class Stage(enum.Enum):
    """Where a held message is in its life."""

    RECEIVED = "received"
    MODERATING = "moderating"
    SETTLING = "settling"
    DONE = "done"


@dataclass(eq=False, slots=True)
class Lease:
    """One received message while the runner holds it."""

    message: ReceivedMessage
    stage: Stage = Stage.RECEIVED
    # The heartbeat's extension covering this lease, while it is in flight.
    extension: asyncio.Future[None] | None = None
    # The delete or release that settles it, once started; drain waits for it.
    settlement: asyncio.Future[None] | None = None

    @property
    def wants_heartbeat(self) -> bool:
        return self.stage in (Stage.RECEIVED, Stage.MODERATING)


@dataclass(frozen=True, slots=True)
class Footprint:
    """What the runner is holding right now; all zero when it is idle."""

    leases: int
    group_tasks: int
    pending_deletes: int
    pending_visibility_changes: int


class Runner:
    """Receives messages, moderates up to ``max_in_flight`` at once and settles each one."""

    def __init__(
        self,
        source: MessageSource,
        handler: Handler,
        config: RunnerConfig,
        *,
        gate: ReceiveGate | None = None,
    ) -> None:
        self._source = source
        self._gate = gate
        self._handler = handler
        self._config = config
        self._stats = RunStats()
        self._leases: dict[str, Lease] = {}  # by receipt handle, only while held
        # Held leases not yet settling, and those of them not started: what counts as room.
        self._undecided = 0
        self._not_started = 0
        self._groups: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._polling_ended = asyncio.Event()
        self._wake = asyncio.Event()  # set when the poll loop should look again
        self._busy_queue = False  # the last receive brought all it asked for
        self._deletes = MicroBatcher(self._delete_batch, linger=config.delete_linger)
        self._visibility = MicroBatcher(self._visibility_batch, linger=config.batch_linger)
        self.last_poll = time.monotonic()  # the poll loop's progress, read by worker.health

    def held(self) -> dict[str, Stage]:
        """The stage of every message held now, by message id."""
        return {lease.message.message_id: lease.stage for lease in self._leases.values()}

    def footprint(self) -> Footprint:
        return Footprint(
            leases=len(self._leases),
            group_tasks=len(self._groups),
            pending_deletes=self._deletes.backlog,
            pending_visibility_changes=self._visibility.backlog,
        )

    async def run(self, stop: asyncio.Event) -> RunStats:
        """Work until ``stop`` is set (or, in burst mode, the queue is empty), then drain."""
        log.info("worker_started", max_in_flight=self._config.max_in_flight)
        self._stopping = stop
        background = [
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(watch_loop_lag(self._config.loop_lag_interval)),
        ]
        try:
            try:
                await self._poll(stop)
            finally:
                self._polling_ended.set()
                await self._drain()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        log.info(
            "worker_stopped",
            received=self._stats.received,
            acked=self._stats.acked,
            retried=self._stats.retried,
            dead_lettered=self._stats.dead_lettered,
            released_on_shutdown=self._stats.released_on_shutdown,
        )
        return self._stats

    # --- receiving ---

    async def _poll(self, stop: asyncio.Event) -> None:
        """Keep enough receives outstanding to fill the free room; on stop, let each one end.

        Each receive asks for at most the room not already asked for by the others, so the
        runner never holds more than it can start. None starts while the circuit is open (the
        gate probes meanwhile). A failed receive delays the next ones, with backoff.
        """
        polling = _Polling()
        wake = self._wake
        if self._gate is not None:
            self._gate.on_capacity(wake.set)
        stop_watch = asyncio.ensure_future(stop.wait())
        stop_watch.add_done_callback(lambda _: wake.set())
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                wake.clear()
                self.last_poll = time.monotonic()  # at least once a second; read by worker.health
                if not polling.outstanding and self._gate is not None:
                    await self._gate.wait_until_ready(stop)
                    if stop.is_set():
                        break
                if polling.queue_seems_empty and not polling.outstanding:
                    log.info("queue_empty_burst_done")
                    return
                if loop.time() >= polling.resume_at and not polling.queue_seems_empty:
                    self._launch_receives(polling, stop)
                await self._wait_for(polling)
                for task, asked in polling.take_done():
                    await self._received(task, asked, polling, stop)
        finally:
            stop_watch.cancel()
            # Each receive still out gets its grace (``_receive``); what it took goes back.
            for batch in await asyncio.gather(*polling.outstanding, return_exceptions=True):
                if not isinstance(batch, BaseException):
                    await self._release_received_on_stop(batch)

    def _launch_receives(self, polling: _Polling, stop: asyncio.Event) -> None:
        room, starving = self._room()
        room -= sum(polling.outstanding.values())
        # Only a queue that fills what was asked gets more than one receive: on a quiet queue
        # one long poll waits (and at stop only one is abandoned, which SQS could still hand a
        # message to after we stopped listening).
        most = MAX_RECEIVES if self._busy_queue else 1
        while room > 0 and len(polling.outstanding) < most:
            asked = min(RECEIVE_BATCH, room)
            if asked < RECEIVE_BATCH and (polling.outstanding or not starving):
                # Less than a batch only when the endpoint has a slot nothing waits for, and
                # nothing else is on its way: each receive is a call, and the room grows while
                # one is out, so waiting a little makes the next one ask for more.
                return
            receiving = asyncio.ensure_future(self._receive(asked, stop))
            receiving.add_done_callback(lambda _: self._wake.set())
            polling.outstanding[receiving] = asked
            room -= asked

    async def _received(
        self,
        task: asyncio.Future[Sequence[ReceivedMessage]],
        asked: int,
        polling: _Polling,
        stop: asyncio.Event,
    ) -> None:
        """Start what one receive brought (or release it, on stop); back off after a failure."""
        try:
            batch = task.result()
        except SourceError as exc:
            config = self._config
            delay = min(
                max(2 * polling.backoff, config.receive_backoff), config.receive_backoff_max
            )
            polling.backoff = delay
            polling.resume_at = asyncio.get_running_loop().time() + delay
            metrics.RECEIVE_ERRORS.inc()
            log.warning("receive_failed", error=str(exc), retry_in_seconds=delay)
            return
        polling.backoff = 0.0
        self._busy_queue = len(batch) >= asked
        if stop.is_set():
            await self._release_received_on_stop(batch)
            return
        if self._config.burst:
            polling.queue_seems_empty = not batch and not self._leases
        self._start(batch)

    def _room(self) -> tuple[int, bool]:
        """Messages that may be received now (the free slots, less those not started yet), and
        whether the endpoint has a slot that no message is waiting for.

        A message whose delete or release is under way no longer takes a slot: it is decided.
        """
        room = self._config.max_in_flight - self._undecided
        if self._gate is None:
            return room, True
        room = min(room, self._gate.receive_capacity() - self._not_started)
        return room, self._gate.idle_slots() > self._not_started

    async def _wait_for(self, polling: _Polling) -> None:
        """Until something changed: a receive ended, room was freed, or stop was requested.

        Re-checked now and then even with nothing happening: the limit moves by itself.
        """
        if any(task.done() for task in polling.outstanding):
            return
        timeout = self._config.recheck_interval
        backoff_left = polling.resume_at - asyncio.get_running_loop().time()
        if backoff_left > 0:
            timeout = min(timeout, backoff_left)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _release_received_on_stop(self, batch: Sequence[ReceivedMessage]) -> None:
        if batch:
            log.info("received_during_shutdown_released", count=len(batch))
            await self._release(self._hold(batch), on_shutdown=True)

    async def _receive(self, max_messages: int, stop: asyncio.Event) -> Sequence[ReceivedMessage]:
        """One receive that ends soon after ``stop``.

        A receive already under way when stop is set gets ``receive_grace`` seconds to finish,
        so messages it took are returned (and then released) rather than left hidden until their
        visibility timeout; after that it is cancelled and returns nothing.
        """
        receiving = asyncio.ensure_future(
            self._source.receive(max_messages, self._config.wait_seconds)
        )
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                await asyncio.wait({receiving}, timeout=self._config.receive_grace)
        finally:
            stopping.cancel()
            if not receiving.done():
                receiving.cancel()
                await asyncio.gather(receiving, return_exceptions=True)
        if receiving.cancelled():
            log.info("receive_abandoned_on_stop")
            return []
        return receiving.result()

    def _group_done(self, task: asyncio.Task[None]) -> None:
        self._groups.discard(task)
        self._wake.set()  # its leases are settled: room for more

    def _hold(self, batch: Sequence[ReceivedMessage]) -> list[Lease]:
        self._stats.received += len(batch)
        metrics.MESSAGES_RECEIVED.inc(len(batch))
        leases = [Lease(message) for message in batch]
        for lease in leases:
            self._leases[lease.message.receipt_handle] = lease
        self._undecided += len(leases)
        self._not_started += len(leases)
        return leases

    def _start(self, batch: Sequence[ReceivedMessage]) -> None:
        for group in _ordered_groups(self._hold(batch)):
            task = asyncio.create_task(self._process_group(group))
            self._groups.add(task)
            task.add_done_callback(self._group_done)

    # --- moderating ---

    async def _process_group(self, group: list[Lease]) -> None:
        """A FIFO group in order; after a failure, the rest of the group is released.

        On shutdown, messages of the group that have not started yet are released at once.
        """
        for index, lease in enumerate(group):
            if index > 0 and self._stopping.is_set():
                # Not before the last receive has ended: it could take them straight back.
                await self._polling_ended.wait()
                await self._release(group[index:], on_shutdown=True)
                return
            outcome = await self._process(lease)
            if isinstance(outcome, RetryLater) and lease.message.group_id is not None:
                rest = group[index + 1 :]
                if rest:
                    log.info("fifo_group_released", group_size=len(rest))
                    await self._release(rest)
                return

    async def _process(self, lease: Lease) -> Outcome:
        message = lease.message
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(
            message_id=message.message_id, receive_count=message.receive_count
        ):
            lease.stage = Stage.MODERATING
            self._not_started -= 1
            metrics.IN_FLIGHT.inc()
            try:
                outcome = await self._handle(message)
            finally:
                metrics.IN_FLIGHT.dec()
            # Shielded: a drain that cancels this task still lets the settling call complete.
            await asyncio.shield(
                self._settle_leases([lease], lambda: self._settle(message, outcome))
            )
            metrics.HANDLE_SECONDS.observe(time.monotonic() - started)
        return outcome

    async def _handle(self, message: ReceivedMessage) -> Outcome:
        try:
            return await self._handler.handle(message)
        except Exception as exc:
            log.exception("handler_failed", error_type=type(exc).__name__)
            return RetryLater(f"internal error: {type(exc).__name__}")

    # --- settling ---

    def _settle_leases(
        self, leases: Sequence[Lease], settle: Callable[[], Awaitable[None]]
    ) -> asyncio.Future[None]:
        """Stop the heartbeat for ``leases``, then run ``settle`` once their extensions landed.

        The stage changes before this returns, so no later heartbeat tick picks them up, and
        the room they took is free for the next receive.
        """
        for lease in leases:
            if lease.stage is Stage.RECEIVED:
                self._not_started -= 1
            if lease.wants_heartbeat:  # received or moderating: not counted as decided yet
                self._undecided -= 1
            lease.stage = Stage.SETTLING
        self._wake.set()
        settlement = asyncio.ensure_future(self._settling(leases, settle))
        for lease in leases:
            lease.settlement = settlement
        return settlement

    async def _settling(
        self, leases: Sequence[Lease], settle: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            extensions = {lease.extension for lease in leases if lease.extension is not None}
            if extensions:
                await asyncio.gather(*extensions, return_exceptions=True)
            await settle()
        finally:
            for lease in leases:
                lease.stage = Stage.DONE
                self._leases.pop(lease.message.receipt_handle, None)

    async def _settle(self, message: ReceivedMessage, outcome: Outcome) -> None:
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

    async def _delete_batch(self, messages: Sequence[ReceivedMessage]) -> list[bool]:
        failed = {m.receipt_handle for m in await self._source.delete(messages)}
        return [message.receipt_handle not in failed for message in messages]

    async def _visibility_batch(self, changes: Sequence[tuple[ReceivedMessage, int]]) -> list[bool]:
        failed = {m.receipt_handle for m in await self._source.change_visibility(changes)}
        return [message.receipt_handle not in failed for message, _ in changes]

    async def _release(self, leases: Sequence[Lease], *, on_shutdown: bool = False) -> None:
        """Make held messages visible again at once (work that will not be done here)."""
        if not leases:
            return
        if on_shutdown:
            self._stats.released_on_shutdown += len(leases)

        async def release() -> None:
            changes = [(lease.message, 0) for lease in leases]
            failed = await self._source.change_visibility(changes)
            if failed:
                log.warning("release_failed", count=len(failed))

        await asyncio.shield(self._settle_leases(leases, release))

    # --- heartbeat ---

    async def _heartbeat(self) -> None:
        """Every third of the visibility timeout, extend every lease not yet settling.

        Ticks keep a fixed cadence (a slow extension call does not push the next one later).
        """
        loop = asyncio.get_running_loop()
        interval = self._config.heartbeat_interval
        next_tick = loop.time() + interval
        while True:
            await asyncio.sleep(max(next_tick - loop.time(), 0.0))
            next_tick += interval
            due = [lease for lease in self._leases.values() if lease.wants_heartbeat]
            if not due:
                continue
            # Chosen and marked in one step (no await between), so a lease that starts settling
            # later sees this extension and waits for it.
            extension = asyncio.ensure_future(self._extend(due))
            for lease in due:
                lease.extension = extension
            await asyncio.gather(extension, return_exceptions=True)
            for lease in due:
                if lease.extension is extension:
                    lease.extension = None

    async def _extend(self, leases: Sequence[Lease]) -> None:
        timeout = self._config.visibility_timeout
        try:
            failed = await self._source.change_visibility(
                [(lease.message, timeout) for lease in leases]
            )
        except Exception as exc:  # noqa: BLE001 - a heartbeat failure must not end the heartbeat
            log.warning("visibility_extension_failed", error=str(exc), count=len(leases))
            return
        if failed:
            log.warning("visibility_extension_failed", count=len(failed))
        log.debug("visibility_extended", count=len(leases), visibility_seconds=timeout)

    # --- shutdown ---

    async def _drain(self) -> None:
        """Finish in-flight work within the drain timeout, then release what is left."""
        self._deletes.hurry()
        self._visibility.hurry()
        if self._groups:
            log.info("draining", in_flight=len(self._leases))
            _, pending = await asyncio.wait(self._groups, timeout=self._config.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        unsettled = [lease for lease in self._leases.values() if lease.settlement is None]
        if unsettled:
            log.warning("drain_timeout_releasing", count=len(unsettled))
            await self._release(unsettled, on_shutdown=True)
        # Settling started before the cancel (shielded) still completes.
        settling = {lease.settlement for lease in self._leases.values() if lease.settlement}
        await asyncio.gather(*settling, return_exceptions=True)
        await self._deletes.aclose()
        await self._visibility.aclose()


@dataclass
class _Polling:
    """The poll loop's state: the receives outstanding (each with what it asked for), and the
    backoff after failed ones."""

    outstanding: dict[asyncio.Future[Sequence[ReceivedMessage]], int] = field(default_factory=dict)
    backoff: float = 0.0  # the wait after the last failed receive; 0 once one succeeds
    resume_at: float = 0.0  # loop time before which no new receive starts
    queue_seems_empty: bool = False  # burst mode: an empty receive while nothing was held

    def take_done(self) -> list[tuple[asyncio.Future[Sequence[ReceivedMessage]], int]]:
        done = [(task, asked) for task, asked in self.outstanding.items() if task.done()]
        for task, _ in done:
            del self.outstanding[task]
        return done


def _ordered_groups(leases: Sequence[Lease]) -> list[list[Lease]]:
    """Standard-queue messages stand alone; FIFO messages of one group stay together, in order."""
    groups: dict[str, list[Lease]] = {}
    singles: list[list[Lease]] = []
    for lease in leases:
        group_id = lease.message.group_id
        if group_id is None:
            singles.append([lease])
        else:
            groups.setdefault(group_id, []).append(lease)
    return singles + list(groups.values())
