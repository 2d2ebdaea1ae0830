"""Retrying model calls: the first attempt is a plain call, throttles back off briefly and give
their slot back while they wait. Against the real emulator over HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from structlog.testing import capture_logs
from support.conditions import wait_until
from tenacity import AsyncRetrying, Future, RetryCallState

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from worker.adapters.tgi import TgiClassifier
from worker.backpressure import EndpointGuard, GuardPolicy
from worker.concurrency import LimitPolicy
from worker.core.errors import EndpointRejected, EndpointThrottled, EndpointUnavailable
from worker.core.models import Completion, Turn
from worker.core.prompt import DEFAULT_PARAMETERS, render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.retrying import RetryingClassifier, RetryPolicy, _Backoff, _log_retry

FORMAT = PromptFormat.LLAMA_GUARD_2
PROMPT = render_prompt([Turn("user", "Hello")], FORMAT, default_taxonomy(FORMAT)).text
RETRIES = RetryPolicy(attempts=3, initial_backoff=0.2, throttle_backoff=0.01, deadline=10)


def retrying_for(
    emulator: RunningEmulator,
    session: aiohttp.ClientSession,
    policy: RetryPolicy = RETRIES,
    *,
    slots: int = 64,
) -> tuple[RetryingClassifier, EndpointGuard]:
    classifier = TgiClassifier(session, emulator.url, DEFAULT_PARAMETERS)
    guard = EndpointGuard(
        classifier,
        GuardPolicy(max_in_flight=slots, limit=LimitPolicy(initial=slots)),
        PROMPT,
    )
    return RetryingClassifier(guard, policy), guard


async def test_a_first_attempt_that_succeeds_builds_no_retry_loop(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    retrying, _ = retrying_for(emulator, http_session)
    await retrying.classify(PROMPT)
    assert retrying.retry_loops == 0
    assert emulator.stats.requests == 1


async def test_a_retryable_first_failure_starts_the_retry_loop_and_it_succeeds(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    retrying, _ = retrying_for(emulator, http_session)
    emulator.faults.fail_next = ["server_error"]
    with capture_logs() as logs:
        await retrying.classify(PROMPT)
    assert retrying.retry_loops == 1
    assert emulator.stats.requests == 2
    retries = [entry for entry in logs if entry["event"] == "classifier_retry"]
    assert [entry["attempt"] for entry in retries] == [1]


async def test_the_first_attempt_counts_towards_the_attempts(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    retrying, _ = retrying_for(emulator, http_session)
    emulator.faults.down = True
    with pytest.raises(EndpointUnavailable):
        await retrying.classify(PROMPT)
    assert emulator.stats.requests == RETRIES.attempts


async def test_a_rejection_is_not_retried(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    retrying, _ = retrying_for(emulator, http_session)
    emulator.faults.fail_next = ["not_found"]
    with pytest.raises(EndpointRejected):
        await retrying.classify(PROMPT)
    assert emulator.stats.requests == 1
    assert retrying.retry_loops == 0


async def test_a_throttle_waits_briefly_and_an_outage_waits_longer(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    retrying, _ = retrying_for(emulator, http_session)
    emulator.faults.fail_next = ["throttle", "server_error"]
    with capture_logs() as logs:
        await retrying.classify(PROMPT)
    waits = {
        entry["error_type"]: entry["sleep_seconds"]
        for entry in logs
        if entry["event"] == "classifier_retry"
    }
    assert waits["EndpointThrottled"] <= RETRIES.throttle_backoff
    assert waits["EndpointUnavailable"] >= RETRIES.initial_backoff


async def test_a_throttled_call_gives_its_slot_to_a_waiting_call_before_retrying(
    http_session: aiohttp.ClientSession,
) -> None:
    """One slot: the refused call's retry queues behind the call that was already waiting."""
    async with run_emulator(EmulatorConfig(latency_ms=5)) as emulator:
        retrying, guard = retrying_for(emulator, http_session, slots=1)
        emulator.faults.fail_next = ["throttle"]
        order: list[str] = []

        async def call(name: str) -> None:
            await retrying.classify(PROMPT)
            order.append(name)

        await guard.limit.acquire()  # the test holds the one slot while both calls line up
        refused = asyncio.create_task(call("refused first"))
        await wait_until(lambda: guard.limit.waiting == 1)
        waiting = asyncio.create_task(call("waiting"))
        await wait_until(lambda: guard.limit.waiting == 2)
        guard.limit.release()
        await asyncio.gather(refused, waiting)
    assert order == ["waiting", "refused first"]
    assert emulator.stats.by_outcome["throttled"] == 1


# --- the waits between attempts (the backoff alone, with the attempt tenacity reports) --------

DRAWS = 300  # the chance that 300 uniform draws all miss the top tenth of a range is 0.9**300


def _after(error: Exception, attempt: int) -> RetryCallState:
    state = RetryCallState(AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    outcome: Future = Future(attempt)
    outcome.set_exception(error)
    state.outcome = outcome
    return state


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.08)])
def test_a_throttle_waits_up_to_its_backoff_doubled_per_attempt(
    attempt: int, ceiling: float
) -> None:
    backoff = _Backoff(RetryPolicy(throttle_backoff=0.01, max_backoff=5.0))

    waits = [backoff(_after(EndpointThrottled("busy"), attempt)) for _ in range(DRAWS)]

    assert all(0 <= wait <= ceiling for wait in waits)
    assert max(waits) > 0.9 * ceiling


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 0.2, 0.4), (3, 0.8, 1.0), (6, 5.0, 5.0)])
def test_an_outage_waits_initial_times_two_per_attempt_plus_jitter_up_to_the_max(
    attempt: int, low: float, high: float
) -> None:
    backoff = _Backoff(RetryPolicy(initial_backoff=0.2, max_backoff=5.0))

    waits = [backoff(_after(EndpointUnavailable("503"), attempt)) for _ in range(DRAWS)]

    assert all(low <= wait <= high for wait in waits)
    assert max(waits) >= low + 0.9 * (high - low)


def test_a_retry_is_logged_with_its_attempt_error_type_and_wait_in_milliseconds() -> None:
    state = _after(EndpointUnavailable("503"), 2)
    state.upcoming_sleep = 0.123456

    with capture_logs() as logs:
        _log_retry(state)

    assert logs == [
        {
            "event": "classifier_retry",
            "log_level": "warning",
            "attempt": 2,
            "error_type": "EndpointUnavailable",
            "sleep_seconds": 0.123,
        }
    ]


# --- how many calls a policy allows (a scripted classifier, no endpoint) -----------------------


class ScriptedClassifier:
    """Raises the scripted errors in turn, then answers; the first call may take a while."""

    backend = "tgi"
    endpoint = "http://scripted"

    def __init__(self, errors: list[Exception], first_call_seconds: float = 0.0) -> None:
        self.errors = errors
        self.first_call_seconds = first_call_seconds
        self.calls = 0

    async def classify(self, prompt: str) -> Completion:
        self.calls += 1
        if self.calls == 1 and self.first_call_seconds:
            await asyncio.sleep(self.first_call_seconds)  # a slow endpoint, not a wait for a result
        if self.errors:
            raise self.errors.pop(0)
        return Completion(generated_text="safe")


QUICK = RetryPolicy(attempts=5, initial_backoff=0.001, max_backoff=0.001, throttle_backoff=0.001)


async def test_with_one_attempt_a_transient_failure_is_raised_without_a_retry_loop() -> None:
    inner = ScriptedClassifier([EndpointUnavailable("503")])
    retrying = RetryingClassifier(inner, RetryPolicy(attempts=1))

    with pytest.raises(EndpointUnavailable):
        await retrying.classify(PROMPT)

    assert (inner.calls, retrying.retry_loops) == (1, 0)


async def test_with_two_attempts_a_transient_failure_is_retried_once() -> None:
    inner = ScriptedClassifier([EndpointUnavailable("503")])
    retrying = RetryingClassifier(inner, RetryPolicy(attempts=2, initial_backoff=0.001))

    assert (await retrying.classify(PROMPT)).generated_text == "safe"
    assert inner.calls == 2


async def test_every_call_that_needed_the_retry_machinery_is_counted() -> None:
    inner = ScriptedClassifier([EndpointUnavailable("503")])
    retrying = RetryingClassifier(inner, QUICK)

    await retrying.classify(PROMPT)  # 503 first, answered on the retry
    inner.errors.append(EndpointUnavailable("503"))
    await retrying.classify(PROMPT)  # the same again

    assert retrying.retry_loops == 2


async def test_a_rejection_after_a_transient_failure_ends_the_retries() -> None:
    inner = ScriptedClassifier([EndpointUnavailable("503"), EndpointRejected("404")])
    retrying = RetryingClassifier(inner, QUICK)

    with pytest.raises(EndpointRejected):
        await retrying.classify(PROMPT)

    assert inner.calls == 2


async def test_the_deadline_counts_the_time_the_first_attempt_took() -> None:
    """0.3 s of a 0.5 s deadline gone in the first call: one retry fits, a second does not."""
    inner = ScriptedClassifier([EndpointUnavailable("503")] * 10, first_call_seconds=0.3)
    policy = RetryPolicy(attempts=10, initial_backoff=0.2, max_backoff=0.4, deadline=0.5)

    with pytest.raises(EndpointUnavailable):
        await RetryingClassifier(inner, policy).classify(PROMPT)

    assert inner.calls == 2
