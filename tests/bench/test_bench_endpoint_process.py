"""The bench's endpoint runs in a process of its own with the endpoint model it was given."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bench.processes import endpoint_server, localstack_environment
from devstack.emulator import EmulatorConfig
from worker.core.models import Turn
from worker.core.prompt import DEFAULT_PARAMETERS, build_request_body, render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy

_FORMAT = PromptFormat.LLAMA_GUARD_1
_PROMPT = render_prompt([Turn("user", "hello")], _FORMAT, default_taxonomy(_FORMAT)).text
BODY = build_request_body(_PROMPT, DEFAULT_PARAMETERS)


async def test_the_endpoint_process_serves_with_its_capacity_and_queue() -> None:
    config = EmulatorConfig(latency_ms=100.0, capacity=1, queue_size=1)
    with endpoint_server(config) as url:
        async with aiohttp.ClientSession() as http:

            async def invoke() -> int:
                async with http.post(f"{url}/endpoints/guard/invocations", json=BODY) as answer:
                    return answer.status

            statuses = await asyncio.gather(*(invoke() for _ in range(3)))
            async with http.get(f"{url}/emulator/stats") as response:
                stats = await response.json()

    # One served, one queued and served, one throttled: the queueing model with a queue of 1.
    assert sorted(statuses) == [200, 200, 400]
    assert stats["queued"] == 1


def test_localstack_is_configured_for_a_host_process_on_loopback_only(tmp_path: Path) -> None:
    environment = localstack_environment(4566, tmp_path)

    assert environment["SERVICES"] == "sqs,sns"
    assert environment["GATEWAY_LISTEN"] == "127.0.0.1:4566"
    assert environment["SQS_ENDPOINT_STRATEGY"] == "path"
