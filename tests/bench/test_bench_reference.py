"""The reference consumer does the worker's calls for real: moto's server and the emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiobotocore.session import AioSession

from bench import corpus
from bench.reference import ReferenceConsumer, Targets, model_config
from devstack.emulator import EmulatorConfig, RunningEmulator, run_emulator
from devstack.moto_stack import LocalResources, take_messages
from worker.adapters.aws import AwsClients

MESSAGES = 30  # three of them unsafe


@pytest.fixture
async def consumer(
    aws_clients: AwsClients,
    local_resources: LocalResources,
    emulator: RunningEmulator,
    aws_session: AioSession,
) -> AsyncIterator[ReferenceConsumer]:
    targets = Targets(
        local_resources.queue_url,
        local_resources.safe_topic_arn,
        local_resources.unsafe_topic_arn,
        "guard",
    )
    async with aws_session.create_client("sagemaker-runtime", endpoint_url=emulator.url) as model:
        yield ReferenceConsumer(targets, aws_clients.sqs, aws_clients.sns, model, messages=MESSAGES)


async def _fill(aws_clients: AwsClients, resources: LocalResources) -> None:
    for start in range(0, MESSAGES, 10):
        await aws_clients.sqs.send_message_batch(
            QueueUrl=resources.queue_url,
            Entries=[
                {"Id": str(n), "MessageBody": body}
                for n, body in enumerate(corpus.bodies(MESSAGES, prefix="ref")[start : start + 10])
            ],
        )


def _verdict_ids(messages: list[dict[str, object]]) -> set[str]:
    """The distinct verdict ids among subscriber-queue messages (raw or in an SNS envelope)."""
    ids: set[str] = set()
    for message in messages:
        body = json.loads(str(message["Body"]))
        verdict = json.loads(body["Message"]) if "Message" in body else body
        ids.add(str(verdict["id"]))
    return ids


async def _read_all(aws_clients: AwsClients, queue_url: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for _ in range(MESSAGES):  # bounded: at least one message per batch until it is empty
        batch = await take_messages(aws_clients.sqs, queue_url)
        if not batch:
            break
        found.extend(dict(message) for message in batch)
    return found


async def test_every_message_is_published_to_its_topic_and_deleted(
    consumer: ReferenceConsumer, aws_clients: AwsClients, local_resources: LocalResources
) -> None:
    await _fill(aws_clients, local_resources)

    await asyncio.wait_for(consumer.run(loops=2), timeout=30)

    safe = await _read_all(aws_clients, local_resources.safe_subscriber_queue_url)
    unsafe = await _read_all(aws_clients, local_resources.unsafe_subscriber_queue_url)
    left = await aws_clients.sqs.get_queue_attributes(
        QueueUrl=local_resources.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    # moto's server, like SQS, may hand a message out twice (at-least-once): count distinct ids.
    assert consumer.settled >= MESSAGES
    assert (len(_verdict_ids(safe)), len(_verdict_ids(unsafe))) == (27, 3)
    assert set(left["Attributes"].values()) == {"0"}


async def test_a_verdict_carries_the_four_attributes_subscribers_filter_on(
    consumer: ReferenceConsumer, aws_clients: AwsClients, local_resources: LocalResources
) -> None:
    await _fill(aws_clients, local_resources)

    await asyncio.wait_for(consumer.run(loops=1), timeout=30)

    (first, *_) = await _read_all(aws_clients, local_resources.unsafe_subscriber_queue_url)
    attributes = first["MessageAttributes"]
    assert isinstance(attributes, dict)
    assert set(attributes) == {"verdict", "categories", "score", "prompt_format"}
    assert attributes["verdict"]["StringValue"] == "unsafe"
    assert json.loads(attributes["categories"]["StringValue"]) in (["O1"], ["O3"], ["O4"], ["O5"])
    assert 0.5 < float(attributes["score"]["StringValue"]) <= 1.0


async def test_the_oracle_keeps_its_calls_in_flight_at_the_capacity_and_resends_a_throttled_one(
    aws_clients: AwsClients, local_resources: LocalResources, aws_session: AioSession
) -> None:
    targets = Targets(
        local_resources.queue_url,
        local_resources.safe_topic_arn,
        local_resources.unsafe_topic_arn,
        "guard",
    )
    await _fill(aws_clients, local_resources)
    # Calls last long enough to overlap, so more than two at once would show.
    async with (
        run_emulator(EmulatorConfig(latency_ms=20)) as emulator,
        aws_session.create_client(
            "sagemaker-runtime", endpoint_url=emulator.url, config=model_config(2)
        ) as model,
    ):
        emulator.faults.fail_next.append("throttle")
        oracle = ReferenceConsumer(
            targets, aws_clients.sqs, aws_clients.sns, model, messages=MESSAGES, in_flight=2
        )
        # Three loops want up to 30 calls at once; the oracle lets two of them out.
        await asyncio.wait_for(oracle.run(loops=3), timeout=30)

    safe = await _read_all(aws_clients, local_resources.safe_subscriber_queue_url)
    unsafe = await _read_all(aws_clients, local_resources.unsafe_subscriber_queue_url)
    assert emulator.stats.max_in_flight == 2
    assert emulator.stats.by_outcome["throttled"] == 1
    assert (len(_verdict_ids(safe)), len(_verdict_ids(unsafe))) == (27, 3)
