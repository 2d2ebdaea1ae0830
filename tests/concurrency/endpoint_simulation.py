"""A discrete-event simulation of a worker with a full backlog against an endpoint of capacity K.

Time is a manual clock that jumps from event to event, so the limiter's algorithm is run exactly
and in a few milliseconds: the same ``AdaptiveLimit`` the worker uses admits calls
(``try_acquire``), hears of successes and throttles, and releases slots. The endpoint serves
``capacity`` calls at once in ``service`` seconds; above that it throttles at once
(``queue_size=0``, a hard cap) or queues first come, first served. Each call also spends
``network`` seconds each way, with a little seeded jitter, as over a real connection. A throttled
call gives its slot back at once and competes for one again, as through ``RetryingClassifier``.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from support.clocks import ManualClock

from worker.concurrency import AdaptiveLimit, LimitPolicy, Permit


@dataclass
class SimulationResult:
    """What the endpoint saw after the warm-up, and the limit over the whole run."""

    capacity: int
    service: float
    measured_seconds: float
    successes: int = 0
    throttled: int = 0
    queue_wait_total: float = 0.0
    limits: list[tuple[float, int]] = field(default_factory=list)

    @property
    def goodput_share(self) -> float:
        """Successful calls per second over what the endpoint can serve."""
        return self.successes * self.service / (self.capacity * self.measured_seconds)

    @property
    def throttled_share(self) -> float:
        return self.throttled / max(self.successes + self.throttled, 1)

    @property
    def mean_queue_wait(self) -> float:
        return self.queue_wait_total / max(self.successes, 1)

    def limits_after(self, start: float) -> list[int]:
        return [limit for at, limit in self.limits if at >= start]


@dataclass
class _Call:
    permit: Permit
    arrived_at: float = 0.0


def simulate(
    *,
    capacity: int,
    queue_size: int,
    service: float = 0.05,
    network: float = 0.001,
    seconds: float = 60.0,
    warm_up: float = 5.0,
    max_in_flight: int = 64,
    policy: LimitPolicy | None = None,
    seed: int = 1,
) -> SimulationResult:
    """Run the worker against the endpoint for ``seconds`` of simulated time."""
    simulation = _Simulation(
        capacity=capacity,
        queue_size=queue_size,
        service=service,
        network=network,
        warm_up=warm_up,
        result=SimulationResult(capacity, service, seconds - warm_up),
        limit_of=lambda clock: AdaptiveLimit(
            max_in_flight,
            policy or LimitPolicy(),
            clock=clock,
            rng=random.Random(seed),  # noqa: S311 - jitter
        ),
        seed=seed,
    )
    return simulation.run(seconds)


class _Simulation:
    def __init__(
        self,
        *,
        capacity: int,
        queue_size: int,
        service: float,
        network: float,
        warm_up: float,
        result: SimulationResult,
        limit_of: Callable[[ManualClock], AdaptiveLimit],
        seed: int,
    ) -> None:
        self.clock = ManualClock()
        self.limit = limit_of(self.clock)
        self.capacity = capacity
        self.queue_size = queue_size
        self.service = service
        self.network = network
        self.warm_up = warm_up
        self.result = result
        self.rng = random.Random(seed)  # noqa: S311 - simulated network jitter
        self.events: list[tuple[float, int, str, _Call]] = []
        self.order = itertools.count()
        self.busy = 0
        self.queue: deque[_Call] = deque()

    def run(self, seconds: float) -> SimulationResult:
        handlers = {
            "arrive": self.arrive,
            "served": self.served,
            "answered": self.answered,
            "throttled": self.throttled,
        }
        self.start_calls()
        while self.events and self.events[0][0] <= seconds:
            self.clock.now, _, kind, call = heapq.heappop(self.events)
            handlers[kind](call)
            self.start_calls()
            limits = self.result.limits
            if not limits or limits[-1][1] != self.limit.current:
                limits.append((self.clock.now, self.limit.current))
        return self.result

    def at(self, delay: float, kind: str, call: _Call) -> None:
        heapq.heappush(self.events, (self.clock.now + delay, next(self.order), kind, call))

    def hop(self) -> float:
        return self.network * self.rng.uniform(0.5, 1.5)

    def measuring(self) -> bool:
        return self.clock.now >= self.warm_up

    def start_calls(self) -> None:
        while (permit := self.limit.try_acquire()) is not None:
            self.at(self.hop(), "arrive", _Call(permit))

    def arrive(self, call: _Call) -> None:
        call.arrived_at = self.clock.now
        if self.busy < self.capacity and not self.queue:
            self.begin_service(call)
        elif len(self.queue) < self.queue_size:
            self.queue.append(call)
        else:
            self.at(self.hop(), "throttled", call)

    def begin_service(self, call: _Call) -> None:
        self.busy += 1
        if self.measuring():
            self.result.queue_wait_total += self.clock.now - call.arrived_at
        self.at(self.service, "served", call)

    def served(self, call: _Call) -> None:
        self.busy -= 1
        if self.queue:
            self.begin_service(self.queue.popleft())
        self.at(self.hop(), "answered", call)

    def answered(self, call: _Call) -> None:
        self.limit.on_success(call.permit)
        self.limit.release()
        if self.measuring():
            self.result.successes += 1

    def throttled(self, call: _Call) -> None:
        # The throttled message competes for a slot again; the backlog is endless, so the
        # freed slot goes to the next call either way.
        self.limit.on_throttle(call.permit)
        self.limit.release()
        if self.measuring():
            self.result.throttled += 1
