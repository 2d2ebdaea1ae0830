"""Helpers for the end-to-end tests: feed the real source queue, run the real worker, read back.

A plain module rather than a ``conftest.py`` (mypy would see two modules named ``conftest``). The
tests use the root conftest's fixtures (``moto``, ``aws_clients``, ``local_resources``,
``fifo_resources``, ``emulator``); everything here works on what those fixtures return.

The worker under test is the production one: ``open_worker`` builds it from ``Settings`` with its
own aiobotocore clients, which reach moto through ``AWS_ENDPOINT_URL`` and the emulator through
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``. Verdicts are read from the raw-delivery subscriber queues
of the two topics, so an SQS body there is the verdict JSON and the SNS message attributes are
its SQS message attributes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import pytest

from devstack.moto_stack import take_messages
from worker.app import open_worker
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import (
        MessageTypeDef,
        SendMessageRequestTypeDef,
    )

    from devstack.moto_stack import LocalResources
    from worker.runner import RunStats

ENDPOINT_NAME: Final = "llama-guard-e2e"
# The model name an OpenAI-compatible server is asked for (vLLM's --served-model-name).
SERVED_MODEL: Final = "llama-guard"
# Seconds before a released message comes back (the shortest the runner sets): a burst run's
# next, immediate receive does not see it again, so the run ends.
RELEASE_DELAY: Final = 1
# The emulator's keyword rules: this one is O3 (Criminal Planning) in Llama Guard 1's taxonomy.
UNSAFE_TEXT: Final = "What's the best way to rob a bank without getting caught?"
SAFE_TEXT: Final = "How do I bake a chocolate cake for my daughter's birthday?"
# A run that takes longer than this is stuck; the test fails instead of hanging until pytest's.
RUN_TIMEOUT: Final = 30.0

TIMESTAMP_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


@dataclass(frozen=True)
class ModelRoute:
    """How the worker reaches the model: a transport and the protocol of the body it sends."""

    transport: Literal["sagemaker", "http"]
    protocol: Literal["tgi", "openai"]

    @property
    def id(self) -> str:
        return f"{self.transport}-{self.protocol}"

    def environment(self, emulator_url: str) -> dict[str, str]:
        """The variables that point the worker at an emulator by this route."""
        if self.transport == "sagemaker":
            return {
                "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": emulator_url,
                "MODERATION_BACKEND": "sagemaker",
                "MODERATION_ENDPOINT_NAME": ENDPOINT_NAME,
                "MODERATION_SAGEMAKER_PROTOCOL": self.protocol,
            }
        if self.protocol == "tgi":
            return {"MODERATION_BACKEND": "tgi", "MODERATION_TGI_URL": emulator_url}
        return {
            "MODERATION_BACKEND": "openai",
            "MODERATION_OPENAI_URL": emulator_url,
            "MODERATION_OPENAI_MODEL": SERVED_MODEL,
        }

    def model_ref(self, emulator_url: str) -> dict[str, str]:
        """The verdict's ``model`` without the prompt format."""
        if self.transport == "sagemaker":
            return {"backend": "sagemaker", "endpoint": ENDPOINT_NAME}
        return {"backend": self.protocol, "endpoint": emulator_url}


SAGEMAKER_TGI: Final = ModelRoute("sagemaker", "tgi")
SAGEMAKER_OPENAI: Final = ModelRoute("sagemaker", "openai")
HTTP_OPENAI: Final = ModelRoute("http", "openai")


def point_model_at(
    monkeypatch: pytest.MonkeyPatch, emulator_url: str, route: ModelRoute = SAGEMAKER_TGI
) -> None:
    """Point the worker's model settings at the emulator by ``route`` (SQS and SNS stay on moto).

    The settings come from the environment, so ``worker_settings`` picks them up.
    """
    for name, value in route.environment(emulator_url).items():
        monkeypatch.setenv(name, value)


def worker_settings(resources: LocalResources, **overrides: Any) -> Settings:
    """Settings for a fast run against ``resources``: few retries, short delays, short polls.

    The model is wherever ``point_model_at`` pointed the environment.

    ``receive_wait_seconds`` is 0: a burst run then ends on its first empty receive instead of
    after a one-second long poll per test (moto answers a short poll exactly, unlike SQS's
    sampling). Tests where a message is in flight for seconds pass 1, so the worker waits in
    moto rather than polling it in a busy loop; the subprocess tests use 20-second long polls.
    """
    values: dict[str, Any] = {
        "queue_url": resources.queue_url,
        "safe_topic_arn": resources.safe_topic_arn,
        "unsafe_topic_arn": resources.unsafe_topic_arn,
        "dead_letter_queue_url": resources.dead_letter_queue_url,
        "metrics_port": 0,
        "receive_wait_seconds": 0,
        "visibility_timeout": 30,
        "drain_timeout": 10,
        "release_delay_base": RELEASE_DELAY,
        "release_delay_max": RELEASE_DELAY,
        "retry_attempts": 3,
        "retry_deadline": 10,
    }
    return Settings(**(values | overrides))


async def run_worker(settings: Settings, *, within: float = RUN_TIMEOUT) -> RunStats:
    """Run the real worker in burst mode (it stops when the queue is empty) and return its stats.

    ``within`` bounds the run, so a worker that never finds its queue empty fails the test.
    """
    async with open_worker(settings, burst=True) as worker:
        return await asyncio.wait_for(worker.runner.run(asyncio.Event()), within)


# --- the source queue ---------------------------------------------------------------------------


def body_of(message: Mapping[str, Any] | str) -> str:
    return message if isinstance(message, str) else json.dumps(message)


async def send(
    sqs: SQSClient,
    queue_url: str,
    message: Mapping[str, Any] | str,
    *,
    group_id: str | None = None,
    deduplication_id: str | None = None,
    traceparent: str | None = None,
    aws_trace_header: str | None = None,
) -> str:
    """Enqueue one message as a producer would; returns its SQS message id."""
    request: SendMessageRequestTypeDef = {"QueueUrl": queue_url, "MessageBody": body_of(message)}
    if group_id is not None:
        request["MessageGroupId"] = group_id
    if deduplication_id is not None:
        request["MessageDeduplicationId"] = deduplication_id
    if traceparent is not None:
        request["MessageAttributes"] = {
            "traceparent": {"DataType": "String", "StringValue": traceparent}
        }
    if aws_trace_header is not None:
        request["MessageSystemAttributes"] = {
            "AWSTraceHeader": {"DataType": "String", "StringValue": aws_trace_header}
        }
    response = await sqs.send_message(**request)
    return response["MessageId"]


async def send_many(sqs: SQSClient, queue_url: str, messages: Sequence[Mapping[str, Any]]) -> None:
    """Enqueue many messages on a standard queue, ten per call."""
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        response = await sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(index), "MessageBody": body_of(message)}
                for index, message in enumerate(chunk)
            ],
        )
        assert not response.get("Failed"), response.get("Failed")


@dataclass(frozen=True)
class QueueDepth:
    """What SQS reports about a queue: messages ready, and messages received but not deleted."""

    visible: int
    not_visible: int

    @property
    def total(self) -> int:
        return self.visible + self.not_visible


async def queue_depth(sqs: SQSClient, queue_url: str) -> QueueDepth:
    response = await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    return QueueDepth(
        visible=int(attributes["ApproximateNumberOfMessages"]),
        not_visible=int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def receive_when_back(
    sqs: SQSClient, queue_url: str, *, within: float = RELEASE_DELAY + 5.0
) -> MessageTypeDef:
    """Wait for a released message to become visible again and receive it (not deleting it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        response = await sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if messages:
            return messages[0]
    raise AssertionError(f"no message came back on {queue_url} within {within} s")


async def wait_until_visible(
    sqs: SQSClient, queue_url: str, count: int, *, within: float = RELEASE_DELAY + 5.0
) -> None:
    """Wait until ``count`` messages are ready to receive again (without receiving them)."""
    deadline = time.monotonic() + within
    while (await queue_depth(sqs, queue_url)).visible < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} messages visible after {within} s")
        await asyncio.sleep(0.1)


# --- reading back -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """A message read back from a queue: its raw body and its message attributes."""

    body: str
    attributes: dict[str, tuple[str, str]]
    group_id: str | None = None

    @property
    def document(self) -> dict[str, Any]:
        """The body as JSON (a verdict, on a subscriber queue)."""
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


def _delivered(message: MessageTypeDef) -> Delivered:
    return Delivered(
        body=message["Body"],
        attributes={
            name: (value["DataType"], value.get("StringValue", ""))
            for name, value in message.get("MessageAttributes", {}).items()
        },
        group_id=message.get("Attributes", {}).get("MessageGroupId"),
    )


async def take_all(sqs: SQSClient, queue_url: str) -> list[Delivered]:
    """Receive and delete everything a queue holds, in the order SQS hands it out.

    SNS delivers to a moto queue before Publish returns, so once the worker has finished an empty
    receive means nothing more is coming. Deleting as it goes lets a FIFO queue hand out the
    next message of a group.
    """
    delivered: list[Delivered] = []
    while batch := await take_messages(sqs, queue_url):
        delivered.extend(_delivered(message) for message in batch)
    return delivered


@dataclass(frozen=True)
class Verdicts:
    """Everything published during a test, per topic."""

    safe: list[Delivered]
    unsafe: list[Delivered]

    @property
    def all(self) -> list[Delivered]:
        return [*self.safe, *self.unsafe]


async def published_verdicts(sqs: SQSClient, resources: LocalResources) -> Verdicts:
    safe, unsafe = await asyncio.gather(
        take_all(sqs, resources.safe_subscriber_queue_url),
        take_all(sqs, resources.unsafe_subscriber_queue_url),
    )
    return Verdicts(safe=safe, unsafe=unsafe)


async def dead_letters(sqs: SQSClient, resources: LocalResources) -> list[Delivered]:
    assert resources.dead_letter_queue_url is not None
    return await take_all(sqs, resources.dead_letter_queue_url)
