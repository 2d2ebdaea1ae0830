"""Adaptive concurrency: how many calls the endpoint gets at once, from throttles and latency.

The limit reacts to two signals, the way TCP Vegas/CUBIC, Netflix's concurrency-limits (Gradient2)
and Envoy's adaptive-concurrency filter do:

- **Latency growth** (a queueing endpoint: TGI, vLLM). Only successful calls are measured, from
  the moment the call was admitted to its answer. ``baseline`` is the latency without a queue,
  measured at a low concurrency: the first window (at the low initial limit), then the
  periodic re-measurement below (the first one after a tenth of the interval), and lowered
  whenever a whole window is faster. It is a mean, like ``recent``, so that network jitter
  alone does not read as a queue. ``recent`` is the mean of the last window of
  calls (a window is as many calls as the limit, about one round trip). Once per window::

      gradient  = clamp(baseline / recent, 0.5, 1.0)
      allowance = 0.5 * sqrt(limit)          # a small queue, so the server never idles
      target    = limit * gradient + allowance

  A target above the limit is taken at once (growth of ``allowance`` per round trip, and only
  while at least half the limit is in use, so an idle worker does not inflate it); a target
  below is approached by ``smoothing`` (20 %) per window, so one slow window does not collapse
  it. Against a server of capacity K the limit settles where ``limit - K`` is about the
  allowance: a standing queue of one or two calls, not hundreds.
- **Throttling** (a hard cap: calls above K are refused at once; latency never grows). The
  first throttle of a call admitted since the last decrease multiplies the limit by
  ``backoff_ratio`` (0.9) and remembers the limit where it happened (the *ceiling*); throttles
  of calls admitted before that decrease are the same burst and do not count again. After a
  decrease the limit may only grow along CUBIC's curve around the ceiling::

      cap(t) = ceiling + growth * (t - k)**3,   k = cbrt(ceiling * (1 - backoff_ratio) / growth)

  flat near the ceiling (it comes back to it after ``k`` seconds, about 1.3 s for a ceiling of
  9, then probes above it slowly), and faster the longer nothing throttles, so capacity that
  appears (another worker left) is found within seconds. The limit therefore spends most of
  its time just under K, with about one throttle per probe.
- **Baseline re-measurement.** A baseline measured under a standing queue would make that queue
  look normal, and the limit would creep up. Every ``baseline_interval`` seconds (jittered) the
  limit is halved until ``baseline_samples`` calls admitted at that level have answered; their
  mean latency is the new baseline (so a model that became slower is also learnt), then the
  limit is restored. That costs half the throughput for a round trip or two every 10 s.

The limit starts at ``initial`` (4) and is never above ``max_in_flight`` nor below
``min_limit``. ``receive_room()`` is how many more messages the runner may take: the limit plus a
prefetch, minus the calls running or waiting for a slot. The prefetch lets a receive ask for a
full batch (ten: fewer SQS calls) while the messages already waiting keep every slot busy
until it answers (a batch, or half the limit if more): a slot that frees with nothing waiting
idles for a whole receive round trip.
This module does no I/O; the clock is injected, so the tests drive it with a manual clock.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from worker import metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """The tuning of ``AdaptiveLimit`` (see the module docstring for what each one does)."""

    initial: int = 4
    min_limit: int = 1
    smoothing: float = 0.2
    min_gradient: float = 0.5
    allowance_factor: float = 0.5
    backoff_ratio: float = 0.9
    growth: float = 0.4
    baseline_interval: float = 10.0
    baseline_samples: int = 5
    min_window: int = 3
    receive_batch: int = 10
    prefetch_share: float = 0.5


@dataclass(frozen=True, slots=True)
class Permit:
    """One admitted call: when it was admitted, under which decrease, and whether it measures
    the baseline."""

    admitted_at: float
    epoch: int
    measures_baseline: bool


class AdaptiveLimit:
    """The limit on concurrent endpoint calls, and the slots it hands out (first come, first
    served)."""

    def __init__(
        self,
        max_in_flight: int,
        policy: LimitPolicy = LimitPolicy(),
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._policy = policy
        self._max = float(max_in_flight)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._limit = self._clamp(float(policy.initial))
        self._in_use = 0
        self._waiters: deque[asyncio.Future[Permit]] = deque()
        self._on_room: Callable[[], None] | None = None
        # Latency estimation (successful calls only).
        self.baseline: float | None = None
        self.recent: float | None = None
        self._window_sum = 0.0
        self._window_count = 0
        self._window_peak_use = 0
        # Throttling.
        self._epoch = 0
        self._ceiling: float | None = None
        self._decreased_at = 0.0
        # Baseline re-measurement.
        self._next_baseline_at: float | None = None
        self._probe_samples: list[float] | None = None
        self._publish()

    # --- what the guard and the runner read ---

    @property
    def current(self) -> int:
        """The limit now, as a number of calls."""
        return max(self._policy.min_limit, math.floor(self._limit))

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def measuring_baseline(self) -> bool:
        return self._probe_samples is not None

    def receive_room(self) -> int:
        """How many more messages the runner may take: limit + prefetch - running - waiting."""
        return max(0, self.current + self.prefetch - self._in_use - len(self._waiters))

    @property
    def prefetch(self) -> int:
        """Messages that may wait for a slot: enough that a full receive fits while the ones
        already waiting keep every slot busy through its round trip (a batch, or half the limit
        if that is more), plus that receive's batch."""
        policy = self._policy
        covering = max(policy.receive_batch, math.ceil(self.current * policy.prefetch_share))
        return covering + policy.receive_batch

    def idle_slots(self) -> int:
        """Slots free now that no waiting call is about to take."""
        return max(0, self.current - self._in_use - len(self._waiters))

    def on_room(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` whenever ``receive_room()`` may have grown."""
        self._on_room = wake

    # --- slots ---

    def try_acquire(self) -> Permit | None:
        """A slot now, or None when every slot is taken (or others are already waiting)."""
        if self._waiters or self._in_use >= self._admitting():
            return None
        self._in_use += 1
        self._window_peak_use = max(self._window_peak_use, self._in_use)
        return self._permit()

    async def acquire(self) -> Permit:
        """Wait for a slot, in arrival order."""
        permit = self.try_acquire()
        if permit is not None:
            return permit
        turn: asyncio.Future[Permit] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # the slot was handed over just as the caller went away
            elif turn in self._waiters:
                self._waiters.remove(turn)
            raise

    def release(self) -> None:
        self._in_use -= 1
        self._admit_waiters()
        if self._on_room is not None:
            self._on_room()

    # --- signals ---

    def on_success(self, permit: Permit) -> None:
        """A usable answer: its latency feeds the estimator; a full window updates the limit."""
        latency = max(self._clock() - permit.admitted_at, 0.0)
        if permit.measures_baseline and self._probe_samples is not None:
            self._probe_samples.append(latency)
            if len(self._probe_samples) >= self._policy.baseline_samples:
                self._end_baseline_measurement()
            return
        self._window_sum += latency
        self._window_count += 1
        if self._window_count >= max(self._policy.min_window, self.current):
            self._end_window()

    def on_throttle(self, permit: Permit) -> None:
        """The endpoint refused a call as too busy: decrease once per burst."""
        if permit.epoch < self._epoch:
            return  # admitted before the last decrease: the same burst
        before = self.current
        self._epoch += 1
        self._ceiling = self._limit
        self._decreased_at = self._clock()
        self._limit = self._clamp(self._limit * self._policy.backoff_ratio)
        self._reset_window()
        self._publish()
        log.info("concurrency_decreased", limit_before=before, limit=self.current)

    # --- internals ---

    def _admitting(self) -> int:
        if self._probe_samples is not None:
            return max(self._policy.min_limit, self.current // 2)
        return self.current

    def _permit(self) -> Permit:
        now = self._clock()
        if (
            self._probe_samples is None
            and self._next_baseline_at is not None
            and now >= self._next_baseline_at
        ):
            self._probe_samples = []
            self._reset_window()
        return Permit(now, self._epoch, measures_baseline=self._probe_samples is not None)

    def _admit_waiters(self) -> None:
        while self._waiters and self._in_use < self._admitting():
            turn = self._waiters.popleft()
            if turn.done():
                continue
            self._in_use += 1
            self._window_peak_use = max(self._window_peak_use, self._in_use)
            turn.set_result(self._permit())

    def _end_baseline_measurement(self) -> None:
        assert self._probe_samples is not None  # noqa: S101 - only called while measuring
        self.baseline = statistics.fmean(self._probe_samples)
        self._probe_samples = None
        self._next_baseline_at = self._clock() + self._jittered_interval()
        metrics.LATENCY_BASELINE.set(self.baseline)
        self._admit_waiters()
        if self._on_room is not None:
            self._on_room()

    def _end_window(self) -> None:
        policy = self._policy
        recent = self._window_sum / self._window_count
        busy = self._window_peak_use * 2 >= self.current
        self._reset_window()
        self.recent = recent
        if self.baseline is None or recent < self.baseline:
            # The first window ran at the low initial limit: the best guess until measured (and
            # soon, since start-up makes it slow). A faster window shows the guess was high.
            if self.baseline is None:
                self._next_baseline_at = self._clock() + self._jittered_interval() / 10
            self.baseline = recent
            metrics.LATENCY_BASELINE.set(recent)
        # At most 1 with no clamp: the baseline is never above ``recent`` here (a faster window
        # has just lowered it). A window answered within one clock reading is no queue either.
        gradient = max(policy.min_gradient, self.baseline / recent) if recent > 0 else 1.0
        target = self._limit * gradient + policy.allowance_factor * math.sqrt(self._limit)
        if target < self._limit:
            limit = self._limit + policy.smoothing * (target - self._limit)
        elif busy:
            # The cap only restrains growth; it never lowers the limit by itself.
            limit = max(self._limit, min(target, self._growth_cap()))
        else:
            limit = self._limit
        before = self.current
        self._limit = self._clamp(limit)
        metrics.LATENCY_RECENT.set(recent)
        metrics.LATENCY_GRADIENT.set(gradient)
        self._publish()
        if self.current > before:
            self._admit_waiters()
            if self._on_room is not None:
                self._on_room()

    def _growth_cap(self) -> float:
        """CUBIC's curve around the last ceiling; no cap before the first throttle."""
        if self._ceiling is None:
            return math.inf
        policy = self._policy
        since = self._clock() - self._decreased_at
        k = math.cbrt(self._ceiling * (1 - policy.backoff_ratio) / policy.growth)
        return self._ceiling + policy.growth * (since - k) ** 3

    def _reset_window(self) -> None:
        self._window_sum = 0.0
        self._window_count = 0
        self._window_peak_use = self._in_use

    def _jittered_interval(self) -> float:
        return self._policy.baseline_interval * self._rng.uniform(0.9, 1.1)

    def _clamp(self, limit: float) -> float:
        return min(self._max, max(float(self._policy.min_limit), limit))

    def _publish(self) -> None:
        metrics.CONCURRENCY_LIMIT.set(self.current)
