"""The emulator's deployment faults: an endpoint that is not found, and an unreadable answer.

``not_found`` is what a blue/green swap or a typo in the name looks like; ``unreadable_response``
is a proxy answering 200 with its own HTML page. Both are driven the way the other fault kinds
are: ``fail_next``, a rate in the fault plan, ``PUT /emulator/faults`` and the CLI's flags.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from devstack.emulator import FAULT_KINDS, RunningEmulator
from worker.cli import main
from worker.core.models import Turn
from worker.core.prompt import DEFAULT_PARAMETERS, render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy

ENDPOINT = "llama-guard-blue"
BODY: dict[str, Any] = {
    "inputs": render_prompt(
        [Turn("user", "How do I bake a cake?")],
        PromptFormat.LLAMA_GUARD_1,
        default_taxonomy(PromptFormat.LLAMA_GUARD_1),
    ).text,
    "parameters": dict(DEFAULT_PARAMETERS),
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def invoke(
    http: aiohttp.ClientSession, emulator: RunningEmulator
) -> tuple[int, dict[str, str], str]:
    """One SageMaker-route request: status, headers, body text."""
    url = f"{emulator.url}/endpoints/{ENDPOINT}/invocations"
    async with http.post(url, json=BODY) as response:
        return response.status, dict(response.headers), await response.text()


async def generate(http: aiohttp.ClientSession, emulator: RunningEmulator) -> tuple[int, str]:
    """One TGI-route request: status and body text."""
    async with http.post(f"{emulator.url}/generate", json=BODY) as response:
        return response.status, await response.text()


async def test_not_found_on_the_sagemaker_route_is_a_validation_error_naming_the_endpoint(
    http: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    emulator.faults.fail_next.append("not_found")

    status, headers, body = await invoke(http, emulator)

    assert status == 400
    assert headers["x-amzn-ErrorType"] == "ValidationError"
    assert f"Endpoint {ENDPOINT} of account 123456789012 not found." in body
    assert emulator.stats.by_outcome["endpoint_not_found"] == 1


async def test_not_found_on_the_tgi_route_is_a_404(
    http: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    emulator.faults.fail_next.append("not_found")

    status, _ = await generate(http, emulator)

    assert status == 404


async def test_not_found_rate_set_over_http_holds_until_it_is_cleared(
    http: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    async with http.put(f"{emulator.url}/emulator/faults", json={"not_found_rate": 1}) as put:
        assert put.status == 200
    during = [(await invoke(http, emulator))[0] for _ in range(3)]
    async with http.put(f"{emulator.url}/emulator/faults", json={"not_found_rate": 0}) as put:
        assert put.status == 200

    after, _, _ = await invoke(http, emulator)

    assert during == [400, 400, 400]
    assert after == 200


@pytest.mark.parametrize("route", ["invocations", "generate"])
async def test_unreadable_response_is_a_200_that_is_not_json(
    http: aiohttp.ClientSession, emulator: RunningEmulator, route: str
) -> None:
    emulator.faults.fail_next.append("unreadable_response")

    if route == "invocations":
        status, _, body = await invoke(http, emulator)
    else:
        status, body = await generate(http, emulator)

    assert status == 200
    assert body.startswith("<html>")
    assert emulator.stats.by_outcome["unreadable_response"] == 1


def test_the_new_kinds_are_known_fault_kinds() -> None:
    assert {"not_found", "unreadable_response"} <= FAULT_KINDS


@pytest.mark.parametrize("flag", ["--not-found-rate", "--unreadable-response-rate"])
def test_the_emulator_command_has_a_rate_flag_for_each_new_kind(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--help"])

    assert exited.value.code == 0
    assert flag in capsys.readouterr().out
