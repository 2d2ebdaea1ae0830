"""In-memory fakes of the message source and the verdict sink, with the ports' real interfaces.

They behave like SQS and SNS where the pipeline and runner can tell the difference (receive counts,
visibility, fresh receipt handles, per-message failures returned rather than raised) and record
what happened so tests can assert on it. ``tests/adapters`` runs the same contract tests against
these fakes and the real adapters on moto.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

from worker.core.errors import SinkError, SourceError
from worker.ports import Publication, ReceivedMessage, TraceContext

SourceOperation = Literal["receive", "delete", "change_visibility", "dead_letter"]
DEFAULT_VISIBILITY_TIMEOUT: Final = 30.0
MAX_RECEIVE: Final = 10  # as on SQS


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message copied to the fake's dead-letter queue."""

    message_id: str
    body: str
    error_code: str
    detail: str
    trace: TraceContext


@dataclass(frozen=True, slots=True)
class SourceCall:
    """One delete or visibility change as the fake applied it, for one receipt handle.

    ``lapsed`` is true when the message's visibility had already run out (it could have been
    received by someone else) or it had been released: a heartbeat that came too late, or a
    change that re-hid a message already let go.
    """

    operation: Literal["delete", "change_visibility"]
    receipt_handle: str
    seconds: int | None
    lapsed: bool


@dataclass(slots=True)
class _Stored:
    message_id: str
    body: str
    group_id: str | None
    trace: TraceContext
    receive_count: int = 0
    visible_at: float = 0.0
    deleted: bool = False
    receipt_handles: list[str] = field(default_factory=list)


class InMemorySource:
    """A queue in memory implementing ``MessageSource``.

    Receiving makes a message invisible for ``visibility_timeout`` seconds of ``clock`` time and
    gives it a fresh receipt handle (any handle it ever had still deletes it, as on SQS). FIFO
    group ordering is not modelled. ``dead_letter`` records the detail as given (the SQS adapter
    truncates it to fit).

    ``fail_next`` makes the next calls of an operation fail the way the real adapter fails:
    receive and dead_letter raise ``SourceError``; delete and change_visibility report every
    message of the call as failed.
    """

    def __init__(
        self,
        *,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        dead_letter_queue: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._visibility_timeout = visibility_timeout
        self._has_dead_letter_queue = dead_letter_queue
        self._clock = clock
        self._messages: list[_Stored] = []
        self._by_handle: dict[str, _Stored] = {}
        self._ids = itertools.count(1)
        self._arrived = asyncio.Event()
        self._failures: Counter[SourceOperation] = Counter()
        self.dead_letters: list[DeadLetter] = []
        self.visibility_changes: list[tuple[str, int]] = []
        self.calls: list[SourceCall] = []

    # --- test controls and inspection ---

    def send(
        self, body: str, *, group_id: str | None = None, trace: TraceContext | None = None
    ) -> str:
        """Enqueue a message; returns its message id."""
        message_id = f"m-{next(self._ids)}"
        self._messages.append(_Stored(message_id, body, group_id, trace or TraceContext()))
        self._arrived.set()
        return message_id

    def fail_next(self, operation: SourceOperation, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` fail."""
        self._failures[operation] += times

    def is_deleted(self, message_id: str) -> bool:
        return any(m.deleted for m in self._messages if m.message_id == message_id)

    def remaining(self) -> int:
        """Messages not deleted yet, visible or in flight."""
        return sum(1 for message in self._messages if not message.deleted)

    def calls_for(self, receipt_handle: str) -> list[SourceCall]:
        """The deletes and visibility changes applied with one receipt handle, in order."""
        return [call for call in self.calls if call.receipt_handle == receipt_handle]

    def lapsed_calls(self) -> list[SourceCall]:
        """Calls that landed on a message no longer hidden (see ``SourceCall.lapsed``)."""
        return [call for call in self.calls if call.lapsed]

    def receive_counts(self) -> dict[str, int]:
        """How many times each message was received, by message id."""
        return {m.message_id: m.receive_count for m in self._messages}

    def in_flight(self) -> list[str]:
        """Ids of messages received and still invisible."""
        now = self._clock()
        return [m.message_id for m in self._messages if not m.deleted and m.visible_at > now]

    # --- MessageSource ---

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        if self._take_failure("receive"):
            raise SourceError("SQS ReceiveMessage failed: injected failure")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_seconds, 0)
        while True:
            batch = self._take_visible(max(1, min(max_messages, MAX_RECEIVE)))
            remaining = deadline - loop.time()
            if batch or remaining <= 0:
                return batch
            self._arrived.clear()
            # Woken by a send or a release, or when the next in-flight message times out.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, self._until_next_visible())):
                    await self._arrived.wait()

    async def delete(self, messages: Sequence[ReceivedMessage]) -> Sequence[ReceivedMessage]:
        if self._take_failure("delete"):
            return list(messages)
        failed = []
        for message in messages:
            stored = self._by_handle.get(message.receipt_handle)
            if stored is None:
                failed.append(message)
            else:
                lapsed = stored.visible_at <= self._clock() and not stored.deleted
                self.calls.append(SourceCall("delete", message.receipt_handle, None, lapsed))
                stored.deleted = True
        return failed

    async def change_visibility(
        self, changes: Sequence[tuple[ReceivedMessage, int]]
    ) -> Sequence[ReceivedMessage]:
        if self._take_failure("change_visibility"):
            return [message for message, _ in changes]
        failed = []
        for message, seconds in changes:
            stored = self._by_handle.get(message.receipt_handle)
            if stored is None or stored.deleted:
                failed.append(message)
                continue
            lapsed = stored.visible_at <= self._clock()
            self.calls.append(
                SourceCall("change_visibility", message.receipt_handle, seconds, lapsed)
            )
            stored.visible_at = self._clock() + seconds
            self.visibility_changes.append((message.message_id, seconds))
            if seconds == 0:
                self._arrived.set()
        return failed

    async def dead_letter(self, message: ReceivedMessage, error_code: str, detail: str) -> bool:
        if not self._has_dead_letter_queue:
            return False
        if self._take_failure("dead_letter"):
            raise SourceError("SQS SendMessage (dead-letter queue) failed: injected failure")
        self.dead_letters.append(
            DeadLetter(message.message_id, message.body, error_code, detail, message.trace)
        )
        return True

    # --- internals ---

    def _take_failure(self, operation: SourceOperation) -> bool:
        if self._failures[operation] <= 0:
            return False
        self._failures[operation] -= 1
        return True

    def _take_visible(self, limit: int) -> list[ReceivedMessage]:
        now = self._clock()
        visible = [m for m in self._messages if not m.deleted and m.visible_at <= now][:limit]
        received_at = datetime.now(UTC)
        batch = []
        for stored in visible:
            stored.receive_count += 1
            stored.visible_at = now + self._visibility_timeout
            handle = f"{stored.message_id}/{stored.receive_count}"
            stored.receipt_handles.append(handle)
            self._by_handle[handle] = stored
            batch.append(
                ReceivedMessage(
                    message_id=stored.message_id,
                    receipt_handle=handle,
                    body=stored.body,
                    receive_count=stored.receive_count,
                    received_at=received_at,
                    group_id=stored.group_id,
                    trace=stored.trace,
                )
            )
        return batch

    def _until_next_visible(self) -> float:
        now = self._clock()
        waiting = [m.visible_at - now for m in self._messages if not m.deleted]
        return max(min(waiting, default=float("inf")), 0.0)


class InMemorySink:
    """Topics in memory implementing ``VerdictSink``; unsafe verdicts go to ``unsafe_topic``.

    ``fail_next(n)`` makes the next ``n`` publications (not calls) fail with ``SinkError`` in their
    result slot, as a per-entry rejection by SNS would. Unlike a FIFO topic it does not drop a
    repeated verdict id: every publication is recorded, so tests can see at-least-once delivery.
    """

    def __init__(self, safe_topic: str = "safe", unsafe_topic: str = "unsafe") -> None:
        self.safe_topic = safe_topic
        self.unsafe_topic = unsafe_topic
        self.published: dict[str, list[Publication]] = {safe_topic: [], unsafe_topic: []}
        self.calls = 0
        self._failures = 0

    def fail_next(self, publications: int = 1) -> None:
        self._failures += publications

    def topic_for(self, publication: Publication) -> str:
        return self.unsafe_topic if publication.verdict.verdict == "unsafe" else self.safe_topic

    @property
    def all_published(self) -> list[Publication]:
        return [publication for topic in self.published.values() for publication in topic]

    async def publish(self, publications: Sequence[Publication]) -> Sequence[Exception | None]:
        self.calls += 1
        results: list[Exception | None] = []
        for publication in publications:
            if self._failures > 0:
                self._failures -= 1
                results.append(SinkError("SNS Publish failed: injected failure"))
                continue
            self.published[self.topic_for(publication)].append(publication)
            results.append(None)
        return results
