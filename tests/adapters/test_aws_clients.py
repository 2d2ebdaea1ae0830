"""Opening the AWS clients: once per process, configured for long polls and our own retries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from worker.adapters.aws import (
    QUEUE_MAX_ATTEMPTS,
    QUEUES_ONLY,
    SAGEMAKER_ONLY,
    SQS_ONLY,
    open_aws_clients,
)

if TYPE_CHECKING:
    from aiobotocore.client import AioBaseClient
    from aiobotocore.session import AioSession


def option(client: AioBaseClient, name: str) -> Any:
    """A botocore Config option as the client sees it (options are not declared in the stubs)."""
    return vars(client.meta.config)[name]


async def test_clients_reach_the_endpoint_named_by_aws_endpoint_url(
    moto: str, aws_session: AioSession
) -> None:
    async with open_aws_clients(services=QUEUES_ONLY, session=aws_session) as clients:
        await clients.sqs.create_queue(QueueName="reachable")
        response = await clients.sqs.list_queues()

    assert response["QueueUrls"] == [f"{moto}/123456789012/reachable"]


async def test_a_service_that_was_not_opened_cannot_be_used(aws_session: AioSession) -> None:
    async with open_aws_clients(services=SQS_ONLY, session=aws_session) as clients:
        with pytest.raises(RuntimeError, match="sns"):
            _ = clients.sns


async def test_queue_clients_wait_longer_than_a_long_poll_but_not_botocores_minute(
    aws_session: AioSession,
) -> None:
    async with open_aws_clients(services=QUEUES_ONLY, session=aws_session) as clients:
        read_timeouts = [option(clients.sqs, "read_timeout"), option(clients.sns, "read_timeout")]

    # Past the 20 s long poll, but a silent connection is given up well before botocore's 60 s.
    assert all(timeout is not None and 20 < timeout <= 30 for timeout in read_timeouts)


async def test_queue_clients_make_at_most_three_attempts(aws_session: AioSession) -> None:
    async with open_aws_clients(services=QUEUES_ONLY, session=aws_session) as clients:
        retries = option(clients.sqs, "retries")

    assert retries == {"mode": "standard", "total_max_attempts": QUEUE_MAX_ATTEMPTS}


async def test_sagemaker_client_waits_past_the_sixty_second_container_limit(
    aws_session: AioSession,
) -> None:
    async with open_aws_clients(services=SAGEMAKER_ONLY, session=aws_session) as clients:
        read_timeout = option(clients.sagemaker_runtime, "read_timeout")

    assert read_timeout == 70.0


async def test_pool_size_is_applied_to_every_client(aws_session: AioSession) -> None:
    async with open_aws_clients(max_pool_connections=7, session=aws_session) as clients:
        pools = {
            option(clients.sqs, "max_pool_connections"),
            option(clients.sns, "max_pool_connections"),
            option(clients.sagemaker_runtime, "max_pool_connections"),
        }

    assert pools == {7}


async def test_every_client_gives_up_connecting_after_five_seconds(aws_session: AioSession) -> None:
    """Not botocore's 60 s: an unreachable endpoint is retried by our loop, not waited on."""
    async with open_aws_clients(session=aws_session) as clients:
        timeouts = {
            option(clients.sqs, "connect_timeout"),
            option(clients.sns, "connect_timeout"),
            option(clients.sagemaker_runtime, "connect_timeout"),
        }

    assert timeouts == {5.0}


async def test_queue_clients_skip_client_side_parameter_validation(
    moto: str, aws_session: AioSession
) -> None:
    """A wrongly typed value reaches SQS, which refuses it: botocore does not check it first.

    The adapters build every request from typed values and SQS and SNS validate them anyway;
    walking the service model on every call cost CPU. (``meta.config`` still says True: botocore
    reads the option when it builds the client.)
    """
    async with open_aws_clients(services=QUEUES_ONLY, session=aws_session) as clients:
        queue_url = (await clients.sqs.create_queue(QueueName="unvalidated"))["QueueUrl"]
        with pytest.raises(ClientError):
            await clients.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=123)  # type: ignore[arg-type]
