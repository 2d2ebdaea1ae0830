"""The queueing endpoint model: calls above the capacity wait their turn; a full queue throttles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession
from emulator_prompts import prompt_for
from support.conditions import wait_until

from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator

BODY = {"inputs": prompt_for("hello", "llama-guard-1"), "parameters": {"max_new_tokens": 32}}


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


async def _invoke(
    http: ClientSession, emu: RunningEmulator, *, give_up_after: float | None = None
) -> tuple[int, str | None]:
    async with http.post(
        f"{emu.url}/endpoints/guard/invocations",
        json=BODY,
        timeout=aiohttp.ClientTimeout(total=give_up_after),
    ) as response:
        await response.read()
        return response.status, response.headers.get("x-amzn-ErrorType")


async def test_calls_above_capacity_wait_their_turn_and_are_served(http: ClientSession) -> None:
    async with run_emulator(EmulatorConfig(capacity=1, queue_size=5, latency_ms=50)) as emu:
        answers = await asyncio.gather(*(_invoke(http, emu) for _ in range(3)))
        stats: dict[str, Any] = emu.stats.as_json()

    assert [status for status, _ in answers] == [200, 200, 200]
    assert stats["by_outcome"] == {"safe": 3}
    assert (stats["admitted"], stats["queued"], stats["max_queue_length"]) == (3, 2, 2)


async def test_time_spent_in_the_queue_is_counted(http: ClientSession) -> None:
    async with run_emulator(EmulatorConfig(capacity=1, queue_size=5, latency_ms=50)) as emu:
        await asyncio.gather(*(_invoke(http, emu) for _ in range(2)))
        waited = emu.stats.queue_wait_seconds

    # The second call waited for the first one's service time (50 ms), at least most of it.
    assert waited > 0.0


async def test_the_time_slots_are_held_is_counted(http: ClientSession) -> None:
    async with run_emulator(EmulatorConfig(capacity=2, queue_size=5, latency_ms=50)) as emu:
        await asyncio.gather(*(_invoke(http, emu) for _ in range(3)))
        held = emu.stats.slot_seconds

    # Three calls, each holding its slot for at least the 50 ms service time.
    assert held >= 3 * 0.05


async def test_a_call_that_finds_the_queue_full_is_throttled(http: ClientSession) -> None:
    async with run_emulator(EmulatorConfig(capacity=1, queue_size=1, latency_ms=300)) as emu:
        answers = await asyncio.gather(*(_invoke(http, emu) for _ in range(4)))
        stats: dict[str, Any] = emu.stats.as_json()

    assert sorted(answers) == [
        (200, None),
        (200, None),
        (400, "ThrottlingException"),
        (400, "ThrottlingException"),
    ]
    assert stats["by_outcome"] == {"safe": 2, "throttled": 2}


async def test_a_queue_size_of_zero_is_the_hard_cap(http: ClientSession) -> None:
    async with run_emulator(EmulatorConfig(capacity=1, queue_size=0, latency_ms=300)) as emu:
        answers = await asyncio.gather(*(_invoke(http, emu) for _ in range(2)))

    assert sorted(status for status, _ in answers) == [200, 400]


async def test_a_caller_that_gives_up_while_queued_leaves_no_slot_taken(
    http: ClientSession,
) -> None:
    async with run_emulator(EmulatorConfig(capacity=1, queue_size=5, latency_ms=300)) as emu:
        first = asyncio.create_task(_invoke(http, emu))
        await wait_until(lambda: emu.stats.in_flight == 1)
        with pytest.raises(TimeoutError):
            await _invoke(http, emu, give_up_after=0.05)
        await wait_until(lambda: emu.stats.queue_length == 0 and emu.stats.in_flight == 1)
        assert (await first)[0] == 200

        after = await _invoke(http, emu)
        queued = emu.stats.queued

    assert after == (200, None)
    # The one that gave up never got a slot; the later call found the server free.
    assert queued == 0


async def test_stopping_fails_the_queued_calls_as_unavailable(http: ClientSession) -> None:
    async with run_emulator(EmulatorConfig(capacity=1, queue_size=5, latency_ms=30_000)) as emu:
        calls = [asyncio.create_task(_invoke(http, emu)) for _ in range(2)]
        await wait_until(lambda: emu.stats.queue_length == 1)
    answers = await asyncio.gather(*calls)

    assert answers == [(503, "ServiceUnavailable"), (503, "ServiceUnavailable")]


def test_config_rejects_a_negative_queue_size() -> None:
    with pytest.raises(ValueError, match="queue_size must be >= 0"):
        EmulatorConfig(capacity=1, queue_size=-1)
