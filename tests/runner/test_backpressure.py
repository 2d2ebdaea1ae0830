"""The endpoint guard: adaptive concurrency under throttling, and the circuit breaker in outages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from structlog.testing import capture_logs

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.fakes import InMemorySink, InMemorySource
from worker.adapters.tgi import TgiClassifier
from worker.backpressure import AdaptiveLimit, CircuitBreaker, EndpointGuard, GuardPolicy
from worker.core.errors import CircuitOpen, EndpointUnavailable
from worker.core.models import Turn
from worker.core.prompt import DEFAULT_PARAMETERS, render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy
from worker.pipeline import ModerationPolicy, Moderator
from worker.retrying import RetryingClassifier, RetryPolicy
from worker.runner import Runner, RunnerConfig

FORMAT = PromptFormat.LLAMA_GUARD_2
PROMPT = render_prompt([Turn("user", "Hello")], FORMAT, default_taxonomy(FORMAT)).text


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttling_halves_the_limit() -> None:
    limit = AdaptiveLimit(GuardPolicy(max_in_flight=64))
    limit.on_throttle()
    assert limit.current == 32


def test_a_burst_of_throttles_counts_once_within_the_cooldown() -> None:
    clock = ManualClock()
    limit = AdaptiveLimit(GuardPolicy(max_in_flight=64, decrease_cooldown=1.0), clock=clock)
    for _ in range(10):
        limit.on_throttle()
    assert limit.current == 32
    clock.now = 1.5
    limit.on_throttle()
    assert limit.current == 16


def test_the_limit_never_falls_below_the_minimum() -> None:
    clock = ManualClock()
    limit = AdaptiveLimit(GuardPolicy(max_in_flight=4, decrease_cooldown=0), clock=clock)
    for step in range(10):
        clock.now = step
        limit.on_throttle()
    assert limit.current == 1


async def test_success_raises_the_limit_by_about_one_per_limit_successes() -> None:
    limit = AdaptiveLimit(GuardPolicy(max_in_flight=64))
    limit.on_throttle()  # 32
    for _ in range(31):
        await limit.on_success()
    assert limit.current == 32
    for _ in range(3):
        await limit.on_success()
    assert limit.current == 33


async def test_success_never_raises_the_limit_above_max_in_flight() -> None:
    limit = AdaptiveLimit(GuardPolicy(max_in_flight=8))
    for _ in range(100):
        await limit.on_success()
    assert limit.current == 8


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


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def guard_for(
    emulator: RunningEmulator, session: aiohttp.ClientSession, **policy: float
) -> EndpointGuard:
    classifier = TgiClassifier(session, emulator.url, DEFAULT_PARAMETERS)
    return EndpointGuard(classifier, GuardPolicy(**policy), PROMPT)  # type: ignore[arg-type]


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


async def test_probes_close_the_circuit_once_the_endpoint_is_back(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    guard = guard_for(emulator, http_session, failure_threshold=1, probe_interval=0.05)
    emulator.faults.down = True
    with pytest.raises(EndpointUnavailable):
        await guard.classify(PROMPT)
    stop = asyncio.Event()
    waiting = asyncio.create_task(guard.wait_until_ready(stop))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    probes_while_down = emulator.stats.requests - 1
    assert 2 <= probes_while_down <= 7  # one every 0.05 s, never a flood
    emulator.faults.down = False
    with capture_logs() as logs:
        await asyncio.wait_for(waiting, timeout=2)
    assert not guard.circuit.is_open
    assert any(entry["event"] == "circuit_closed" for entry in logs)


async def test_throttling_endpoint_is_found_its_capacity_and_every_call_succeeds(
    http_session: aiohttp.ClientSession,
) -> None:
    async with run_emulator(EmulatorConfig(capacity=4, latency_ms=20)) as emulator:
        guard = guard_for(emulator, http_session, max_in_flight=32, decrease_cooldown=0.05)
        retrying = RetryingClassifier(
            guard, RetryPolicy(attempts=20, initial_backoff=0.01, max_backoff=0.1, deadline=20)
        )
        completions = await asyncio.gather(*(retrying.classify(PROMPT) for _ in range(120)))
    assert len(completions) == 120
    assert emulator.stats.by_outcome["throttled"] > 0
    assert guard.limit.current < 32


async def test_runner_stops_receiving_while_the_circuit_is_open(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession
) -> None:
    guard = guard_for(emulator, http_session, failure_threshold=2, probe_interval=0.1)
    moderator = Moderator(
        RetryingClassifier(guard, RetryPolicy(attempts=1)),
        InMemorySink(),
        ModerationPolicy(prompt_format=FORMAT, taxonomy=default_taxonomy(FORMAT)),
    )
    source = InMemorySource()
    ids = [source.send(json.dumps({"id": f"m{i}", "content": "Hello"})) for i in range(20)]
    emulator.faults.down = True
    config = RunnerConfig(max_in_flight=2, wait_seconds=0, release_delay_base=0)
    stop = asyncio.Event()
    running = asyncio.create_task(Runner(source, moderator, config, gate=guard).run(stop))
    await asyncio.sleep(0.5)
    assert guard.circuit.is_open
    received_while_open = len({message_id for message_id, _ in source.visibility_changes})
    assert received_while_open <= 2  # only the messages that met the outage
    emulator.faults.down = False
    for _ in range(100):
        if all(source.is_deleted(message_id) for message_id in ids):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, timeout=5)
    assert all(source.is_deleted(message_id) for message_id in ids)
    assert source.dead_letters == []
