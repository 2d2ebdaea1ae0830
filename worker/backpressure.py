"""Protecting the model endpoint: a circuit breaker for outages, adaptive concurrency for overload.

``EndpointGuard`` wraps the real classifier (inside the retry loop, so it sees every attempt):

- Adaptive concurrency (``worker.concurrency.AdaptiveLimit``, whose docstring describes the
  algorithm). Each call holds a slot for exactly its request: a throttled call gives its slot
  back before it backs off. Its latency, when it succeeds, feeds the limit; a throttle lowers it.
  The runner receives no more messages than the free slots plus a prefetch (what keeps the slots
  busy through one receive, and that receive's batch), so it does not hoard messages it cannot
  start.
- Circuit breaker. After ``failure_threshold`` consecutive failures that say the endpoint is down
  or refusing us (5xx, not ready, timeouts, no connection, and rejections: not found, access
  denied, another 4xx, an unreadable answer) the circuit opens: calls fail at once with
  ``CircuitOpen``, the runner stops receiving, and one probe request is sent every
  ``probe_interval`` seconds. A usable answer closes it. Throttling does not count towards
  opening it (a throttling endpoint is up, and concurrency is what adapts to it), nor does
  "prompt too long" (the endpoint works; that message is too big). Every failed call is counted
  by kind in ``moderation_endpoint_failures``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from worker import metrics
from worker.concurrency import AdaptiveLimit, LimitPolicy, Permit
from worker.core.errors import (
    CircuitOpen,
    ClassifierError,
    EndpointFailure,
    EndpointThrottled,
)
from worker.core.models import Completion
from worker.ports import Classifier, ClassifierInFront
from worker.shutdown import sleep_unless_stopped, unless_stopped

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """Thresholds of the circuit breaker and the concurrency limiter."""

    max_in_flight: int = 64
    failure_threshold: int = 5
    probe_interval: float = 5.0
    limit: LimitPolicy = field(default_factory=LimitPolicy)


class CircuitBreaker:
    """Counts consecutive outage failures; open means "do not call, probe instead"."""

    def __init__(self, policy: GuardPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def record_success(self) -> None:
        self._failures = 0
        if self._opened_at is not None:
            log.info("circuit_closed", open_seconds=round(self._clock() - self._opened_at, 3))
            self._opened_at = None
            metrics.CIRCUIT_OPEN.set(0)

    def record_failure(self) -> None:
        self._failures += 1
        if self._opened_at is None and self._failures >= self._policy.failure_threshold:
            self._opened_at = self._clock()
            metrics.CIRCUIT_OPEN.set(1)
            metrics.CIRCUIT_OPENINGS.inc()
            log.error("circuit_opened", consecutive_failures=self._failures)


class EndpointGuard(ClassifierInFront):
    """A classifier that applies the circuit breaker and the adaptive limit to another one.

    The runner asks it for ``receive_capacity()`` and waits on ``wait_until_ready()`` before each
    receive; that wait is where the probes are sent while the circuit is open.
    """

    def __init__(
        self,
        inner: Classifier,
        policy: GuardPolicy,
        probe_prompt: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self._policy = policy
        self._probe_prompt = probe_prompt
        self.limit = AdaptiveLimit(policy.max_in_flight, policy.limit, clock=clock)
        self.circuit = CircuitBreaker(policy, clock=clock)

    async def classify(self, prompt: str) -> Completion:
        if self.circuit.is_open:
            raise CircuitOpen("the endpoint circuit is open; the message waits for a later try")
        permit = await self.limit.acquire()
        try:
            return await self._observed(self._inner.classify(prompt), permit)
        finally:
            self.limit.release()

    def receive_capacity(self) -> int:
        """How many more messages may be taken: none while open, else the limiter's free room."""
        return 0 if self.circuit.is_open else self.limit.receive_room()

    def idle_slots(self) -> int:
        """Slots free with no call waiting for them: none while open."""
        return 0 if self.circuit.is_open else self.limit.idle_slots()

    def on_capacity(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` whenever ``receive_capacity()`` may have grown."""
        self.limit.on_room(wake)

    async def wait_until_ready(self, stop: asyncio.Event) -> None:
        """Return when the circuit is closed (probing meanwhile) or ``stop`` is set."""
        while self.circuit.is_open and not stop.is_set():
            await sleep_unless_stopped(self._policy.probe_interval, stop)
            if stop.is_set():
                return
            try:
                # A hanging endpoint must not hold up shutdown until the request timeout.
                answered, _ = await unless_stopped(self._probe(), stop)
            except ClassifierError as exc:
                log.warning("circuit_probe_failed", error_type=type(exc).__name__)
            else:
                if answered:
                    log.info("circuit_probe_succeeded")
                else:
                    log.info("circuit_probe_abandoned_on_stop")

    async def _probe(self) -> Completion:
        return await self._observed(self._inner.classify(self._probe_prompt), None)

    async def _observed(self, call: Awaitable[Completion], permit: Permit | None) -> Completion:
        """Await ``call``; tell the circuit and the limit (when it holds a slot) how it went."""
        try:
            completion = await call
        except ClassifierError as exc:
            metrics.ENDPOINT_FAILURES.labels(kind=exc.kind).inc()
            if isinstance(exc, EndpointThrottled):
                if permit is not None:
                    self.limit.on_throttle(permit)
                self.circuit.record_success()  # it answered: the endpoint is up, only busy
            elif isinstance(exc, EndpointFailure):
                # Down, or refusing every request alike (not found, access denied, a 4xx for
                # our parameters, an answer we cannot read): the probe finds when it is fixed.
                self.circuit.record_failure()
            else:
                self.circuit.record_success()  # PromptTooLong: a working endpoint, a big prompt
            raise
        self.circuit.record_success()
        if permit is not None:
            self.limit.on_success(permit)
        return completion
