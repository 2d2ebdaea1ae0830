"""The fault proxy: faithful forwarding, and AWS-shaped failures of exactly the chosen operations.

Each test runs a proxy in front of the session's moto server (``moto`` resets it) and talks to it
with SQS and SNS clients configured like the worker's (three attempts, botocore standard mode).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError, ConnectionClosedError

from devstack.chaos.proxy import (
    InjectedFault,
    ProxyFaultKind,
    ProxyFaultPlan,
    RunningProxy,
    run_fault_proxy,
)
from devstack.chaos.scenario import harness_clients
from devstack.moto_stack import LocalResources, provision
from worker.adapters.aws import QUEUE_MAX_ATTEMPTS

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

AWS_ERRORS: dict[ProxyFaultKind, tuple[int, str]] = {
    "internal_error": (500, "InternalError"),
    "service_unavailable": (503, "ServiceUnavailable"),
}
UNICODE_BODY = '{"id": "ü-1", "content": "naïve café ✓ \\u2028 <&>"}'


@pytest.fixture
async def proxy(moto: str) -> AsyncIterator[RunningProxy]:
    async with run_fault_proxy(moto, seed=1) as running:
        yield running


@pytest.fixture
async def through_proxy(
    proxy: RunningProxy, aws_session: AioSession
) -> AsyncIterator[tuple[SQSClient, SNSClient]]:
    async with harness_clients(aws_session, proxy.url) as clients:
        yield clients


@pytest.fixture
async def direct(moto: str, aws_session: AioSession) -> AsyncIterator[tuple[SQSClient, SNSClient]]:
    async with harness_clients(aws_session, moto) as clients:
        yield clients


@pytest.fixture
async def resources(through_proxy: tuple[SQSClient, SNSClient]) -> LocalResources:
    sqs, sns = through_proxy
    return await provision(sqs, sns, prefix="proxy-test")


async def test_forwards_requests_and_answers_unchanged(
    proxy: RunningProxy,
    through_proxy: tuple[SQSClient, SNSClient],
    direct: tuple[SQSClient, SNSClient],
    resources: LocalResources,
) -> None:
    """Bodies, attributes and URLs survive the hop both ways; moto names the proxy in URLs."""
    sqs, sns = through_proxy
    await sqs.send_message(
        QueueUrl=resources.queue_url,
        MessageBody=UNICODE_BODY,
        MessageAttributes={"tenant": {"DataType": "String", "StringValue": "äcme"}},
    )
    await sns.publish(TopicArn=resources.safe_topic_arn, Message=UNICODE_BODY)

    received = await sqs.receive_message(
        QueueUrl=resources.queue_url, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    published = await direct[0].receive_message(
        QueueUrl=resources.safe_subscriber_queue_url, WaitTimeSeconds=1
    )

    assert resources.queue_url.startswith(proxy.url + "/")
    (message,) = received["Messages"]
    assert message["Body"] == UNICODE_BODY
    assert message["MessageAttributes"]["tenant"]["StringValue"] == "äcme"
    assert published["Messages"][0]["Body"] == UNICODE_BODY
    assert not proxy.stats.injected


@pytest.mark.parametrize("kind", sorted(AWS_ERRORS))
async def test_fails_the_chosen_sqs_and_sns_batch_calls_at_rate_one(
    proxy: RunningProxy,
    through_proxy: tuple[SQSClient, SNSClient],
    resources: LocalResources,
    kind: ProxyFaultKind,
) -> None:
    """Every attempt fails with the AWS error in each protocol's shape; other calls go through."""
    status, code = AWS_ERRORS[kind]
    sqs, sns = through_proxy
    proxy.plan.update(rates={"PublishBatch": 1.0, "DeleteMessageBatch": 1.0}, kinds=[kind])
    await sqs.send_message(QueueUrl=resources.queue_url, MessageBody="kept")
    (message,) = (await sqs.receive_message(QueueUrl=resources.queue_url))["Messages"]

    with pytest.raises(ClientError) as publish_error:
        await sns.publish_batch(
            TopicArn=resources.safe_topic_arn,
            PublishBatchRequestEntries=[{"Id": "0", "Message": "lost"}],
        )
    with pytest.raises(ClientError) as delete_error:
        await sqs.delete_message_batch(
            QueueUrl=resources.queue_url,
            Entries=[{"Id": "0", "ReceiptHandle": message["ReceiptHandle"]}],
        )

    for error in (publish_error.value, delete_error.value):
        assert error.response["Error"]["Code"] == code
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert proxy.stats.requests["PublishBatch"] == QUEUE_MAX_ATTEMPTS
    assert proxy.stats.exhausted == {"PublishBatch": 1, "DeleteMessageBatch": 1}
    assert proxy.stats.requests["SendMessage"] == 1
    assert proxy.stats.injected.keys() == {"PublishBatch", "DeleteMessageBatch"}


async def test_a_dropped_response_was_applied_though_the_caller_saw_it_fail(
    proxy: RunningProxy,
    through_proxy: tuple[SQSClient, SNSClient],
    direct: tuple[SQSClient, SNSClient],
    resources: LocalResources,
) -> None:
    """drop_response forwards, then cuts the connection: each retry publishes once more."""
    _, sns = through_proxy
    proxy.plan.update(rates={"Publish": 1.0}, kinds=["drop_response"])

    with pytest.raises(ConnectionClosedError):
        await sns.publish(TopicArn=resources.safe_topic_arn, Message="applied")

    copies = await direct[0].receive_message(
        QueueUrl=resources.safe_subscriber_queue_url, MaxNumberOfMessages=10
    )
    assert [copy["Body"] for copy in copies["Messages"]] == ["applied"] * QUEUE_MAX_ATTEMPTS
    assert proxy.stats.dropped_answers(["Publish"]) == QUEUE_MAX_ATTEMPTS
    assert proxy.stats.dropped_answers(["PublishBatch", "DeleteMessageBatch"]) == 0


def test_fault_draws_are_repeatable_for_a_seed() -> None:
    """The same seed meets the same faults in the same order; unlisted operations never fail."""
    plan = ProxyFaultPlan(rates={"Publish": 0.5}, kinds=("internal_error", "drop_request"))

    def draws(seed: int) -> list[InjectedFault | None]:
        rng = random.Random(seed)  # noqa: S311 - the proxy's own kind of generator
        return [plan.draw(operation, rng) for operation in ["Publish", "SendMessage"] * 50]

    first = draws(3)
    assert first == draws(3)
    assert first[1::2] == [None] * 50
    assert {None, "internal_error", "drop_request"} == set(first[::2])
