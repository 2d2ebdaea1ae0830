"""Coalescing single calls into batch calls: SQS deletes, visibility changes, SNS publishes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

from worker.ports import Publication, VerdictSink

MAX_PUBLISH_BATCH: Final = 10  # SNS PublishBatch's limit on entries
Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """Collects items submitted concurrently and hands them to ``flush`` in groups.

    A group is flushed when it reaches ``max_size`` or ``linger`` seconds after its first item,
    so a lone item waits at most ``linger`` (``flush_now`` sends what waits at once). Each
    ``submit`` returns that item's own result; ``flush`` returns one result per item, in order.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        max_size: int = 10,
        linger: float,
    ) -> None:
        self._flush = flush
        self._max_size = max_size
        self._linger = linger
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        # A caller that is cancelled still lets the batch complete for the others.
        return await asyncio.shield(self.add(item))

    def add(self, item: Item) -> asyncio.Future[Result]:
        """Queue ``item`` at once (no await); the future gets its result."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_size:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._start_flush)
        return future

    @property
    def backlog(self) -> int:
        """Items waiting for a flush plus flushes in progress (empty when idle)."""
        return len(self._pending) + len(self._flushes)

    def flush_now(self) -> None:
        """Send what is waiting now, without waiting for the linger."""
        self._start_flush()

    def hurry(self) -> None:
        """Flush what is pending now, and from now on every item without lingering (a drain
        should not wait for batches that will not fill)."""
        self._linger = 0.0
        self._start_flush()

    async def aclose(self) -> None:
        """Flush what is pending and wait for every flush in progress."""
        self._start_flush()
        while self._flushes:
            await asyncio.wait(self._flushes)  # a flush never raises: its waiters get the error

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            group, self._pending = (
                self._pending[: self._max_size],
                self._pending[self._max_size :],
            )
            task = asyncio.get_running_loop().create_task(self._run(group))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _run(self, group: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._flush([item for item, _ in group])
        except Exception as exc:  # noqa: BLE001 - handed to every waiter, who decides
            _fail(group, exc)
            return
        if len(results) != len(group):
            _fail(group, ValueError(f"a batch call answered {len(results)} of {len(group)} items"))
            return
        for index, (_, future) in enumerate(group):
            if not future.done():
                future.set_result(results[index])


def _fail(group: Sequence[tuple[object, asyncio.Future[Result]]], error: Exception) -> None:
    for _, future in group:
        if not future.done():
            future.set_exception(error)
            # Retrieved at once: a waiter that was cancelled leaves no "never retrieved".
            future.exception()


class BatchingSink:
    """A verdict sink that coalesces publishes made at about the same time into batch calls.

    Safe and unsafe verdicts go to different topics, and SNS takes ten entries per call to one
    topic: each topic gets its own batcher, so a call carries ten verdicts of one topic rather
    than a mixed ten that the inner sink would split in two (with one unsafe verdict in ten,
    mixing costs about twice the calls). A verdict waits at most its topic's linger for its
    batch: ``linger`` for safe verdicts, ``unsafe_linger`` (the same unless given) for unsafe
    ones, which are rarer, so their batches fill more slowly. With ``handling`` (the messages
    being moderated now, these publishes included), nothing waits once no other message is on
    its way to a publish: the last verdict of a burst sends every waiting batch, so a worker
    between bursts publishes at once and a busy one in batches of ten.

    Order: ``publish`` returns once the inner sink accepted (or refused) the verdict, so a caller
    that awaits it before handling the next message of a FIFO group keeps the group's order.
    """

    def __init__(
        self,
        inner: VerdictSink,
        *,
        linger: float,
        unsafe_linger: float | None = None,
        handling: Callable[[], int] | None = None,
    ) -> None:
        self._handling = handling
        self._outstanding = 0  # publications handed to a batcher and not yet answered
        lingers = {"safe": linger, "unsafe": linger if unsafe_linger is None else unsafe_linger}
        self._batchers: dict[str, MicroBatcher[Publication, Exception | None]] = {
            verdict: MicroBatcher(inner.publish, max_size=MAX_PUBLISH_BATCH, linger=wait)
            for verdict, wait in lingers.items()
        }

    async def publish(self, publications: Sequence[Publication]) -> list[Exception | None]:
        futures = []
        counted = 0
        try:
            for publication in publications:
                self._outstanding += 1  # before ``add``: it is here, not still coming
                counted += 1
                futures.append(self._batchers[publication.verdict.verdict].add(publication))
            if self._nothing_else_coming():
                for batcher in self._batchers.values():
                    batcher.flush_now()
            # Shielded: a caller that is cancelled still lets the batch complete for the others.
            return list(await asyncio.gather(*(asyncio.shield(f) for f in futures)))
        finally:
            self._outstanding -= counted

    def _nothing_else_coming(self) -> bool:
        """No message being moderated is still on its way to a publish."""
        return self._handling is not None and self._handling() <= self._outstanding

    async def aclose(self) -> None:
        await asyncio.gather(*(batcher.aclose() for batcher in self._batchers.values()))
