"""Fault injection, capacity, latency, counters and the admin routes, over real HTTP."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession
from emulator_prompts import prompt_for
from support.conditions import wait_until

from devstack.emulator import EmulatorConfig, FaultKind, FaultPlan, RunningEmulator, run_emulator
from devstack.emulator.server import EmulatorState

PROMPT = prompt_for("hello", "llama-guard-1")
BODY = {"inputs": PROMPT, "parameters": {"max_new_tokens": 32}}


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with run_emulator(EmulatorConfig(seed=7)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


async def _invoke(http: ClientSession, emu: RunningEmulator) -> tuple[int, str | None, Any]:
    async with http.post(f"{emu.url}/endpoints/guard/invocations", json=BODY) as response:
        return response.status, response.headers.get("x-amzn-ErrorType"), await response.json()


async def _generate(http: ClientSession, emu: RunningEmulator) -> tuple[int, Any]:
    async with http.post(f"{emu.url}/generate", json=BODY) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("throttle", 400, "ThrottlingException"),
        ("not_ready", 429, "ModelNotReadyException"),
        ("server_error", 503, "ServiceUnavailable"),
        ("internal_failure", 500, "InternalFailure"),
        ("model_error", 424, "ModelError"),
    ],
)
async def test_invocations_fault_answers_as_the_sagemaker_runtime(
    fault: FaultKind, status: int, code: str, emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.fail_next.append(fault)

    answer = await _invoke(http, emu)

    assert answer[:2] == (status, code)
    assert answer[2]["Message"]


async def test_model_error_fault_carries_original_status_500(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.fail_next.append("model_error")

    _, _, document = await _invoke(http, emu)

    assert document["OriginalStatusCode"] == 500
    assert '"error_type":"generation"' in document["OriginalMessage"]
    assert document["LogStreamArn"].endswith("/aws/sagemaker/Endpoints/guard")


@pytest.mark.parametrize(
    ("fault", "status", "error_type"),
    [
        ("throttle", 429, "overloaded"),
        ("not_ready", 503, "unavailable"),
        ("server_error", 503, "unavailable"),
        ("internal_failure", 500, "incomplete_generation"),
        ("model_error", 424, "generation"),
    ],
)
async def test_generate_fault_answers_as_tgi(
    fault: FaultKind, status: int, error_type: str, emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.fail_next.append(fault)

    answer_status, document = await _generate(http, emu)

    assert answer_status == status
    assert document["error_type"] == error_type


async def test_invalid_output_fault_answers_200_with_malformed_text(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.fail_next.append("invalid_output")

    status, _, document = await _invoke(http, emu)

    assert status == 200
    assert document[0]["generated_text"].strip() not in ("safe", "unsafe")
    assert emu.stats.by_outcome["invalid_output"] == 1


async def test_hang_fault_holds_the_request_then_answers(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.hang_seconds = 0.3
    emu.faults.fail_next.append("hang")

    started = time.monotonic()
    status, _, document = await _invoke(http, emu)

    # A lower bound only: load can make the answer later, never earlier than the hang.
    assert time.monotonic() - started >= 0.3
    assert status == 200
    assert document[0]["generated_text"] == "safe"


async def test_client_giving_up_on_a_hang_ends_the_request(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.fail_next.append("hang")
    timeout = aiohttp.ClientTimeout(total=0.2)

    with pytest.raises(TimeoutError):
        async with http.post(f"{emu.url}/generate", json=BODY, timeout=timeout):
            pass
    await wait_until(lambda: emu.stats.in_flight == 0)

    assert emu.stats.by_outcome["cancelled"] == 1


async def test_stopping_the_emulator_cuts_a_hang_short(http: ClientSession) -> None:
    """The hung request is answered 503 as the server stops. A hang that ran on would instead
    be cut off by the server's shutdown timeout, and the client would see no answer at all."""
    async with run_emulator(EmulatorConfig()) as emu:
        emu.faults.hang_seconds = 3600.0
        emu.faults.fail_next.append("hang")
        request = asyncio.create_task(_invoke(http, emu))
        await wait_until(lambda: emu.stats.faults_injected["hang"] == 1)
    status, code, _ = await request

    assert (status, code) == (503, "ServiceUnavailable")


async def test_disconnect_fault_drops_the_connection(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.fail_next.append("disconnect")

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _invoke(http, emu)
    assert emu.stats.by_outcome["disconnected"] == 1


async def test_fail_next_is_consumed_in_order_then_requests_succeed(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.fail_next.extend(["throttle", "not_ready"])

    statuses = [(await _invoke(http, emu))[0] for _ in range(3)]

    assert statuses == [400, 429, 200]
    assert emu.faults.fail_next == []


async def test_throttle_rate_one_throttles_every_request(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.throttle_rate = 1.0

    codes = [(await _invoke(http, emu))[1] for _ in range(3)]

    assert codes == ["ThrottlingException"] * 3


async def test_invalid_output_rate_one_breaks_every_completion(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.invalid_output_rate = 1.0

    for _ in range(3):
        await _invoke(http, emu)

    assert emu.stats.by_outcome["invalid_output"] == 3


async def _outcomes_with_seed(http: ClientSession, seed: int) -> list[int]:
    faults = FaultPlan(throttle_rate=0.3, server_error_rate=0.3)
    async with run_emulator(EmulatorConfig(seed=seed), faults=faults) as emu:
        return [(await _invoke(http, emu))[0] for _ in range(12)]


async def test_random_faults_are_reproducible_with_the_same_seed(http: ClientSession) -> None:
    first = await _outcomes_with_seed(http, seed=3)
    second = await _outcomes_with_seed(http, seed=3)

    assert first == second
    assert {400, 503} <= set(first)


async def test_down_answers_503_on_inference_and_health(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.down = True

    status, code, _ = await _invoke(http, emu)
    async with http.get(f"{emu.url}/ping") as ping:
        ping_status = ping.status

    assert (status, code, ping_status) == (503, "ServiceUnavailable", 503)


async def test_clearing_down_restores_service(emu: RunningEmulator, http: ClientSession) -> None:
    emu.faults.down = True
    await _invoke(http, emu)
    emu.faults.down = False

    status, _, _ = await _invoke(http, emu)

    assert status == 200


async def test_requests_beyond_capacity_are_throttled_at_once(http: ClientSession) -> None:
    async with run_emulator(EmulatorConfig(capacity=2, latency_ms=300)) as emu:
        answers = await asyncio.gather(*(_invoke(http, emu) for _ in range(6)))
        stats = emu.stats.as_json()

    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200, 200, 400, 400, 400, 400]
    assert stats["by_outcome"] == {"safe": 2, "throttled": 4}
    # The two admitted requests are held; each throttled one comes and goes at once.
    assert stats["max_in_flight"] == 3


async def test_capacity_frees_up_when_requests_finish(http: ClientSession) -> None:
    async with run_emulator(EmulatorConfig(capacity=1, latency_ms=20)) as emu:
        statuses = [(await _invoke(http, emu))[0] for _ in range(3)]

    assert statuses == [200, 200, 200]


async def test_latency_delays_the_answer(http: ClientSession) -> None:
    async with run_emulator(EmulatorConfig(latency_ms=150, latency_jitter_ms=50)) as emu:
        started = time.monotonic()
        await _invoke(http, emu)
        elapsed = time.monotonic() - started

    # A lower bound only: load can make the answer later, never earlier than the latency.
    assert elapsed >= 0.15


def test_latency_is_the_base_plus_a_jitter_of_at_most_the_configured_width() -> None:
    """The drawn pause (a private method), not a measured one, which load would stretch."""
    state = EmulatorState(EmulatorConfig(latency_ms=150, latency_jitter_ms=50, seed=7))

    pauses = [state._latency_seconds() for _ in range(1000)]

    assert all(0.15 <= pause <= 0.2 for pause in pauses)
    assert len(set(pauses)) > 1


async def test_stats_count_requests_by_route_and_outcome(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.fail_next.append("throttle")
    await _invoke(http, emu)
    await _invoke(http, emu)
    await _generate(http, emu)

    async with http.get(f"{emu.url}/emulator/stats") as response:
        stats = await response.json()

    assert stats.pop("slot_seconds") == 0.0  # no capacity configured: no slots to hold
    assert stats == {
        "requests": 3,
        "in_flight": 0,
        "max_in_flight": 1,
        "admitted": 3,
        "queued": 0,
        "queue_length": 0,
        "max_queue_length": 0,
        "queue_wait_seconds": 0.0,
        "by_route": {"invocations": 2, "generate": 1},
        "by_outcome": {"throttled": 1, "safe": 2},
        "faults_injected": {"throttle": 1},
    }


async def test_admin_and_health_routes_are_not_counted(
    emu: RunningEmulator, http: ClientSession
) -> None:
    for path in ("/health", "/ping", "/info", "/emulator/stats", "/emulator/faults"):
        async with http.get(emu.url + path):
            pass

    assert emu.stats.requests == 0


async def test_deleting_stats_resets_the_counters(
    emu: RunningEmulator, http: ClientSession
) -> None:
    await _invoke(http, emu)

    async with http.delete(f"{emu.url}/emulator/stats") as response:
        stats = await response.json()

    assert stats["requests"] == 0
    assert stats["by_outcome"] == {}


async def test_put_faults_changes_only_the_given_settings(
    emu: RunningEmulator, http: ClientSession
) -> None:
    emu.faults.hang_seconds = 5.0
    change = {"throttle_rate": 0.25, "fail_next": ["model_error"]}

    async with http.put(f"{emu.url}/emulator/faults", json=change) as response:
        status, plan = response.status, await response.json()

    assert status == 200
    assert plan["throttle_rate"] == 0.25
    assert plan["fail_next"] == ["model_error"]
    assert plan["hang_seconds"] == 5.0
    assert emu.faults.throttle_rate == 0.25


async def test_put_faults_takes_effect_on_the_next_request(
    emu: RunningEmulator, http: ClientSession
) -> None:
    async with http.put(f"{emu.url}/emulator/faults", json={"down": True}):
        pass

    status, code, _ = await _invoke(http, emu)

    assert (status, code) == (503, "ServiceUnavailable")


async def test_get_faults_shows_the_live_plan(emu: RunningEmulator, http: ClientSession) -> None:
    emu.faults.fail_next.append("hang")

    async with http.get(f"{emu.url}/emulator/faults") as response:
        plan = await response.json()

    assert plan["fail_next"] == ["hang"]
    assert plan["down"] is False


@pytest.mark.parametrize(
    "change",
    [
        {"no_such_setting": 1},
        {"throttle_rate": 1.5},
        {"throttle_rate": "high"},
        {"down": "yes"},
        {"fail_next": ["explode"]},
        {"fail_next": "throttle"},
        ["throttle_rate"],
    ],
    ids=[
        "unknown",
        "rate-over-one",
        "rate-not-number",
        "down-not-bool",
        "bad-kind",
        "not-list",
        "not-object",
    ],
)
async def test_put_faults_rejects_an_invalid_change_with_400(
    change: object, emu: RunningEmulator, http: ClientSession
) -> None:
    async with http.put(f"{emu.url}/emulator/faults", json=change) as response:
        status, document = response.status, await response.json()

    assert status == 400
    assert document["error"]


async def test_put_faults_applies_nothing_when_one_setting_is_invalid(
    emu: RunningEmulator, http: ClientSession
) -> None:
    change = {"throttle_rate": 0.5, "down": "yes"}

    async with http.put(f"{emu.url}/emulator/faults", json=change):
        pass

    assert emu.faults.throttle_rate == 0.0


def test_fault_plan_draw_prefers_the_queue_over_the_rates() -> None:
    plan = FaultPlan(throttle_rate=1.0, fail_next=["not_ready"])

    rng = random.Random(0)  # noqa: S311 - fault draws, not security

    assert plan.draw(rng) == "not_ready"
    assert plan.draw(rng) == "throttle"


@pytest.mark.parametrize(
    "config",
    [{"capacity": 0}, {"latency_ms": -1}, {"max_total_tokens": 1}],
    ids=["capacity", "latency", "budget"],
)
def test_config_rejects_impossible_settings(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        EmulatorConfig(**config)
