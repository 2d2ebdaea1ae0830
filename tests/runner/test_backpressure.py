"""The endpoint guard: adaptive concurrency under throttling, and the circuit breaker in outages.

The limit's algorithm alone is tested in tests/concurrency.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence

import aiohttp
import pytest
from structlog.testing import capture_logs
from support.conditions import wait_until

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.fakes import InMemorySink, InMemorySource
from worker.adapters.tgi import TgiClassifier
from worker.backpressure import CircuitBreaker, EndpointGuard, GuardPolicy
from worker.core.errors import CircuitOpen, EndpointUnavailable
from worker.core.models import Completion, Turn
from worker.core.prompt import DEFAULT_PARAMETERS, render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.pipeline import ModerationPolicy, Moderator
from worker.ports import Classifier, ClassifierInFront, ReceivedMessage
from worker.retrying import RetryingClassifier, RetryPolicy
from worker.runner import Runner, RunnerConfig

FORMAT = PromptFormat.LLAMA_GUARD_2
PROMPT = render_prompt([Turn("user", "Hello")], FORMAT, default_taxonomy(FORMAT)).text


def test_the_circuit_opens_after_consecutive_failures_only() -> None:
    circuit = CircuitBreaker(GuardPolicy(failure_threshold=3))
    circuit.record_failure()
    circuit.record_failure()
    circuit.record_success()
    circuit.record_failure()
    circuit.record_failure()
    assert not circuit.is_open
    circuit.record_failure()
    assert circuit.is_open


def guard_for(
    emulator: RunningEmulator, session: aiohttp.ClientSession, **policy: float
) -> EndpointGuard:
    classifier = TgiClassifier(session, emulator.url, DEFAULT_PARAMETERS)
    return EndpointGuard(classifier, GuardPolicy(**policy), PROMPT)  # type: ignore[arg-type]


class CallStarts(ClassifierInFront):
    """A classifier in front of another, noting the event loop's time as each call starts."""

    def __init__(self, inner: Classifier) -> None:
        super().__init__(inner)
        self.started: list[float] = []

    async def classify(self, prompt: str) -> Completion:
        self.started.append(asyncio.get_running_loop().time())
        return await super().classify(prompt)


async def test_an_open_circuit_fails_calls_without_reaching_the_endpoint(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    guard = guard_for(emulator, http_session, failure_threshold=3)
    emulator.faults.down = True
    for _ in range(3):
        with pytest.raises(EndpointUnavailable):
            await guard.classify(PROMPT)
    assert guard.receive_capacity() == 0
    with pytest.raises(CircuitOpen):
        await guard.classify(PROMPT)
    assert emulator.stats.requests == 3


PROBE_INTERVAL = 0.1
# asyncio runs a timer up to the clock's resolution early; nothing else may shorten a gap.
CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution


async def test_probes_come_one_interval_apart_and_close_the_circuit_once_the_endpoint_is_back(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    """Each probe starts at least ``probe_interval`` after the call before it began (never a
    flood), the wait goes on while they fail, and the first one answered closes the circuit."""
    calls = CallStarts(TgiClassifier(http_session, emulator.url, DEFAULT_PARAMETERS))
    policy = GuardPolicy(failure_threshold=1, probe_interval=PROBE_INTERVAL)
    guard = EndpointGuard(calls, policy, PROMPT)
    emulator.faults.down = True
    with pytest.raises(EndpointUnavailable):
        await guard.classify(PROMPT)
    stop = asyncio.Event()
    waiting = asyncio.create_task(guard.wait_until_ready(stop))
    await wait_until(lambda: len(calls.started) >= 4)  # the failed call, then three probes
    assert not waiting.done()
    assert guard.circuit.is_open
    emulator.faults.down = False
    with capture_logs() as logs:
        await asyncio.wait_for(waiting, timeout=20)
    assert not guard.circuit.is_open
    assert any(entry["event"] == "circuit_closed" for entry in logs)
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls.started)]
    assert min(gaps) >= PROBE_INTERVAL - CLOCK_RESOLUTION


CALLERS = 64
CALLS = 400


async def call_many(guard: EndpointGuard) -> list[object]:
    retrying = RetryingClassifier(guard, RetryPolicy(attempts=20, deadline=20))
    lane = asyncio.Semaphore(CALLERS)  # 64 messages at a time, like a runner's max_in_flight

    async def one() -> object:
        async with lane:
            return await retrying.classify(PROMPT)

    return await asyncio.gather(*(one() for _ in range(CALLS)))


async def test_against_a_hard_cap_the_limit_stays_near_the_capacity_with_few_throttles(
    http_session: aiohttp.ClientSession,
) -> None:
    """The real emulator refusing a 4th call at once: every call succeeds, few are refused."""
    async with run_emulator(EmulatorConfig(capacity=3, latency_ms=20)) as emulator:
        guard = guard_for(emulator, http_session, max_in_flight=CALLERS)
        completions = await call_many(guard)
    assert len(completions) == CALLS
    stats = emulator.stats
    assert stats.by_outcome["throttled"] <= 0.1 * stats.requests
    assert guard.limit.current <= 5


async def test_against_a_queueing_endpoint_the_limit_builds_no_long_queue(
    http_session: aiohttp.ClientSession,
) -> None:
    """The real emulator queueing above 3 calls: latency growth holds the limit near 3."""
    config = EmulatorConfig(capacity=3, latency_ms=20, queue_size=1000)
    async with run_emulator(config) as emulator:
        guard = guard_for(emulator, http_session, max_in_flight=CALLERS)
        completions = await call_many(guard)
    assert len(completions) == CALLS
    stats = emulator.stats
    assert stats.by_outcome["throttled"] == 0
    assert stats.max_queue_length <= 8  # 61 without the latency signal
    assert guard.limit.current <= 12


class CircuitWatchingSource(InMemorySource):
    """The in-memory source, counting the receives that start while a guard's circuit is open."""

    def __init__(self) -> None:
        super().__init__()
        self.guard: EndpointGuard | None = None
        self.receives_while_open = 0

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        if self.guard is not None and self.guard.circuit.is_open:
            self.receives_while_open += 1
        return await super().receive(max_messages, wait_seconds)


async def test_runner_stops_receiving_while_the_circuit_is_open(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    guard = guard_for(emulator, http_session, failure_threshold=2, probe_interval=0.1)
    moderator = Moderator(
        RetryingClassifier(guard, RetryPolicy(attempts=1)),
        InMemorySink(),
        ModerationPolicy(prompt_format=FORMAT, taxonomy=default_taxonomy(FORMAT)),
    )
    source = CircuitWatchingSource()
    source.guard = guard
    ids = [source.send(json.dumps({"id": f"m{i}", "content": "Hello"})) for i in range(20)]
    emulator.faults.down = True
    config = RunnerConfig(max_in_flight=2, wait_seconds=0, release_delay_base=0)
    stop = asyncio.Event()
    running = asyncio.create_task(Runner(source, moderator, config, gate=guard).run(stop))
    await wait_until(lambda: guard.circuit.is_open)
    opened_at_request = emulator.stats.requests
    # The outage lasts until two probes have failed: the runner has been waiting on the gate.
    await wait_until(lambda: emulator.stats.requests >= opened_at_request + 2)
    assert guard.circuit.is_open
    emulator.faults.down = False
    await wait_until(lambda: all(source.is_deleted(message_id) for message_id in ids))
    stop.set()
    await asyncio.wait_for(running, timeout=20)
    assert source.receives_while_open == 0
    assert source.dead_letters == []
