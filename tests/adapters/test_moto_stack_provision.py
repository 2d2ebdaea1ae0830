"""Provisioning the local stack on moto, and the environment that points the worker at it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from devstack.moto_stack import LocalResources, provision
from worker.settings import load_settings

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

RESOURCES = LocalResources(
    queue_url="http://127.0.0.1:5000/123456789012/moderation-requests",
    safe_topic_arn="arn:aws:sns:us-east-1:123456789012:moderation-safe",
    unsafe_topic_arn="arn:aws:sns:us-east-1:123456789012:moderation-unsafe",
    safe_subscriber_queue_url="http://127.0.0.1:5000/123456789012/moderation-safe-verdicts",
    unsafe_subscriber_queue_url="http://127.0.0.1:5000/123456789012/moderation-unsafe-verdicts",
    dead_letter_queue_url="http://127.0.0.1:5000/123456789012/moderation-dead-letter",
)


def test_environment_names_every_resource_the_worker_needs() -> None:
    assert RESOURCES.environment() == {
        "MODERATION_QUEUE_URL": RESOURCES.queue_url,
        "MODERATION_SAFE_TOPIC_ARN": RESOURCES.safe_topic_arn,
        "MODERATION_UNSAFE_TOPIC_ARN": RESOURCES.unsafe_topic_arn,
        "MODERATION_DEAD_LETTER_QUEUE_URL": RESOURCES.dead_letter_queue_url,
    }


def test_environment_leaves_out_the_dead_letter_queue_when_there_is_none() -> None:
    resources = LocalResources(
        queue_url=RESOURCES.queue_url,
        safe_topic_arn=RESOURCES.safe_topic_arn,
        unsafe_topic_arn=RESOURCES.unsafe_topic_arn,
        safe_subscriber_queue_url=RESOURCES.safe_subscriber_queue_url,
        unsafe_subscriber_queue_url=RESOURCES.unsafe_subscriber_queue_url,
    )

    assert "MODERATION_DEAD_LETTER_QUEUE_URL" not in resources.environment()


async def test_provisioned_environment_is_accepted_by_the_worker_settings(
    local_resources: LocalResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in local_resources.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODERATION_BACKEND", "tgi")
    monkeypatch.setenv("MODERATION_TGI_URL", "http://127.0.0.1:8080")

    settings = load_settings()

    assert settings.dead_letter_queue_url == local_resources.dead_letter_queue_url


async def test_fifo_resources_are_all_fifo(fifo_resources: LocalResources) -> None:
    names = [
        fifo_resources.queue_url,
        fifo_resources.dead_letter_queue_url or "",
        fifo_resources.safe_topic_arn,
        fifo_resources.unsafe_topic_arn,
        fifo_resources.safe_subscriber_queue_url,
        fifo_resources.unsafe_subscriber_queue_url,
    ]

    assert all(name.endswith(".fifo") for name in names)


async def test_source_queue_redrives_to_the_dead_letter_queue(
    sqs_client: SQSClient, sns_client: SNSClient
) -> None:
    resources = await provision(sqs_client, sns_client, redrive_max_receive_count=1)
    assert resources.dead_letter_queue_url is not None
    await sqs_client.send_message(QueueUrl=resources.queue_url, MessageBody="poison")

    for _ in range(2):  # the second receive exceeds maxReceiveCount=1
        await sqs_client.receive_message(QueueUrl=resources.queue_url, VisibilityTimeout=0)

    moved = await sqs_client.receive_message(QueueUrl=resources.dead_letter_queue_url)
    assert [m.get("Body") for m in moved.get("Messages", [])] == ["poison"]


async def test_without_dead_letter_queue_the_source_has_no_redrive_policy(
    sqs_client: SQSClient, sns_client: SNSClient
) -> None:
    resources = await provision(sqs_client, sns_client, prefix="plain", with_dlq=False)

    attributes = await sqs_client.get_queue_attributes(
        QueueUrl=resources.queue_url, AttributeNames=["All"]
    )

    assert resources.dead_letter_queue_url is None
    assert "RedrivePolicy" not in attributes["Attributes"]


async def test_provisioning_twice_returns_the_same_resources(
    sqs_client: SQSClient, sns_client: SNSClient, local_resources: LocalResources
) -> None:
    again = await provision(sqs_client, sns_client, visibility_timeout=30)

    assert again == local_resources
