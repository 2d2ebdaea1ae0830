"""A redeploy of the model endpoint, end to end: "not found" for a while loses no message.

The production worker (``open_worker``) reads a real SQS queue on moto and calls the emulator
through the SageMaker runtime route. While the emulator answers SageMaker's ``400
ValidationError: Endpoint NAME of account N not found.`` every message is released, none is
dead-lettered, and the circuit opens; once the endpoint is back, each message gets one verdict.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY
from support.conditions import wait_until
from worker_harness import (
    RUN_TIMEOUT,
    SAFE_TEXT,
    QueueDepth,
    dead_letters,
    point_model_at,
    published_verdicts,
    queue_depth,
    send_many,
    worker_settings,
)

from devstack.emulator import RunningEmulator
from worker.app import open_worker

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from devstack.moto_stack import LocalResources

MESSAGES = 6
THRESHOLD = 3


def circuit_openings() -> float:
    return REGISTRY.get_sample_value("moderation_endpoint_circuit_openings_total") or 0.0


async def wait_until_drained(sqs: SQSClient, queue_url: str) -> None:
    """Wait until every message was deleted from the source queue (each one was acked)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while await queue_depth(sqs, queue_url) != QueueDepth(visible=0, not_visible=0):
        if time.monotonic() > deadline:
            raise AssertionError(f"messages still on {queue_url} after {RUN_TIMEOUT} s")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_an_endpoint_not_found_for_a_while_delays_messages_but_loses_none(
    sqs_client: SQSClient,
    local_resources: LocalResources,
    emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    point_model_at(monkeypatch, emulator.url)
    emulator.faults.not_found_rate = 1.0
    ids = [f"redeploy-{index}" for index in range(MESSAGES)]
    await send_many(
        sqs_client, local_resources.queue_url, [{"id": id_, "content": SAFE_TEXT} for id_ in ids]
    )
    settings = worker_settings(
        local_resources,
        max_in_flight=2,
        circuit_failure_threshold=THRESHOLD,
        circuit_probe_interval=0.2,
        receive_wait_seconds=1,
    )
    openings_before = circuit_openings()
    stop = asyncio.Event()

    async with open_worker(settings) as worker:
        running = asyncio.create_task(worker.runner.run(stop))
        await wait_until(lambda: circuit_openings() > openings_before)
        rejected_while_down = emulator.stats.by_outcome["endpoint_not_found"]
        dead_while_down = await dead_letters(sqs_client, local_resources)
        emulator.faults.not_found_rate = 0.0
        await wait_until_drained(sqs_client, local_resources.queue_url)
        stop.set()
        stats = await asyncio.wait_for(running, RUN_TIMEOUT)

    assert rejected_while_down >= THRESHOLD
    assert dead_while_down == []
    assert stats.dead_lettered == 0
    assert stats.retried >= THRESHOLD
    verdicts = await published_verdicts(sqs_client, local_resources)
    assert sorted(delivered.document["id"] for delivered in verdicts.all) == sorted(ids)
    assert await dead_letters(sqs_client, local_resources) == []
