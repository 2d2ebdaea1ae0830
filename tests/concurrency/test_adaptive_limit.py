"""The adaptive concurrency limit, driven by a manual clock: each signal alone, then converging.

The convergence tests run the limit against a simulated endpoint (``endpoint_simulation``):
a minute of simulated traffic in a few milliseconds, exactly repeatable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import random
from typing import Any

import pytest
from endpoint_simulation import simulate
from structlog.testing import capture_logs
from support.clocks import ManualClock

from worker.concurrency import AdaptiveLimit, LimitPolicy, Permit

SERVICE = 0.05


def limit_at(
    initial: int, *, max_in_flight: int = 64, rng: random.Random | None = None, **policy: Any
) -> tuple[AdaptiveLimit, ManualClock]:
    clock = ManualClock()
    # No baseline re-measurement unless a test is about it: it halves admission for a while.
    tuning = dataclasses.replace(LimitPolicy(initial=initial, baseline_interval=1e6), **policy)
    return AdaptiveLimit(max_in_flight, tuning, clock=clock, rng=rng), clock


def run_window(limit: AdaptiveLimit, clock: ManualClock, latency: float) -> None:
    """One window of calls, all slots busy, each answering after ``latency`` seconds."""
    permits = [limit.try_acquire() for _ in range(limit.current)]
    clock.now += latency
    for permit in permits:
        assert permit is not None
        limit.on_success(permit)
        limit.release()


def throttle_one(limit: AdaptiveLimit) -> Permit:
    permit = limit.try_acquire()
    assert permit is not None
    limit.on_throttle(permit)
    limit.release()
    return permit


def run_calls(limit: AdaptiveLimit, clock: ManualClock, at_once: int, calls: int) -> None:
    """``calls`` calls, ``at_once`` of them in flight together, each answering after SERVICE."""
    for _ in range(calls // at_once):
        permits = [limit.try_acquire() for _ in range(at_once)]
        clock.now += SERVICE
        for permit in permits:
            assert permit is not None
            limit.on_success(permit)
            limit.release()


def admitted_into_measurement(limit: AdaptiveLimit, clock: ManualClock, at: float) -> bool:
    """Whether a call admitted at ``at`` measures the baseline (it starts one that is due)."""
    clock.now = at
    permit = limit.try_acquire()
    assert permit is not None
    limit.release()
    return permit.measures_baseline


async def queue_callers(limit: AdaptiveLimit, count: int) -> list[asyncio.Task[Permit]]:
    """``count`` callers waiting for a slot, in this order."""
    callers = [asyncio.create_task(limit.acquire()) for _ in range(count)]
    await asyncio.sleep(0)
    assert limit.waiting == count
    return callers


# --- throttling ---


def test_a_throttle_lowers_the_limit_by_the_backoff_ratio() -> None:
    limit, _ = limit_at(20)
    with capture_logs() as logs:
        throttle_one(limit)
    assert limit.current == 18
    assert logs == [
        {"event": "concurrency_decreased", "log_level": "info", "limit_before": 20, "limit": 18}
    ]


def test_throttles_of_calls_admitted_before_a_decrease_count_once() -> None:
    limit, _ = limit_at(20)
    permits = [limit.try_acquire() for _ in range(20)]
    for permit in permits:
        assert permit is not None
        limit.on_throttle(permit)
    assert limit.current == 18


def test_a_throttle_of_a_call_admitted_after_the_decrease_counts_again() -> None:
    limit, _ = limit_at(20)
    throttle_one(limit)
    throttle_one(limit)
    assert limit.current == 16  # 20 * 0.9 * 0.9 = 16.2


def test_a_call_admitted_between_two_decreases_belongs_to_the_second_burst() -> None:
    limit, _ = limit_at(20)
    throttle_one(limit)
    between = limit.try_acquire()
    assert between is not None
    throttle_one(limit)  # admitted after the first decrease too: the second burst
    limit.on_throttle(between)
    assert limit.current == 16  # 20 * 0.9 * 0.9, not a third decrease


def test_the_limit_never_falls_below_the_minimum() -> None:
    limit, _ = limit_at(2)
    for _ in range(30):
        throttle_one(limit)
    assert limit.current == 1


def test_after_a_throttle_the_limit_comes_back_to_the_ceiling_slowly_then_probes_above() -> None:
    limit, clock = limit_at(20)
    run_window(limit, clock, SERVICE)  # the baseline
    ceiling = limit.current
    throttle_one(limit)
    for _ in range(10):  # half a second of no-queue windows
        run_window(limit, clock, SERVICE)
    assert limit.current < ceiling
    for _ in range(60):  # three more seconds
        run_window(limit, clock, SERVICE)
    assert limit.current > ceiling


def test_after_a_throttle_the_growth_cap_is_cubic_around_the_ceiling() -> None:
    """cap(t) = ceiling + growth * (t - k) ** 3: a second before k it is ``growth`` below the
    ceiling, a second after it ``growth`` above (a straight line would be 3 * growth)."""
    limit, clock = limit_at(20)
    throttle_one(limit)  # at 0 s: ceiling 20, limit 18
    policy = LimitPolicy()
    k = math.cbrt(20 * (1 - policy.backoff_ratio) / policy.growth)
    run_window(limit, clock, SERVICE)  # the baseline; every window after it wants to grow
    clock.now = k - 1 - SERVICE
    run_window(limit, clock, SERVICE)
    assert limit.current == 19  # capped at 19.6
    clock.now = k + 1 - SERVICE
    run_window(limit, clock, SERVICE)
    assert limit.current == 20  # capped at 20.4


# --- latency ---


def test_without_latency_growth_a_busy_limit_grows_to_max_in_flight_and_no_further() -> None:
    limit, clock = limit_at(4, max_in_flight=32)
    for _ in range(50):
        run_window(limit, clock, SERVICE)
    assert limit.current == 32


def test_latency_growth_lowers_the_limit() -> None:
    limit, clock = limit_at(20)
    run_window(limit, clock, SERVICE)  # the baseline
    for _ in range(10):
        run_window(limit, clock, 2 * SERVICE)
    assert limit.current < 15


def test_no_latency_is_known_before_a_window_ends() -> None:
    limit, clock = limit_at(4)
    run_calls(limit, clock, at_once=1, calls=2)  # a window is at least 3 calls
    assert (limit.baseline, limit.recent) == (None, None)


def test_calls_answered_within_one_clock_reading_read_as_no_queue() -> None:
    limit, clock = limit_at(20)
    run_window(limit, clock, 0.0)
    assert limit.recent == 0.0
    assert limit.current == 22  # gradient 1: 20 + 0.5 * sqrt(20)


@pytest.mark.parametrize(("in_flight", "grown"), [(9, False), (10, True)])
def test_the_limit_grows_only_after_a_window_that_used_half_of_it(
    in_flight: int, grown: bool
) -> None:
    limit, clock = limit_at(20)
    run_calls(limit, clock, at_once=in_flight, calls=2 * 20)
    assert (limit.current > 20) is grown


def test_an_idle_worker_does_not_raise_the_limit() -> None:
    """Calls answered quickly, but only 2 of 20 slots used: no evidence more would work."""
    limit, clock = limit_at(20)
    for _ in range(100):
        permits = [limit.try_acquire(), limit.try_acquire()]
        clock.now += SERVICE
        for permit in permits:
            assert permit is not None
            limit.on_success(permit)
            limit.release()
    assert limit.current == 20


def test_throttles_do_not_feed_the_latency_estimate() -> None:
    limit, clock = limit_at(4)
    run_window(limit, clock, SERVICE)
    permit = limit.try_acquire()
    assert permit is not None
    clock.now += 100 * SERVICE  # a slow refusal, if it counted, would look like a huge queue
    limit.on_throttle(permit)
    limit.release()
    run_window(limit, clock, SERVICE)
    assert limit.recent == pytest.approx(SERVICE)


def test_the_baseline_is_remeasured_at_half_the_limit_every_interval() -> None:
    limit, clock = limit_at(16, max_in_flight=16, baseline_interval=10.0, baseline_samples=5)
    run_window(limit, clock, SERVICE)
    assert limit.baseline == pytest.approx(SERVICE)
    clock.now += 12.0  # past the interval (jittered by at most 10 %)
    admitted = list(itertools.takewhile(bool, (limit.try_acquire() for _ in range(16))))
    assert len(admitted) == 8
    assert limit.measuring_baseline
    clock.now += 2 * SERVICE  # the model became slower
    for permit in admitted:
        assert permit is not None
        limit.on_success(permit)
        limit.release()
    assert not limit.measuring_baseline
    assert limit.baseline == pytest.approx(2 * SERVICE)


def test_a_remeasurement_ends_with_its_last_sample() -> None:
    limit, clock = limit_at(16, max_in_flight=16, baseline_interval=10.0, baseline_samples=5)
    run_window(limit, clock, SERVICE)
    clock.now += 12.0
    admitted = [limit.try_acquire() for _ in range(8)]
    clock.now += SERVICE
    for answered, permit in enumerate(admitted, start=1):
        assert permit is not None
        limit.on_success(permit)
        assert limit.measuring_baseline is (answered < 5)


def test_a_remeasurement_of_an_odd_limit_admits_the_half_rounded_down() -> None:
    limit, clock = limit_at(15, max_in_flight=15, baseline_interval=10.0)
    run_window(limit, clock, SERVICE)
    clock.now += 12.0
    admitted = list(itertools.takewhile(bool, (limit.try_acquire() for _ in range(15))))
    assert len(admitted) == 7
    assert limit.measuring_baseline


def test_a_remeasurement_due_now_starts_with_the_next_call() -> None:
    """With no interval the next one is due the moment the first window ends."""
    limit, clock = limit_at(4, baseline_interval=0.0)
    run_window(limit, clock, SERVICE)
    assert admitted_into_measurement(limit, clock, at=clock.now)


def test_the_first_remeasurement_starts_a_jittered_tenth_interval_after_the_first_window() -> None:
    started_by_the_middle = []
    for seed in range(200):
        limit, clock = limit_at(
            4,
            baseline_interval=10.0,
            rng=random.Random(seed),  # noqa: S311 - jitter
        )
        run_window(limit, clock, SERVICE)
        ended = clock.now
        assert not admitted_into_measurement(limit, clock, at=ended + 0.89)
        started_by_the_middle.append(admitted_into_measurement(limit, clock, at=ended + 1.0))
        assert admitted_into_measurement(limit, clock, at=ended + 1.1)
    # Jittered over 0.9 to 1.1 s, so that workers started together do not measure in step.
    assert any(started_by_the_middle)
    assert not all(started_by_the_middle)


def test_each_later_remeasurement_starts_within_a_tenth_of_the_interval_after_the_last() -> None:
    started_by_the_middle = []
    for seed in range(200):
        limit, clock = limit_at(
            16,
            max_in_flight=16,
            baseline_interval=10.0,
            baseline_samples=5,
            rng=random.Random(seed),  # noqa: S311 - jitter
        )
        run_window(limit, clock, SERVICE)
        clock.now += 1.1
        samples = [limit.try_acquire() for _ in range(5)]
        clock.now += SERVICE
        for permit in samples:
            assert permit is not None
            assert permit.measures_baseline
            limit.on_success(permit)
            limit.release()
        ended = clock.now
        assert not admitted_into_measurement(limit, clock, at=ended + 8.99)
        started_by_the_middle.append(admitted_into_measurement(limit, clock, at=ended + 10.0))
        assert admitted_into_measurement(limit, clock, at=ended + 11.0)
    assert any(started_by_the_middle)
    assert not all(started_by_the_middle)


# --- slots ---


def test_receive_room_is_the_limit_and_a_prefetch_less_the_calls_running() -> None:
    limit, _ = limit_at(8)
    # Prefetch: a batch that keeps the slots busy through a receive, and the receive's batch.
    assert limit.prefetch == 10 + 10
    assert limit.receive_room() == 8 + 20
    for _ in range(3):
        limit.try_acquire()
    assert limit.receive_room() == 25


def test_a_large_limit_prefetches_half_of_it_besides_a_batch() -> None:
    limit, _ = limit_at(40)
    assert limit.prefetch == 20 + 10


async def test_calls_waiting_for_a_slot_take_receive_room_as_running_ones_do() -> None:
    limit, _ = limit_at(1)
    limit.try_acquire()
    await queue_callers(limit, 3)
    assert limit.receive_room() == 1 + 20 - 1 - 3


async def test_receive_room_is_zero_when_a_decrease_leaves_more_calls_than_room() -> None:
    limit, _ = limit_at(20)
    running = [limit.try_acquire() for _ in range(20)]
    await queue_callers(limit, 20)
    assert running[0] is not None
    limit.on_throttle(running[0])  # 18 + 20 of room, 40 calls
    assert limit.receive_room() == 0


def test_idle_slots_are_the_limit_less_the_calls_running() -> None:
    limit, _ = limit_at(4)
    for _ in range(3):
        limit.try_acquire()
    assert limit.idle_slots() == 1


async def test_no_slot_is_idle_while_calls_wait_for_one() -> None:
    limit, _ = limit_at(1)
    limit.try_acquire()
    await queue_callers(limit, 2)
    assert limit.idle_slots() == 0


async def test_waiting_callers_get_freed_slots_in_arrival_order() -> None:
    limit, _ = limit_at(1)
    await limit.acquire()
    order: list[str] = []

    async def caller(name: str) -> None:
        await limit.acquire()
        order.append(name)
        limit.release()

    waiting = [asyncio.create_task(caller(name)) for name in ("first", "second")]
    await asyncio.sleep(0)
    assert limit.waiting == 2
    limit.release()
    await asyncio.gather(*waiting)
    assert order == ["first", "second"]
    assert limit.in_use == 0


async def test_a_freed_slot_admits_one_waiting_caller_only() -> None:
    limit, _ = limit_at(1)
    await limit.acquire()
    await queue_callers(limit, 2)
    limit.release()
    assert (limit.in_use, limit.waiting) == (1, 1)


async def test_a_waiting_callers_permit_is_stamped_when_the_slot_is_handed_over() -> None:
    """Latency runs from admission: the time spent waiting for a slot is not the endpoint's."""
    limit, clock = limit_at(1)
    await limit.acquire()
    (caller,) = await queue_callers(limit, 1)
    clock.now = 5.0
    limit.release()
    permit = await caller
    assert permit.admitted_at == 5.0


async def test_a_freed_slot_passes_over_a_cancelled_caller_to_the_next_one() -> None:
    limit, _ = limit_at(1)
    await limit.acquire()
    cancelled, next_caller = await queue_callers(limit, 2)
    cancelled.cancel()  # its turn is cancelled at once; its task has not run yet
    limit.release()
    assert (limit.in_use, limit.waiting) == (1, 0)
    await asyncio.gather(cancelled, return_exceptions=True)
    assert isinstance(await next_caller, Permit)


async def test_a_caller_cancelled_while_waiting_leaves_no_slot_taken() -> None:
    limit, _ = limit_at(1)
    await limit.acquire()
    waiting = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    limit.release()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    assert (limit.in_use, limit.waiting) == (0, 0)


async def test_a_caller_cancelled_while_waiting_leaves_the_queue_at_once() -> None:
    limit, _ = limit_at(1)
    await limit.acquire()
    (waiting,) = await queue_callers(limit, 1)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    assert limit.waiting == 0


# --- converging on the capacity (simulated endpoint: 50 ms a call, 1 ms each way) ---


def test_against_a_hard_cap_of_8_goodput_is_95_percent_with_few_throttles() -> None:
    result = simulate(capacity=8, queue_size=0)
    assert result.goodput_share >= 0.95
    assert result.throttled_share <= 0.02
    assert set(result.limits_after(5.0)) <= {8, 9}


def test_against_a_queueing_endpoint_of_8_goodput_is_95_percent_with_a_short_queue() -> None:
    result = simulate(capacity=8, queue_size=1024)
    assert result.goodput_share >= 0.95
    assert result.mean_queue_wait <= 0.025
    assert result.throttled == 0


@pytest.mark.parametrize("queue_size", [0, 1024])
@pytest.mark.parametrize("capacity", [2, 32])
def test_the_limit_settles_near_other_capacities(capacity: int, queue_size: int) -> None:
    result = simulate(capacity=capacity, queue_size=queue_size, service=0.02)
    settled = result.limits_after(10.0)
    assert settled
    assert capacity * 0.85 <= min(settled)
    assert max(settled) <= capacity * 1.5 + 2
