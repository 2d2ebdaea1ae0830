"""What the endpoint guard shows operators: the circuit's logs and gauge, the probes' logs.

And that the guard hands its own policy and clock to the limiter and the circuit it builds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs
from support.clocks import ManualClock

from worker.backpressure import EndpointGuard, GuardPolicy
from worker.concurrency import LimitPolicy
from worker.core.errors import CircuitOpen, ClassifierError, EndpointUnavailable
from worker.core.models import Completion

THRESHOLD = 2


class ScriptedClassifier:
    """Raises the scripted errors in turn, then answers "safe"; each call takes ``latency``
    seconds of the manual clock."""

    backend = "tgi"
    endpoint = "http://scripted"

    def __init__(
        self, clock: ManualClock, errors: Sequence[ClassifierError] = (), latency: float = 0.0
    ) -> None:
        self.clock = clock
        self.errors = list(errors)
        self.latency = latency

    async def classify(self, prompt: str) -> Completion:
        self.clock.advance(self.latency)
        if self.errors:
            raise self.errors.pop(0)
        return Completion(generated_text="safe")


def guard_with(
    inner: ScriptedClassifier, *, probe_interval: float = 5.0, limit: LimitPolicy | None = None
) -> EndpointGuard:
    policy = GuardPolicy(
        failure_threshold=THRESHOLD, probe_interval=probe_interval, limit=limit or LimitPolicy()
    )
    return EndpointGuard(inner, policy, "probe", clock=inner.clock)


async def fail(guard: EndpointGuard, times: int) -> None:
    for _ in range(times):
        with pytest.raises(EndpointUnavailable):
            await guard.classify("prompt")


def circuit_gauge() -> float | None:
    return REGISTRY.get_sample_value("moderation_endpoint_circuit_open")


async def test_opening_the_circuit_logs_the_run_of_failures_and_sets_the_gauge() -> None:
    clock = ManualClock()
    guard = guard_with(ScriptedClassifier(clock, [EndpointUnavailable("503")] * THRESHOLD))

    with capture_logs() as logs:
        await fail(guard, THRESHOLD)

    assert [entry for entry in logs if entry["event"] == "circuit_opened"] == [
        {"event": "circuit_opened", "log_level": "error", "consecutive_failures": THRESHOLD}
    ]
    assert circuit_gauge() == 1


async def test_closing_the_circuit_logs_how_long_it_was_open_and_clears_the_gauge() -> None:
    clock = ManualClock(100.0)
    guard = guard_with(ScriptedClassifier(clock, [EndpointUnavailable("503")] * THRESHOLD))
    await fail(guard, THRESHOLD)
    clock.advance(1.23456)  # the guard's clock, not the machine's

    with capture_logs() as logs:
        guard.circuit.record_success()

    assert logs == [{"event": "circuit_closed", "log_level": "info", "open_seconds": 1.235}]
    assert circuit_gauge() == 0


async def test_while_open_a_call_fails_at_once_saying_why_and_no_slot_is_offered() -> None:
    clock = ManualClock()
    guard = guard_with(ScriptedClassifier(clock, [EndpointUnavailable("503")] * THRESHOLD))
    await fail(guard, THRESHOLD)

    with pytest.raises(CircuitOpen) as raised:
        await guard.classify("prompt")

    assert str(raised.value) == "the endpoint circuit is open; the message waits for a later try"
    assert (guard.idle_slots(), guard.receive_capacity()) == (0, 0)


async def test_a_failed_probe_logs_its_error_type_and_a_good_one_closes_the_circuit() -> None:
    clock = ManualClock()
    down = [EndpointUnavailable("503")] * (THRESHOLD + 1)  # the last one fails the first probe
    guard = guard_with(ScriptedClassifier(clock, down), probe_interval=0.01)
    await fail(guard, THRESHOLD)

    with capture_logs() as logs:
        await asyncio.wait_for(guard.wait_until_ready(asyncio.Event()), timeout=30)

    probes = [entry for entry in logs if entry["event"].startswith("circuit_probe")]
    assert probes == [
        {
            "event": "circuit_probe_failed",
            "log_level": "warning",
            "error_type": "EndpointUnavailable",
        },
        {"event": "circuit_probe_succeeded", "log_level": "info"},
    ]
    assert not guard.circuit.is_open


async def test_the_guard_wakes_the_runner_when_a_finished_call_frees_room() -> None:
    clock = ManualClock()
    guard = guard_with(ScriptedClassifier(clock))
    wakes: list[int] = []
    guard.on_capacity(lambda: wakes.append(guard.receive_capacity()))

    await guard.classify("prompt")

    assert wakes


def test_the_guard_builds_its_limiter_from_its_own_limit_policy() -> None:
    guard = guard_with(ScriptedClassifier(ManualClock()), limit=LimitPolicy(initial=7))

    assert guard.limit.current == 7


async def test_the_limiter_measures_latency_on_the_guards_clock() -> None:
    clock = ManualClock()
    guard = guard_with(ScriptedClassifier(clock, latency=0.5))

    for _ in range(10):
        await guard.classify("prompt")

    assert guard.limit.baseline == pytest.approx(0.5)
