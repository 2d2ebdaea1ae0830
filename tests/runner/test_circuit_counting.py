"""What counts towards opening the circuit, and what the retry loop leaves alone (issue 10).

Semantics as documented in ``worker/backpressure.py``: only ``EndpointFailure``s that are not
throttling count (5xx, not ready, timeouts, and rejections: not found, access denied, another
4xx); a throttled answer or "prompt too long" shows a working endpoint and ends the run of
consecutive failures, as a success does. An open circuit is never retried inside the call.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from worker.backpressure import EndpointGuard, GuardPolicy
from worker.core.errors import (
    CircuitOpen,
    ClassifierError,
    EndpointRejected,
    EndpointThrottled,
    EndpointUnavailable,
    PromptTooLong,
)
from worker.core.models import Completion
from worker.retrying import RetryingClassifier, RetryPolicy

THRESHOLD = 3
POLICY = GuardPolicy(failure_threshold=THRESHOLD)


class ScriptedClassifier:
    """A classifier that raises the scripted errors in turn, then answers "safe"."""

    backend = "tgi"
    endpoint = "http://scripted"

    def __init__(self, errors: Sequence[ClassifierError] = ()) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def classify(self, prompt: str) -> Completion:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return Completion(generated_text="safe")


async def call_through(guard: EndpointGuard, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ClassifierError):
            await guard.classify("prompt")


async def test_rejections_count_towards_opening_the_circuit() -> None:
    """An endpoint that is not found is as unusable as one that is down."""
    inner = ScriptedClassifier([EndpointRejected("Endpoint guard not found.")] * THRESHOLD)
    guard = EndpointGuard(inner, POLICY, "probe")

    await call_through(guard, THRESHOLD)

    assert guard.circuit.is_open
    assert guard.receive_capacity() == 0


@pytest.mark.parametrize(
    "interruption",
    [EndpointThrottled("busy"), PromptTooLong("too long")],
    ids=["throttled", "prompt-too-long"],
)
async def test_an_answer_from_a_working_endpoint_ends_the_run_of_failures(
    interruption: ClassifierError,
) -> None:
    """Failures, then a throttle (or "too long"), then failures: never THRESHOLD in a row."""
    down = EndpointUnavailable("503")
    errors = [down] * (THRESHOLD - 1) + [interruption] + [down] * (THRESHOLD - 1)
    guard = EndpointGuard(ScriptedClassifier(errors), POLICY, "probe")

    await call_through(guard, len(errors))

    assert not guard.circuit.is_open


async def test_throttling_alone_never_opens_the_circuit() -> None:
    throttles = [EndpointThrottled("busy")] * (THRESHOLD * 3)
    guard = EndpointGuard(ScriptedClassifier(throttles), POLICY, "probe")

    await call_through(guard, len(throttles))

    assert not guard.circuit.is_open


async def test_the_failure_just_after_an_interruption_still_counts() -> None:
    """The counter restarts at the interruption, not later: THRESHOLD failures after it open."""
    down = EndpointUnavailable("503")
    errors = [EndpointThrottled("busy")] + [down] * THRESHOLD
    guard = EndpointGuard(ScriptedClassifier(errors), POLICY, "probe")

    await call_through(guard, len(errors))

    assert guard.circuit.is_open


async def test_an_open_circuit_is_not_retried_inside_the_call() -> None:
    """The circuit is already the verdict of many failures: one call, then the message waits."""
    inner = ScriptedClassifier([CircuitOpen("open")] * 5)
    retrying = RetryingClassifier(
        inner, RetryPolicy(attempts=5, initial_backoff=0.001, max_backoff=0.001)
    )

    with pytest.raises(CircuitOpen):
        await retrying.classify("prompt")

    assert inner.calls == 1


async def test_an_unavailable_endpoint_is_retried_inside_the_call() -> None:
    """The contrast to the open circuit: a transient failure is retried, then answers."""
    inner = ScriptedClassifier([EndpointUnavailable("503")] * 2)
    retrying = RetryingClassifier(
        inner, RetryPolicy(attempts=5, initial_backoff=0.001, max_backoff=0.001)
    )

    completion = await retrying.classify("prompt")

    assert completion.generated_text == "safe"
    assert inner.calls == 3
